"""``plw plot``: redraw the figures of finished run folders and sweep folders from their files.

Nothing is trained or evaluated: a run folder's ``metrics.jsonl`` gives ``plots/losses.png``; a sweep folder (one
run folder per PLW) gets its comparison figures and ``report.md`` again (:func:`plw.report.write_sweep_outputs`).
"""

from __future__ import annotations

from pathlib import Path


def plot_paths(paths: list[str]) -> list[Path]:
    """Redraw the figures of each run folder or sweep folder in ``paths``; return the files written."""
    from .analysis import load_run
    from .plots import plot_run
    from .report import find_runs, write_sweep_outputs

    written: list[Path] = []
    for p in map(Path, paths):
        if (p / "metrics.jsonl").exists():
            written.append(plot_run(load_run(p), p / "plots" / "losses.png"))
        elif p.is_dir() and find_runs(p):
            written.append(write_sweep_outputs(p))
        else:
            raise FileNotFoundError(f"{p}: neither a run folder (metrics.jsonl) nor a sweep folder of runs")
    return written
