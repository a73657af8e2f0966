"""PLW sweeps: the same training at several prompt-loss-weights, then the comparison.

Every value trains on identical data, order, seed and schedule (only ``prompt_loss_weight`` differs) into
``OUTPUT_DIR/NAME/plw=VALUE/``; with ``seeds`` (config or ``--seeds``), every value is repeated once per seed into
``OUTPUT_DIR/NAME/plw=VALUE/seed=S/`` (the seed sets data order, adapter init and dropout; the data stay the same).
A run whose folder says ``finished`` (``state.json``) with the same settings is not trained again, so a sweep that
was stopped can simply be started again.
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
    common = {"plw_values": None, "seeds": None}
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
) -> Path:
    """Train every run not yet finished, then draw the figures and write ``report.md``; return the report path."""
    from .distributed import is_main_process
    from .report import write_sweep_outputs
    from .runner import train_run

    values = values or config.plw_values or list(DEFAULT_VALUES)
    runs = run_configs(config, values, seeds)
    main = is_main_process()
    for i, run in enumerate(runs, start=1):
        if is_finished(run):
            if main:
                print(f"[plw] sweep {i}/{len(runs)}: {run.run_dir} already finished, skipped")
            continue
        if main:
            print(f"[plw] sweep {i}/{len(runs)}: training {run.run_dir}")
        # An interrupted value continues from its last checkpoint (or starts again when it has none).
        train_run(run, progress=progress, resume=True)
    report = config.run_dir / "report.md"
    if main:
        if command:
            seeds = seeds if seeds is not None else config.seeds
            atomic_write_json(config.run_dir / "sweep.json", {"command": command, "values": values, "seeds": seeds})
        report = write_sweep_outputs(config.run_dir)
    return report


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


__all__: list[Any] = ["parse_plw_values", "parse_seeds", "run_sweep", "run_configs", "sweep_command"]
