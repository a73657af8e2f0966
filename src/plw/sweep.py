"""PLW sweeps: the same training at several prompt-loss-weights, then the comparison.

Every value trains on identical data, order, seed and schedule (only ``prompt_loss_weight`` differs) into
``OUTPUT_DIR/NAME/plw=VALUE/``; with ``seeds`` (config or ``--seeds``), every value is repeated once per seed into
``OUTPUT_DIR/NAME/plw=VALUE/seed=S/`` (the seed sets data order, adapter init and dropout; the data stay the same).
A run whose folder says ``finished`` (``state.json``) with the same settings is not trained again, so a sweep that
was stopped can simply be started again; ``sweep.json`` merges the PLWs, seeds and commands of every invocation.
The untrained model is evaluated once per seed for all PLWs (:mod:`plw.evaluate`); the runs train in this process,
as separate processes N at a time (``jobs``, :mod:`plw.launch`) or as submitit jobs (``launcher``,
:mod:`plw.cluster`). A failed run is named in the report while the others finish.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, RunConfig, check_seeds, dump_config
from .runio import atomic_write_json
from .schedule import parse_plw, plw_values

DEFAULT_VALUES = (1.0, 0.1, 0.0)
SWEEP_KEYS = ("plw_values", "seeds", "jobs", "gpus_per_run", "accelerate_config", "launcher", "slurm")
SWEEP_FILE = "sweep.json"


def parse_plw_values(text: str) -> list[float | str]:
    """``"1,0.5,0,1->0:cosine"`` -> ``[1.0, 0.5, 0.0, "1->0:cosine"]``: numbers in [0, 1] or schedules
    (:mod:`plw.schedule`), each once."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ConfigError("--plw: give at least one value, e.g. --plw 1,0.1,0")
    try:
        return plw_values(parts, "--plw", shown=text)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def parse_seeds(text: str) -> list[int]:
    """``"1,2,3"`` -> ``[1, 2, 3]``."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"--seeds: expected integers separated by commas, e.g. --seeds 1,2,3, got {text!r}"
        ) from None
    return check_seeds(values, "--seeds")


def run_configs(config: RunConfig, values: list[Any], seeds: list[int] | None = None) -> list[RunConfig]:
    """One config per value (and seed): same everything, in ``plw=VALUE`` (``plw=VALUE/seed=S``) of the sweep folder.

    Runs are ordered seed by seed (all values for the first seed, then the next), so a sweep stopped early has
    complete comparisons for the seeds it finished.
    """
    sweep_dir = config.run_dir
    schedules = [parse_plw(v) for v in values]
    seeds = seeds if seeds is not None else config.seeds
    # Sweep-level keys go back to their defaults: a run's settings do not depend on how the sweep launched it.
    common = {k: RunConfig.__dataclass_fields__[k].default for k in SWEEP_KEYS}
    if not seeds:
        return [
            dataclasses.replace(
                config, name=f"plw={s.slug()}", output_dir=str(sweep_dir), prompt_loss_weight=s.to_config(), **common
            )
            for s in schedules
        ]
    return [
        dataclasses.replace(
            config,
            name=f"seed={seed}",
            output_dir=str(sweep_dir / f"plw={s.slug()}"),
            prompt_loss_weight=s.to_config(),
            seed=seed,
            **common,
        )
        for seed in seeds
        for s in schedules
    ]


def is_finished(run: RunConfig) -> bool:
    """True when the run folder finished with exactly these settings; a different finished run is an error."""
    from .runner import read_state

    state = read_state(run.run_dir)
    if not state or state.get("status") != "finished":
        return False
    saved = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    if saved != yaml.safe_load(dump_config(run)):
        raise ConfigError(
            f"{run.run_dir} finished with different settings; choose another sweep name or remove that folder"
        )
    return True


def run_sweep(
    config: RunConfig,
    values: list[float] | None = None,
    progress: bool = True,
    command: str | None = None,
    seeds: list[int] | None = None,
    wait: bool = True,
) -> Path | None:
    """Train every run not yet finished, then draw the figures and write ``report.md``; return the report path.

    With ``config.launcher`` ``slurm`` or ``submitit-local`` the runs are submitit jobs (:mod:`plw.cluster`);
    without ``wait`` the function returns None while jobs are still queued or running (the same call later
    collects them and writes the report).

    With ``config.jobs`` > 1 the runs are separate processes, that many at a time (:mod:`plw.launch`). A run that
    fails is named in the report (and in :class:`SweepFailures`, raised after the report is written) while the
    others finish.
    """
    from .distributed import is_main_process, world_size
    from .runner import train_run

    if world_size() > 1 and (config.jobs > 1 or config.launcher != "local"):
        raise ConfigError("jobs / launcher: start the sweep itself without accelerate launch (use --gpus-per-run)")
    values = values or config.plw_values or list(DEFAULT_VALUES)
    seeds = seeds if seeds is not None else config.seeds
    runs = run_configs(config, values, seeds)
    main = is_main_process()
    if main:
        merge_sweep_file(config.run_dir, command, values, seeds)
    todo = []
    for i, run in enumerate(runs, start=1):
        if is_finished(run):
            if main:
                print(f"[plw] sweep {i}/{len(runs)}: {run.run_dir} already finished, skipped")
        else:
            todo.append((i, run))
    failed: dict[str, str] = {}
    # On a cluster the untrained model is not evaluated on the submitting machine: every job evaluates its run.
    untrained = share_untrained(
        config.run_dir, [run for _, run in todo], progress, main and config.launcher == "local"
    )
    if config.launcher != "local":
        from .cluster import run_submitit

        failed, in_flight = run_submitit([run for _, run in todo], config.run_dir, config, untrained, wait=wait)
        if in_flight:
            print(
                f"[plw] sweep: {len(in_flight)} job(s) queued or running; run the same command again to collect them"
            )
            return None
    elif config.jobs > 1 and todo:
        from .launch import run_parallel

        failed = run_parallel(
            [run for _, run in todo],
            config.run_dir,
            config.jobs,
            config.gpus_per_run,
            config.accelerate_config,
            untrained=untrained,
        )
    else:
        for i, run in todo:
            if main:
                print(f"[plw] sweep {i}/{len(runs)}: training {run.run_dir}")
            # An interrupted value continues from its last checkpoint (or starts again when it has none).
            try:
                train_run(run, progress=progress, resume=True, untrained=untrained.get(run.run_dir))
            except Exception as err:  # the others still train; Ctrl-C (KeyboardInterrupt) stops the sweep
                if world_size() > 1 or len(runs) == 1:  # under accelerate every process must stop together
                    raise
                failed[run.run_dir.relative_to(config.run_dir).as_posix()] = f"{type(err).__name__}: {err}"
                print(f"[plw] sweep {i}/{len(runs)}: {run.run_dir} FAILED ({type(err).__name__}: {err})")
    report = config.run_dir / "report.md"
    if main:
        report = write_report(config.run_dir, failed)
    if failed:
        raise SweepFailures(failed, report)
    return report


def share_untrained(sweep_dir: Path, runs: list[RunConfig], progress: bool, main: bool) -> dict[Path, Path]:
    """Evaluate the untrained model once per seed for the runs that start afresh; ``{run folder: evaluation}``.

    Runs of one seed differ only in their PLW, which only the weighted loss depends on (scored for each PLW from
    the same forward pass), so their step-0 evaluations are one. Under ``accelerate launch`` (several processes)
    every run evaluates itself.
    """
    from .distributed import world_size
    from .evaluate import UNTRAINED, evaluate_untrained
    from .runner import can_share_untrained, last_checkpoint

    fresh = [r for r in runs if can_share_untrained(r) and last_checkpoint(r.run_dir) is None]
    if world_size() > 1 or not main or len(fresh) < 2:
        return {}
    shared: dict[Path, Path] = {}
    for seed in dict.fromkeys(r.seed for r in fresh):
        group = [r for r in fresh if r.seed == seed]
        folder = sweep_dir / UNTRAINED / f"seed={seed}"
        print(f"[plw] sweep: evaluating the untrained model once for {len(group)} run(s) of seed {seed}: {folder}")
        evaluate_untrained(group, folder, progress=progress)
        shared.update({r.run_dir: folder for r in group})
    return shared


class SweepFailures(RuntimeError):
    """Some runs of a sweep failed (the others finished and are in the report)."""

    def __init__(self, failed: dict[str, str], report: Path):
        self.failed, self.report = failed, report
        super().__init__(f"{len(failed)} run(s) failed: {', '.join(failed)}; report: {report}")


def write_report(sweep_dir: Path, failed: dict[str, str]) -> Path:
    """``report.md`` of the finished runs, with a section naming the runs that failed in this invocation."""
    from .report import write_sweep_outputs
    from .runio import atomic_write_text

    report = sweep_dir / "report.md"
    try:
        report = write_sweep_outputs(sweep_dir)
        text = report.read_text()
    except FileNotFoundError:  # no run finished
        if not failed:
            raise
        text = "# PLW sweep\n\nNo run finished.\n"
    if failed:
        lines = "\n".join(f"- `{label}`: {reason}" for label, reason in failed.items())
        atomic_write_text(report, text.rstrip("\n") + f"\n\n## Failed runs\n\n{lines}\n")
    return report


def merge_sweep_file(sweep_dir: Path, command: str | None, values: list[Any], seeds: list[int] | None) -> None:
    """Record this invocation in ``sweep.json``, merged with what sweeps into the same folder wrote before.

    ``values`` and ``seeds`` are the union over invocations (first-seen order), ``commands`` every distinct
    command and ``command`` the latest. An exclusive lock on ``.sweep.lock`` serialises sweeps started side by
    side, so none overwrites another's entry.
    """
    import fcntl
    import json

    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / SWEEP_FILE
    with open(sweep_dir / ".sweep.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.loads(path.read_text()) if path.exists() else {}
        merged_values = _union(old.get("values") or [], values)
        old_seeds = old.get("seeds")
        merged_seeds = None if old_seeds is None and seeds is None else _union(old_seeds or [], seeds or [])
        commands = _union(
            old.get("commands") or ([old["command"]] if old.get("command") else []), [command] if command else []
        )
        atomic_write_json(
            path,
            {
                "command": command or old.get("command"),
                "values": merged_values,
                "seeds": merged_seeds,
                "commands": commands,
            },
        )


def _union(first: list[Any], second: list[Any]) -> list[Any]:
    return first + [x for x in second if x not in first]


def sweep_command(
    config_path: str | None, overrides: list[str], values: list[Any] | None, seeds: list[int] | None = None
) -> str:
    """The command line that reproduces a sweep (for the report)."""
    parts = ["plw sweep"]
    if config_path:
        parts.append(str(config_path))
    if values:
        parts += ["--plw", _quote(",".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in values))]
    if seeds:
        parts += ["--seeds", ",".join(map(str, seeds))]
    for item in overrides:
        parts += ["--set", _quote(item)]
    return " ".join(parts)


def _quote(item: str) -> str:
    import shlex

    return shlex.quote(item)


__all__: list[Any] = ["parse_plw_values", "parse_seeds", "run_sweep", "run_configs", "sweep_command", "SweepFailures"]
