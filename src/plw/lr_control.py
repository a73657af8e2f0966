"""The learning-rate control: does the PLW effect survive when every PLW gets its own learning rate?

With ``loss_normalization: weight`` a PLW of 1 gives the completion only ``Rg / (1 + Rg)`` of the loss's weight, so at
one learning rate each completion token's gradient is far smaller than at PLW 0. A PLW effect measured at a learning
rate tuned for PLW 0 may then be a learning-rate effect. The control trains each PLW at several learning rates,
**chooses each PLW's learning rate on selection rows** (calibration rows no report uses) by a rule fixed before the
runs (:data:`SELECTION_RULE`), and compares the PLWs at their chosen rates on **held-out rows** that chose nothing.

Layout read (``scripts/how-much.sh b`` writes it): ``FOLDER/lr=X/plw=V/seed=S/`` is a run trained at rate X and
evaluated at its last step on the selection rows; its ``heldout/`` subfolder is ``plw eval`` of its final adapter on
the held-out rows. Comparisons are the sweep report's row-level ones (:func:`plw.verdicts.ordering`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .analysis import Run, accuracy_key, format_plw, load_run, metric_name, rule_accuracy
from .report import find_runs, format_accuracy, ordering_lines
from .runio import atomic_write_text
from .verdicts import Ordering, ordering

SELECTION_RULE = (
    "each PLW's learning rate is the one whose run has the highest accuracy at its final evaluation on the selection "
    "rows; ties go to the lower completion loss there, then to the lower learning rate. Runs that did not finish, "
    "or have no final evaluation, are not candidates"
)


@dataclass(frozen=True)
class Trial:
    """One PLW trained at one learning rate: its run (evaluated on the selection rows) and, when evaluated, its
    final model on the held-out rows."""

    learning_rate: float
    selection: Run
    heldout: Run | None

    @property
    def plw(self) -> float:
        return float(self.selection.plw)

    def final(self) -> dict[str, Any] | None:
        """The last selection-row evaluation of a finished run, else None."""
        run = self.selection
        return run.lines[-1] if run.lines and run.finished else None


def find_trials(folder: str | Path) -> list[Trial]:
    """Every run under ``folder/lr=*/``, with its ``heldout/`` evaluation when there is one, ordered by PLW (largest
    first) and then learning rate."""
    trials = []
    for sweep in sorted(Path(folder).glob("lr=*")):
        if not sweep.is_dir():
            continue
        for run in find_runs(sweep):
            heldout = run.path / "heldout"
            trials.append(
                Trial(
                    float(run.config["learning_rate"]),
                    run,
                    load_run(heldout) if (heldout / "metrics.jsonl").exists() else None,
                )
            )
    return sorted(trials, key=lambda t: (-t.plw, t.learning_rate))


def selection_key(trials: list[Trial]) -> str | None:
    """The accuracy the selection evaluations record (generated-answer accuracy when present)."""
    return accuracy_key([line for t in trials for line in t.selection.lines])


def pick_learning_rates(trials: list[Trial]) -> dict[float, Trial]:
    """PLW -> the trial :data:`SELECTION_RULE` picks from the selection rows alone (held-out rows are not read)."""
    acc = selection_key(trials)
    if acc is None:
        return {}
    best: dict[float, tuple[tuple[float, float, float], Trial]] = {}
    for t in trials:
        line = t.final()
        if line is None or not isinstance(line.get(acc), (int, float)):
            continue
        loss = line.get("eval_completion_loss")
        key = (-float(line[acc]), float(loss) if isinstance(loss, (int, float)) else float("inf"), t.learning_rate)
        if t.plw not in best or key < best[t.plw][0]:
            best[t.plw] = (key, t)
    return {plw: trial for plw, (_, trial) in best.items()}


def _pct(line: dict[str, Any] | None, key: str | None) -> str:
    value = line.get(key) if line and key else None
    return "–" if not isinstance(value, (int, float)) else f"{100 * value:.1f}%"


def _loss(line: dict[str, Any] | None) -> str:
    value = line.get("eval_completion_loss") if line else None
    return "–" if not isinstance(value, (int, float)) else f"{value:.4f}"


def _rows(run: Run | None) -> str:
    line = run.lines[-1] if run and run.lines else {}
    rows = line.get("eval_rows")
    return f"{int(rows)}" if isinstance(rows, (int, float)) else "?"


def render(folder: str | Path, command: str | None = None) -> tuple[str, dict[str, Any]]:
    """The markdown report of a learning-rate control and its findings (JSON-ready)."""
    folder = Path(folder)
    trials = find_trials(folder)
    if not trials:
        raise ValueError(f"{folder}: no runs under lr=*/ (see scripts/how-much.sh b)")
    acc = selection_key(trials)
    picks = pick_learning_rates(trials)
    held = [t.heldout for t in trials if t.heldout is not None]
    held_acc = accuracy_key([line for r in held for line in r.lines])
    rates = sorted({t.learning_rate for t in trials})
    lines = ["# Learning-rate control", ""]
    if command:
        lines += ["Reproduce with:", "", "```", command, "```", ""]
    sel_rows = _rows(trials[0].selection)
    lines += [
        f"{len({t.plw for t in trials})} PLW values x {len(rates)} learning rates "
        f"({', '.join(f'{r:g}' for r in rates)}), one run each. Every run is evaluated at its last step on "
        f"{sel_rows} **selection rows**, which choose each PLW's learning rate, and its final model on "
        f"{_rows(held[0]) if held else '?'} **held-out rows**, which choose nothing. Rule, fixed before the runs: "
        f"{SELECTION_RULE}. Accuracy is `{metric_name(acc) if acc else 'accuracy'}`.",
        "",
        "## Every run",
        "",
        "| PLW | learning rate | selection accuracy | selection completion loss | held-out accuracy | "
        "held-out completion loss | chosen |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in trials:
        h = t.heldout
        h_line = h.lines[-1] if h and h.lines else None
        acc_text = format_accuracy(rule_accuracy([h], held_acc, "final"), 1) if h and held_acc else "–"
        chosen = "yes" if picks.get(t.plw) is t else ""
        status = "" if t.final() else " (did not finish)"
        lines.append(
            f"| {format_plw(t.plw)} | {t.learning_rate:g}{status} | {_pct(t.final(), acc)} | {_loss(t.final())} | "
            f"{acc_text} | {_loss(h_line)} | {chosen} |"
        )
    lines.append("")
    findings: dict[str, Any] = {
        "selection_rule": SELECTION_RULE,
        "chosen_learning_rates": {format_plw(p): t.learning_rate for p, t in sorted(picks.items(), reverse=True)},
    }
    chosen_runs = [t.heldout for t in picks.values() if t.heldout is not None]
    lines += ["## Each PLW at its chosen learning rate, on the held-out rows", ""]
    if held_acc and len(chosen_runs) == len(picks) >= 2:
        chosen = ", ".join(f"PLW {format_plw(p)}: {t.learning_rate:g}" for p, t in sorted(picks.items(), reverse=True))
        o = ordering(chosen_runs, held_acc, "final")
        lines += [f"Chosen learning rates: {chosen}.", "", *ordering_lines(chosen_runs, held_acc, o=o), ""]
        findings["at_chosen"] = _ordering_json(o, held_acc)
    else:
        lines += ["Not measured: a PLW has no chosen run with a held-out evaluation.", ""]
    lines += ["## Each learning rate on its own, on the held-out rows", ""]
    findings["by_learning_rate"] = {}
    for rate in rates:
        runs = [t.heldout for t in trials if t.learning_rate == rate and t.heldout is not None and t.final()]
        o = ordering(runs, held_acc, "final") if held_acc and len(runs) >= 2 else None
        text = ordering_lines(runs, held_acc, o=o) if o is not None else []
        lines.append(f"- Learning rate {rate:g}: " + (text[0].removeprefix("- ") if text else "fewer than two runs."))
        if text:
            findings["by_learning_rate"][f"{rate:g}"] = _ordering_json(o, held_acc)
    lines.append("")
    return "\n".join(lines), findings


def _ordering_json(o: Ordering | None, acc: str) -> dict[str, Any]:
    if o is None:
        return {}
    return {
        "metric": acc,
        "ranked": [{"plw": label.removeprefix("PLW "), "accuracy": mean} for label, mean in o.ranked],
        "best": o.best.removeprefix("PLW "),
        "against_best": [
            {
                "plw": label.removeprefix("PLW "),
                "difference": c.difference,
                "difference_interval": list(c.difference_interval),
                "p": c.p_value,
                "rows": c.rows,
            }
            for label, c in o.against_best
        ],
    }


def write_report(folder: str | Path, command: str | None = None) -> Path:
    """Write ``report.md`` and ``findings.json`` into ``folder``; returns the report's path."""
    folder = Path(folder)
    text, findings = render(folder, command)
    atomic_write_text(folder / "report.md", text)
    atomic_write_text(folder / "findings.json", json.dumps(findings, indent=2) + "\n")
    return folder / "report.md"
