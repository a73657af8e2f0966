"""``plw eval``: the streamed split metrics of a model or a saved checkpoint on a config's evaluation data.

The result is written like a run's evaluation: ``metrics.jsonl`` (one line per prompt-loss-weight scored, with
``step``, ``epoch``, ``plw`` and every ``eval_*`` metric) and ``predictions.jsonl`` (the per-row outcomes), next to
``config.yaml`` and ``data_report.json``. Several weights are scored from one forward pass: only the weighted loss
depends on them. ``plw sweep`` uses this to evaluate the untrained model once for all its PLWs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import ConfigError, RunConfig, dump_config
from .runio import append_jsonl, atomic_write_json, atomic_write_text
from .runner import (
    PREDICTIONS_FILE,
    load_run_model,
    load_run_tokenizer,
    make_trainer,
    prepare_data,
    training_arguments,
)
from .schedule import parse_plw

# SWEEP/shared/untrained/seed=S/: a sweep's evaluation of the untrained model, shared by its runs of seed S (deep
# enough that the report does not take it for a run).
UNTRAINED = Path("shared", "untrained")


class _SeveralWeights:
    """Feeds every batch to one :class:`~plw.metrics.StreamingMetrics` per (plw, completion weight) pair; reports
    the first to the Trainer and keeps all results in ``results``."""

    def __init__(self, metrics: list[Any]):
        self.metrics = metrics
        self.results: list[dict[str, float]] = []

    def update(self, *args: Any, **kwargs: Any) -> None:
        for m in self.metrics:
            m.update(*args, **kwargs)

    def update_from_hidden(self, *args: Any, **kwargs: Any) -> None:
        for m in self.metrics:
            m.update_from_hidden(*args, **kwargs)

    def reduce(self, fn: Callable[[Any], Any], device: Any = "cpu") -> None:
        for m in self.metrics:
            m.reduce(fn, device=device)

    def compute(self) -> dict[str, float]:
        self.results = [m.compute() for m in self.metrics]
        return self.results[0]

    @property
    def row_outcomes(self) -> Any:
        return self.metrics[0].row_outcomes  # the same for every weight


def checkpoint_step(checkpoint: str | Path | None) -> tuple[int, float]:
    """Optimizer step and epoch of a Trainer checkpoint (its ``trainer_state.json``); ``(0, 0.0)`` otherwise."""
    state = Path(checkpoint) / "trainer_state.json" if checkpoint is not None else None
    if state is None or not state.exists():
        return 0, 0.0
    saved = json.loads(state.read_text())
    return int(saved.get("global_step", 0)), round(float(saved.get("epoch") or 0.0), 6)


def evaluate(
    config: RunConfig,
    checkpoint: str | Path | None = None,
    out_dir: str | Path | None = None,
    weights: Sequence[tuple[float, float]] | None = None,
    progress: bool = True,
) -> Path:
    """Evaluate ``config.model`` (or ``checkpoint``: a model folder, a LoRA adapter folder or a Trainer checkpoint)
    on ``config.eval_data``, at each ``(plw, completion weight)`` of ``weights`` (default: the config's starting
    weights); write the files into ``out_dir`` (default ``OUTPUT_DIR/NAME/eval``) and return it."""
    from .distributed import is_main_process

    if config.eval_data is None:
        raise ConfigError("eval_data: required by plw eval")
    if checkpoint is not None and not Path(checkpoint).is_dir():
        raise FileNotFoundError(f"--checkpoint: no such folder: {checkpoint}")
    out = Path(out_dir) if out_dir is not None else config.run_dir / "eval"
    weights = list(weights or [(parse_plw(config.prompt_loss_weight).start, _completion_start(config))])
    tokenizer = load_run_tokenizer(config)
    data = prepare_data(config, tokenizer, train=False)
    model = load_run_model(config, checkpoint)
    args = training_arguments(config, out)
    args.disable_tqdm = not progress
    args.eval_on_start = False
    args.report_to = []
    trainer = make_trainer(config, model, tokenizer, data, args)
    from .metrics import StreamingMetrics

    several = _SeveralWeights(
        [
            StreamingMetrics(p, trainer.choice_token_ids, completion_weight=c, normalization=config.loss_normalization)
            for p, c in weights
        ]
    )
    trainer.new_eval_metrics = lambda: several  # one forward pass, every weight
    first = trainer.evaluate()
    if not is_main_process():
        return out
    step, epoch = checkpoint_step(checkpoint)
    timing = {k: v for k, v in first.items() if k.endswith(("_runtime", "_per_second"))}
    generated = {k: v for k, v in first.items() if k.startswith("eval_generated_")}  # the same at every weight
    out.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", PREDICTIONS_FILE):
        (out / name).unlink(missing_ok=True)
    for (plw, _), values in zip(weights, several.results, strict=True):
        line = {"step": step, "epoch": epoch, "plw": plw, "train_loss": None}
        line.update({f"eval_{k}": v for k, v in values.items() if isinstance(v, (int, float))})
        if "weighted_loss" in values:
            line["eval_loss"] = values["weighted_loss"]
        append_jsonl(out / "metrics.jsonl", {**line, **generated, **timing})
    outcomes = trainer.last_row_outcomes
    if outcomes and outcomes["id"]:
        append_jsonl(out / PREDICTIONS_FILE, {"step": step, **outcomes})
    atomic_write_text(out / "config.yaml", dump_config(config))
    atomic_write_json(out / "data_report.json", {**data.report, "checkpoint": str(checkpoint) if checkpoint else None})
    return out


def _completion_start(config: RunConfig) -> float:
    return parse_plw(config.completion_loss_weight, "completion_loss_weight").start


def evaluate_untrained(runs: list[RunConfig], folder: Path, progress: bool = True) -> Path:
    """The untrained evaluation shared by ``runs`` (same model, data and seed; PLWs differ) in ``folder``.

    Reused when ``folder`` already holds it for the same settings and every needed PLW.
    """
    import yaml

    weights = list(dict.fromkeys((parse_plw(r.prompt_loss_weight).start, _completion_start(r)) for r in runs))
    key = _key_config(runs[0], folder)
    saved = folder / "config.yaml"
    if saved.exists() and yaml.safe_load(saved.read_text()) == yaml.safe_load(dump_config(key)):
        from .runio import read_jsonl_lines

        have = {line.get("plw") for line in read_jsonl_lines(folder / "metrics.jsonl")}
        if all(p in have for p, _ in weights):
            return folder
    return evaluate(key, out_dir=folder, weights=weights, progress=progress)


def _key_config(run: RunConfig, folder: Path) -> RunConfig:
    """The settings an untrained evaluation depends on: the run's, with its PLW and folder set aside."""
    import dataclasses

    return dataclasses.replace(run, prompt_loss_weight=1.0, name=folder.name, output_dir=str(folder.parent))
