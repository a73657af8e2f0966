"""The sweep report: one ``report.md`` per sweep with the PLW table, the figures and the dataset's Rg."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .analysis import Run, load_run, run_row, sort_runs
from .runio import atomic_write_text


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def find_runs(sweep_dir: str | Path) -> list[Run]:
    """Every run folder (one with ``metrics.jsonl``) directly inside ``sweep_dir``, ordered by PLW."""
    sweep_dir = Path(sweep_dir)
    runs = [load_run(p) for p in sorted(sweep_dir.iterdir()) if (p / "metrics.jsonl").exists()]
    return sort_runs(runs)


def rg_section(runs: list[Run]) -> list[str]:
    """The training data's generation ratio, from the first run's data report (all runs share the data)."""
    for run in runs:
        rg = (run.data_report.get("train") or {}).get("rg")
        if rg:
            return [
                "## The data's generation ratio",
                "",
                f"Training rows as encoded ({rg['rows']} rows, tokens with the run's tokenizer and template): "
                f"prompt {rg['prompt_tokens_mean']:.1f} tokens on average, completion {rg['completion_tokens_mean']:.1f}; "
                f"Rg arithmetic mean {rg['rg_mean']:.4f}, geometric mean {rg['rg_geomean']:.4f}, median "
                f"{rg['rg_median']:.4f} (p5 {rg['rg_p5']:.4f}, p95 {rg['rg_p95']:.4f}); "
                f"{100 * rg['rg_lt1_share']:.1f}% of rows have Rg < 1.",
                "",
            ]
    return []


def render_report(runs: list[Run], figures: dict[str, str], command: str | None = None) -> str:
    """The markdown text of a sweep report (figure paths relative to the report)."""
    rows = [run_row(r) for r in runs]
    acc = next((r["accuracy_metric"] for r in rows if r["accuracy_metric"]), None)
    acc_name = acc.removeprefix("eval_") if acc else "accuracy"
    name = runs[0].path.parent.name if runs else "sweep"
    lines = [f"# PLW sweep: {name}", ""]
    if command:
        lines += ["Reproduce with:", "", "```", command, "```", ""]
    lines += [
        f"Accuracy below is `{acc_name}`. Epochs are fractional (evaluations inside an epoch). "
        '"Usual practice" stops at the minimum of the full-sequence validation loss; the completion-loss rule '
        "stops at the minimum of the completion loss.",
        "",
        "| PLW | min completion loss | at epoch | accuracy there | min full loss at epoch | accuracy there "
        "(usual practice) | best accuracy | at epoch | epochs to within 1 pt | accuracy at start |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {_num(r['min_completion_loss'])} | {_num(r['min_completion_loss_epoch'], 2)} | "
            f"{_pct(r['acc_at_min_completion_loss'])} | {_num(r['min_full_loss_epoch'], 2)} | "
            f"{_pct(r['acc_at_min_full_loss'])} | {_pct(r['best_accuracy'])} | {_num(r['best_accuracy_epoch'], 2)} | "
            f"{_num(r['epochs_to_within_1pt'], 2)} | {_pct(r['initial_accuracy'])} |"
        )
    lines.append("")
    lines += rg_section(runs)
    lines += ["## Figures", ""]
    for title, rel in figures.items():
        lines += [f"### {title}", "", f"![{title}]({rel})", ""]
    return "\n".join(lines)


def write_sweep_outputs(sweep_dir: str | Path, command: str | None = None) -> Path:
    """Draw the sweep figures and each run's figure, then write ``report.md``; return the report's path."""
    from .plots import plot_run, plot_sweep_best, plot_sweep_curves

    sweep_dir = Path(sweep_dir)
    if command is None and (sweep_dir / "sweep.json").exists():
        command = json.loads((sweep_dir / "sweep.json").read_text()).get("command")
    runs = find_runs(sweep_dir)
    if not runs:
        raise FileNotFoundError(f"no run folders with metrics.jsonl in {sweep_dir}")
    figures = {
        "Completion loss and accuracy by PLW": "plots/sweep_curves.png",
        "Best accuracy and epoch reached, by PLW": "plots/sweep_best.png",
    }
    plot_sweep_curves(runs, sweep_dir / figures["Completion loss and accuracy by PLW"])
    plot_sweep_best([run_row(r) for r in runs], sweep_dir / figures["Best accuracy and epoch reached, by PLW"])
    for run in runs:
        rel = f"{run.path.name}/plots/losses.png"
        plot_run(run, sweep_dir / rel)
        figures[f"{run.label}: losses and accuracy"] = rel
    report = sweep_dir / "report.md"
    atomic_write_text(report, render_report(runs, figures, command))
    return report
