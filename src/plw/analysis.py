"""Read run folders and derive what a PLW comparison needs: curves, minima, and each stopping rule's pick.

Plain functions over ``metrics.jsonl`` lines (dicts), shared by the figures (:mod:`plw.plots`) and the sweep report
(:mod:`plw.report`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from .runio import read_jsonl_lines
from .uncertainty import accuracy_interval, interval_method, row_means, wilson_interval

# The accuracy a comparison uses, in order of preference: the answer token (letters), the generated answer (answers
# that are words, when generation ran), teacher-forced exact match of the whole completion, then weaker stand-ins.
ACCURACY_KEYS = (
    "eval_accuracy",
    "eval_generated_accuracy",
    "eval_exact_match",
    "eval_choice_accuracy",
    "eval_completion_token_accuracy",
)
# The per-row outcome (predictions.jsonl) behind an accuracy, and the count of rows it is a share of.
OUTCOME_FIELDS = {
    "eval_accuracy": "correct",
    "eval_exact_match": "exact",
    "eval_generated_accuracy": "generated_correct",
}
ROW_COUNTS = {
    "eval_accuracy": "eval_answer_rows",
    "eval_choice_accuracy": "eval_answer_rows",
    "eval_exact_match": "eval_rows",
    "eval_generated_accuracy": "eval_generated_rows",
}
# How reports name a metric where its key alone would mislead (exact match is scored under teacher forcing).
METRIC_NAMES = {
    "eval_exact_match": "exact match (teacher-forced)",
    "eval_generated_accuracy": "generated-answer accuracy",
}
WITHIN = 0.01  # "epochs to come within 1 point of the best accuracy"
# The pre-declared checkpoint rules a sweep report compares, and the optimistic one it shows for reference.
RULES = ("completion-loss minimum", "full-loss minimum", "final")
OPTIMISTIC = "best accuracy (optimistic)"


@dataclass
class Run:
    """One run folder: its config, evaluation lines and data report."""

    path: Path
    config: dict[str, Any]
    lines: list[dict[str, Any]]
    data_report: dict[str, Any] = field(default_factory=dict)

    @property
    def plw(self) -> Any:
        """The run's prompt-loss-weight (a number, or a schedule's label)."""
        return self.config.get("prompt_loss_weight", self.lines[0].get("plw") if self.lines else None)

    @property
    def label(self) -> str:
        return f"PLW {format_plw(self.plw)}"

    @property
    def seed(self) -> int | None:
        return self.config.get("seed")

    @property
    def predictions(self) -> dict[int, dict[str, list[int]]]:
        """Per-row outcomes by evaluation step (``predictions.jsonl``; empty when the run has none)."""
        if "_predictions" not in self.__dict__:
            file = self.path / "predictions.jsonl"
            lines = read_jsonl_lines(file) if file.exists() else []
            self.__dict__["_predictions"] = {int(line["step"]): line for line in lines}
        return self.__dict__["_predictions"]

    @cached_property
    def finished(self) -> bool:
        """Whether training ended (``state.json`` says ``finished``, read once per :class:`Run`); a folder without
        ``state.json`` predates it and counts as finished. An unfinished run's last evaluation is not its final one."""
        file = self.path / "state.json"
        if not file.exists():
            return True
        import json

        return json.loads(file.read_text()).get("status") == "finished"

    def outcomes(self, step: int, acc_key: str | None) -> dict[int, int] | None:
        """Row id -> 1 (right) / 0 (wrong) for ``acc_key`` at ``step``; None when not recorded."""
        field_name = OUTCOME_FIELDS.get(acc_key or "")
        line = self.predictions.get(int(step))
        if field_name is None or line is None or field_name not in line:
            return None
        return {i: int(v) for i, v in zip(line["id"], line[field_name], strict=True) if v is not None and v >= 0}

    def row_losses(self, step: int) -> dict[int, float] | None:
        """Row id -> completion loss (mean NLL over the row's completion tokens) at ``step``; None when not
        recorded."""
        line = self.predictions.get(int(step))
        if line is None or "completion_loss" not in line:
            return None
        return {i: float(v) for i, v in zip(line["id"], line["completion_loss"], strict=True) if v is not None}


def metric_name(key: str) -> str:
    """A metric's name in reports: ``eval_exact_match`` -> ``exact match (teacher-forced)``, else the key without
    ``eval_``."""
    return METRIC_NAMES.get(key, key.removeprefix("eval_"))


def format_plw(value: Any) -> str:
    """``0.1`` -> ``"0.1"``, ``1.0`` -> ``"1"``; schedules by their label (``"1→0 linear"``)."""
    if isinstance(value, (int, float)):
        return f"{float(value):g}"
    from .schedule import plw_label

    return plw_label(value)


def load_run(path: str | Path) -> Run:
    """Read a run folder written by ``plw train`` (``metrics.jsonl`` is required)."""
    path = Path(path)
    metrics = path / "metrics.jsonl"
    if not metrics.exists():
        raise FileNotFoundError(f"{path} is not a run folder: no metrics.jsonl")
    config = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").exists() else {}
    report = {}
    if (path / "data_report.json").exists():
        import json

        report = json.loads((path / "data_report.json").read_text())
    return Run(path, config or {}, read_jsonl_lines(metrics), report)


def accuracy_key(lines: list[dict[str, Any]]) -> str | None:
    """The accuracy the comparison uses: answer accuracy when known, else completion-token accuracy."""
    for key in ACCURACY_KEYS:
        if any(key in line for line in lines):
            return key
    return None


def series(lines: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """``(epochs, values)`` of one metric over the evaluations that have it."""
    xs, ys = [], []
    for line in lines:
        value = line.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            xs.append(float(line.get("epoch") or 0.0))
            ys.append(float(value))
    return xs, ys


def argbest(lines: list[dict[str, Any]], key: str, mode: str = "min") -> dict[str, Any] | None:
    """The evaluation line where ``key`` is smallest (``mode="min"``) or largest; the earliest on ties."""
    best = None
    for line in lines:
        value = line.get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        if best is None or (value < best[key] if mode == "min" else value > best[key]):
            best = line
    return best


def rows_scored(line: dict[str, Any], acc_key: str | None) -> int | None:
    """How many validation rows an accuracy in ``line`` is a share of (for its Wilson interval)."""
    count = line.get(ROW_COUNTS.get(acc_key or "", ""))
    return int(count) if isinstance(count, (int, float)) else None


def checkpoint_lines(run: Run, acc_key: str | None) -> dict[str, dict[str, Any] | None]:
    """The evaluation each rule picks: the pre-declared ones (:data:`RULES`) and the optimistic best accuracy."""
    lines = run.lines
    picks = {
        "completion-loss minimum": argbest(lines, "eval_completion_loss"),
        "full-loss minimum": argbest(lines, "eval_full_loss"),
        "final": lines[-1] if lines else None,
    }
    picks[OPTIMISTIC] = argbest(lines, acc_key, "max") if acc_key else None
    return picks


def group_by_plw(runs: list[Run]) -> list[tuple[str, Any, list[Run]]]:
    """Runs grouped by PLW (seeds of one value together, ordered by seed), in :func:`sort_runs` order."""
    groups: dict[str, tuple[Any, list[Run]]] = {}
    for run in sort_runs(runs):
        key = format_plw(run.plw)
        groups.setdefault(key, (run.plw, []))[1].append(run)
    return [
        (f"PLW {k}", plw, sorted(rs, key=lambda r: (r.seed is None, r.seed or 0))) for k, (plw, rs) in groups.items()
    ]


def run_row(run: Run) -> dict[str, Any]:
    """One row of the sweep table: what each stopping rule picks, and how fast accuracy gets there."""
    lines = run.lines
    acc = accuracy_key(lines)
    row: dict[str, Any] = {"plw": run.plw, "label": format_plw(run.plw), "accuracy_metric": acc}
    at_c = argbest(lines, "eval_completion_loss")
    at_f = argbest(lines, "eval_full_loss")
    row["min_completion_loss"] = at_c["eval_completion_loss"] if at_c else None
    row["min_completion_loss_epoch"] = at_c["epoch"] if at_c else None
    row["acc_at_min_completion_loss"] = at_c.get(acc) if at_c and acc else None
    row["min_full_loss"] = at_f["eval_full_loss"] if at_f else None
    row["min_full_loss_epoch"] = at_f["epoch"] if at_f else None
    row["acc_at_min_full_loss"] = at_f.get(acc) if at_f and acc else None
    best = argbest(lines, acc, "max") if acc else None
    row["best_accuracy"] = best[acc] if best else None
    row["best_accuracy_epoch"] = best["epoch"] if best else None
    row["epochs_to_within_1pt"] = None
    if best:
        for line in lines:
            value = line.get(acc)
            if isinstance(value, (int, float)) and value >= best[acc] - WITHIN:
                row["epochs_to_within_1pt"] = line["epoch"]
                break
    # The untrained accuracy only where an evaluation ran before training (step 0); never a default.
    first = lines[0] if lines and int(lines[0].get("step", -1)) == 0 else {}
    row["initial_accuracy"] = first.get(acc) if acc else None
    row["evaluations"] = len(lines)
    return row


def sort_runs(runs: list[Run]) -> list[Run]:
    """Numeric PLWs from large to small (1 ... 0), then schedules by label."""
    numeric = [r for r in runs if isinstance(r.plw, (int, float))]
    other = [r for r in runs if not isinstance(r.plw, (int, float))]
    return sorted(numeric, key=lambda r: -float(r.plw)) + sorted(other, key=lambda r: str(r.plw))


def rule_accuracy(group: list[Run], acc: str, rule: str) -> dict[str, Any] | None:
    """A PLW's accuracy under one checkpoint rule: mean over seeds, min–max, and its 95% interval ``lo``–``hi``
    with the evaluation row as the unit (:func:`plw.uncertainty.accuracy_interval`: Wilson with one seed, a
    bootstrap over rows with each row's seeds kept together with several). ``rows`` counts evaluation rows, not
    rows x seeds. Several seeds without per-row outcomes give no interval (``lo`` and ``hi`` None): pooling their
    rows as if independent would overstate the precision."""
    values, steps, outcomes, counts = [], [], [], []
    for run in group:
        line = checkpoint_lines(run, acc)[rule]
        if line is None or not isinstance(line.get(acc), (int, float)):
            return None
        values.append(line[acc])
        steps.append(int(line["step"]))
        outcomes.append(run.outcomes(int(line["step"]), acc))
        counts.append(rows_scored(line, acc))
    lo = hi = rows = None
    method = None
    if all(o is not None for o in outcomes):
        means = row_means(outcomes)
        if means:
            lo, hi = accuracy_interval(means, len(group))
            rows = len(means)
            method = interval_method(means, len(group))
    elif len(group) == 1 and counts[0]:
        rows = counts[0]
        lo, hi = wilson_interval(round(values[0] * rows), rows)
        method = "Wilson"
    return {
        "mean": sum(values) / len(values),
        "min": min(values),
        "max": max(values),
        "lo": lo,
        "hi": hi,
        "rows": rows,
        "seeds": len(group),
        "method": method,
        "steps": steps,
    }
