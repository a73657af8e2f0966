"""The Rg spectrum study: several PLW sweeps, one per dataset, set side by side by the data's generation ratio Rg.

``plw spectrum SWEEP_DIR ...`` reads each sweep folder (one ``plw sweep`` per dataset), takes every finished run's
*final* evaluation — a rule declared before looking, not the best of several noisy evaluations — and writes
``spectrum.png``, ``report.md`` and ``findings.json``:

* per dataset and constant PLW: the held-out completion loss (mean over seeds, with the seeds' min and max) and,
  where the runs record one, the accuracy (mean over seeds, min–max, and its 95% interval with the evaluation row
  as the unit: :data:`plw.uncertainty.ROW_INTERVAL`);
* per dataset, every PLW against PLW 1, and the other PLWs against each other: the completion loss by a row-level
  paired test on the runs' per-row completion losses (:data:`plw.uncertainty.ROW_LOSS_TEST`; runs without them: in
  how many matched seeds it is lower), and a row-level paired test of the accuracy on the same evaluation rows over matched
  seeds (:data:`plw.uncertainty.ROW_TEST`, :func:`plw.verdicts.compare_at`), put into plain words no stronger than
  the data; an accuracy at one value in every run (0% everywhere) is called not informative.

Rg is the mean completion / prompt token ratio of the evaluation rows as trained (chat template included), from the
runs' ``data_report.json``. ``findings.json`` is what ``plw stats`` reads (its packaged copy,
``plw/spectrum_findings.json``): a top-level ``report`` (the report's path as written) and ``datasets``, each with
``name``, ``rg``, ``finding``, ``scope`` (model, rows, steps and seeds the finding rests on), ``comparisons`` (each
PLW against PLW 1) and ``pairwise`` (the other PLWs against each other), each comparison with its ``paired`` test.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .analysis import Run, accuracy_key, checkpoint_lines, format_plw, rule_accuracy
from .report import find_runs
from .runio import atomic_write_json, atomic_write_text
from .uncertainty import ROW_INTERVAL, ROW_LOSS_TEST, ROW_TEST, LossComparison, RowComparison, compare_row_losses
from .verdicts import (
    ALPHA,
    compare_at,
    decide_loss,
    describe_loss,
    interval,
    matched_seeds,
    pct,
    per_seed_text,
    rows_text,
)

REFERENCE_PLW = 1.0  # every PLW is compared with PLW 1, the model's own causal-LM loss
RULE = "final"  # the checkpoint rule of the study (plw.analysis.RULES), declared before looking
CLAIM = (
    "Huerta-Enochian & Ko (2024) report that a small non-zero prompt-loss-weight helps when completions are short "
    "relative to prompts (low Rg) and barely matters when completions are long (high Rg)."
)


@dataclass
class Dataset:
    """One sweep folder: its name, the Rg of its evaluation rows, and its finished runs by constant PLW."""

    name: str
    path: Path
    rg: float | None
    groups: dict[float, list[Run]]  # PLW (large to small) -> runs ordered by seed
    # Run folders not finished, trained on a PLW schedule, or without a completion loss at their last evaluation.
    left_out: list[Path] = field(default_factory=list)

    @property
    def runs(self) -> list[Run]:
        return [run for group in self.groups.values() for run in group]

    @property
    def accuracy_key(self) -> str | None:
        """The accuracy the dataset's runs record (:func:`plw.analysis.accuracy_key`), the same for every PLW."""
        return accuracy_key([line for run in self.runs for line in run.lines])


def eval_rg(runs: Sequence[Run]) -> float | None:
    """Mean Rg of the evaluation rows, averaged over the runs' data reports (runs of one sweep share the rows)."""
    values = [((run.data_report.get("eval") or {}).get("rg") or {}).get("rg_mean") for run in runs]
    values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def dataset_scope(dataset: Dataset) -> str:
    """What a dataset's numbers rest on, in one line for readers of the findings: model, tuning, training rows,
    steps, evaluation rows and seeds (``smollm2-135m-instruct, LoRA r16, 96 training rows, 16 steps, 50 evaluation
    rows, seeds 1,2``), from the first run's config and data report and every run's final evaluation."""
    first = dataset.runs[0]
    lora = first.config.get("lora")
    tuning = f"LoRA r{lora['r']}" if isinstance(lora, dict) and lora.get("r") else "full fine-tuning"
    train = (first.data_report.get("train") or {}).get("kept")
    finals = [final_line(run) for run in dataset.runs]
    seeds = sorted({run.seed for run in dataset.runs if run.seed is not None})
    parts = [
        str(first.config.get("model") or "model ?"),
        tuning,
        f"{train if train is not None else '?'} training rows",
        f"{_span(int(line['step']) for line in finals)} steps",
        f"{_span(int(line.get('eval_rows') or 0) for line in finals)} evaluation rows",
        f"seeds {','.join(map(str, seeds))}" if seeds else "one unseeded run per PLW",
    ]
    return ", ".join(parts)


def _span(values: Iterable[int]) -> str:
    """``16`` when every value is 16, ``16-22`` when they range from 16 to 22."""
    values = list(values)
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def load_dataset(sweep_dir: str | Path) -> Dataset:
    """Read one sweep folder; a folder without a finished run at a constant PLW is an error naming it."""
    path = Path(sweep_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such sweep folder")
    groups: dict[float, list[Run]] = {}
    left_out = []
    for run in find_runs(path):  # ordered from PLW 1 to PLW 0, schedules last
        loss = run.lines[-1].get("eval_completion_loss") if run.lines else None
        measured = isinstance(loss, (int, float)) and math.isfinite(loss)
        if not isinstance(run.plw, (int, float)) or not run.finished or not measured:
            left_out.append(run.path)
            continue
        groups.setdefault(float(run.plw), []).append(run)
    if not groups:
        raise FileNotFoundError(
            f"{path}: no finished runs at a constant PLW (run folders with metrics.jsonl whose state.json "
            "says finished)"
        )
    for runs in groups.values():
        runs.sort(key=lambda r: (r.seed is None, r.seed or 0))
    return Dataset(path.name, path, eval_rg([r for rs in groups.values() for r in rs]), groups, left_out)


def load_spectrum(sweep_dirs: Sequence[str | Path]) -> list[Dataset]:
    """One :class:`Dataset` per sweep folder, ordered by Rg (smallest first; unknown Rg last)."""
    datasets = [load_dataset(d) for d in sweep_dirs]
    names = [d.name for d in datasets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two sweep folders share the name {duplicates[0]!r}: a dataset is named by its folder")
    return sorted(datasets, key=lambda d: (d.rg is None, d.rg or 0.0))


def final_line(run: Run) -> dict[str, Any]:
    """The run's final evaluation (the ``final`` rule of :func:`plw.analysis.checkpoint_lines`)."""
    return checkpoint_lines(run, None)[RULE]


def final_losses(runs: Sequence[Run]) -> list[float]:
    return [float(final_line(run)["eval_completion_loss"]) for run in runs]


def plw_summary(runs: list[Run], acc: str | None) -> dict[str, Any]:
    """One PLW of one dataset at the final evaluation: completion loss over seeds and, with ``acc``, accuracy.

    ``accuracy`` holds the mean, min and max over seeds, and its 95% interval ``lo``–``hi`` over ``rows``
    evaluation rows (``method``: Wilson with one seed, a row bootstrap with several;
    :func:`plw.analysis.rule_accuracy`). Without per-row outcomes and with several seeds there is no interval.
    """
    losses = final_losses(runs)
    summary: dict[str, Any] = {
        "plw": float(runs[0].plw),
        "seeds": [run.seed for run in runs],
        "steps": [int(final_line(run)["step"]) for run in runs],
        "completion_loss": {"mean": sum(losses) / len(losses), "min": min(losses), "max": max(losses)},
        "accuracy": None,
    }
    a = rule_accuracy(runs, acc, RULE) if acc else None
    if a is not None:
        summary["accuracy"] = {"metric": acc.removeprefix("eval_")} | {
            k: a[k] for k in ("mean", "min", "max", "lo", "hi", "rows", "seeds", "method")
        }
    return summary


@dataclass(frozen=True)
class Comparison:
    """One PLW against another (PLW 1 unless ``against`` says otherwise) on one dataset, over the seeds both
    have, at the final evaluation."""

    plw: float
    seeds: list[int | None]
    losses: list[float]  # this PLW's final completion loss, per matched seed
    reference_losses: list[float]  # the other PLW's, same seeds
    accuracy_metric: str | None
    paired: RowComparison | None  # row-level over the matched seeds; None without per-row outcomes
    against: float = REFERENCE_PLW
    paired_loss: LossComparison | None = None  # row-level on per-row completion losses; None without them

    @property
    def lower(self) -> int:
        """Matched seeds where this PLW's completion loss is lower than the other's."""
        return sum(a < b for a, b in zip(self.losses, self.reference_losses, strict=True))

    @property
    def higher(self) -> int:
        return sum(a > b for a, b in zip(self.losses, self.reference_losses, strict=True))

    @property
    def finding(self) -> str:
        return loss_finding(self) + ", and " + accuracy_finding(self)


def compare_pair(dataset: Dataset, plw: float, against: float) -> Comparison | None:
    """PLW ``plw`` against PLW ``against`` on matched seeds at the final evaluation; None without matched seeds."""
    pairs = matched_seeds(dataset.groups.get(plw, []), dataset.groups.get(against, []))
    if not pairs or plw == against:
        return None
    acc = dataset.accuracy_key
    return Comparison(
        plw=plw,
        seeds=[a.seed for a, _ in pairs],
        losses=final_losses([a for a, _ in pairs]),
        reference_losses=final_losses([b for _, b in pairs]),
        accuracy_metric=acc.removeprefix("eval_") if acc else None,
        paired=compare_at([(a, final_line(a)["step"], b, final_line(b)["step"]) for a, b in pairs], acc)
        if acc
        else None,
        against=against,
        paired_loss=row_losses_at_final(pairs),
    )


def row_losses_at_final(pairs: list[tuple[Run, Run]]) -> LossComparison | None:
    """The row-level comparison of the per-row completion losses at each run's final evaluation, over the matched
    seeds; None when a run has no per-row losses there."""
    a_by_seed, b_by_seed = [], []
    for a, b in pairs:
        la, lb = a.row_losses(final_line(a)["step"]), b.row_losses(final_line(b)["step"])
        if la is None or lb is None:
            return None
        a_by_seed.append(la)
        b_by_seed.append(lb)
    return compare_row_losses(a_by_seed, b_by_seed) if a_by_seed else None


def compare(dataset: Dataset) -> list[Comparison]:
    """Every PLW other than 1 against PLW 1, on matched seeds (none when the dataset has no PLW 1 run)."""
    if not dataset.groups.get(REFERENCE_PLW):
        return []
    out = [compare_pair(dataset, plw, REFERENCE_PLW) for plw in dataset.groups if plw != REFERENCE_PLW]
    return [c for c in out if c is not None]


def compare_others(dataset: Dataset) -> list[Comparison]:
    """The PLWs other than 1 against each other (each smaller one against each larger one), on matched seeds."""
    others = [plw for plw in dataset.groups if plw != REFERENCE_PLW]  # large to small
    out = [compare_pair(dataset, small, large) for i, large in enumerate(others) for small in others[i + 1 :]]
    return [c for c in out if c is not None]


def loss_finding(c: Comparison) -> str:
    """``PLW 0.1 had lower completion loss than PLW 1 in 2 of 3 seeds (0.2134 vs 0.3512 mean)``, or with one
    seed ``... than PLW 1 (0.2134 vs 0.3512; one seed)``; counts of seeds, no test (3 seeds cannot reach p < 0.05).
    With per-row completion losses, the row-level test instead (:func:`plw.verdicts.decide_loss` words it)."""
    name, ref = f"PLW {format_plw(c.plw)}", f"PLW {format_plw(c.against)}"
    if c.paired_loss is not None and c.paired_loss.rows:
        word = decide_loss(c.paired_loss)
        verb = "could not be told apart from" if word == "not distinguishable" else f"had {word} completion loss than"
        return f"{name} {verb} {ref} ({describe_loss(c.paired_loss, name, ref)})"
    mean, ref_mean = sum(c.losses) / len(c.losses), sum(c.reference_losses) / len(c.reference_losses)
    n = len(c.losses)
    if c.lower == c.higher == 0:
        where = "in the one seed" if n == 1 else f"in all {n} seeds"
        return f"{name} had the same completion loss as {ref} {where} ({mean:.4g})"
    word, count = ("lower", c.lower) if c.lower >= c.higher else ("higher", c.higher)
    if n == 1:
        return f"{name} had {word} completion loss than {ref} ({mean:.4g} vs {ref_mean:.4g}; one seed)"
    return f"{name} had {word} completion loss than {ref} in {count} of {n} seeds ({mean:.4g} vs {ref_mean:.4g} mean)"


def accuracy_finding(c: Comparison) -> str:
    """``its exact_match was higher (47.0% [..] vs 24.0% [..] on 50 rows x 2 seeds, row-level p = 0.0012)`` when
    the row-level test rejects "equally accurate" at :data:`plw.verdicts.ALPHA`; ``... not distinguishable ...``
    when it does not; ``... not informative ...`` when the accuracy is one value in every run (no p is quoted)."""
    ref = f"PLW {format_plw(c.against)}"
    if c.accuracy_metric is None:
        return "no accuracy was recorded"
    p = c.paired
    if p is None or p.rows == 0:
        return f"its {c.accuracy_metric} has no per-row outcomes to pair"
    if not p.informative:
        return (
            f"its {c.accuracy_metric} is not informative: {pct(p.mean_a)} in every run of both PLWs on {rows_text(p)}"
        )
    numbers = (
        f"{pct(p.mean_a)} {interval(p.interval_a)} vs {pct(p.mean_b)} {interval(p.interval_b)} on {rows_text(p)}"
        f"{per_seed_text(p).replace(';', ',')}, row-level p = {p.p_value:.2g}"
    )
    if p.p_value < ALPHA:
        word = "higher" if p.mean_a > p.mean_b else "lower"
        return f"its {c.accuracy_metric} was {word} ({numbers})"
    return f"its {c.accuracy_metric} was not distinguishable from {ref}'s ({numbers})"


def _comparison_json(p: RowComparison | LossComparison, test: str) -> dict[str, Any]:
    """What every row-level comparison stores in findings.json: the test, the sizes, both means with intervals and
    the difference with its interval."""
    return {
        "test": test,
        "rows": p.rows,
        "seeds": p.seeds,
        "mean": p.mean_a,
        "interval": list(p.interval_a),
        "reference_mean": p.mean_b,
        "reference_interval": list(p.interval_b),
        "difference": p.difference,
        "difference_interval": list(p.difference_interval),
    }


def paired_json(p: RowComparison | None) -> dict[str, Any] | None:
    """A row-level comparison as findings.json stores it (rows are evaluation rows; seeds are nested in them)."""
    if p is None:
        return None
    return {
        **_comparison_json(p, ROW_TEST),
        "rows_better": p.a_better,
        "rows_worse": p.b_better,
        "right_per_seed": [list(t) for t in p.per_seed],
        "p_value": p.p_value,
        "informative": p.informative,
    }


def loss_json(p: LossComparison | None) -> dict[str, Any] | None:
    """A row-level completion-loss comparison as findings.json stores it."""
    if p is None:
        return None
    return {
        **_comparison_json(p, ROW_LOSS_TEST),
        "rows_lower": p.a_lower,
        "rows_higher": p.b_lower,
        "p_value": p.p_value,
    }


def comparison_json(c: Comparison) -> dict[str, Any]:
    return {
        "plw": c.plw,
        "against": c.against,
        "seeds": c.seeds,
        "completion_loss": c.losses,
        "reference_completion_loss": c.reference_losses,
        "lower_in": c.lower,
        "higher_in": c.higher,
        "paired": paired_json(c.paired),
        "paired_loss": loss_json(c.paired_loss),
        "finding": c.finding,
    }


def dataset_finding(dataset: Dataset, comparisons: list[Comparison]) -> str:
    """The dataset's findings in one line: every comparison with PLW 1, or why there is none."""
    if comparisons:
        return "; ".join(c.finding for c in comparisons)
    if REFERENCE_PLW not in dataset.groups:
        return "no PLW 1 run to compare with"
    return "no other PLW with a seed matching a PLW 1 run"


def findings(datasets: Sequence[Dataset], report: str | Path, command: str | None = None) -> dict[str, Any]:
    """The machine-readable summary (``findings.json``): per dataset its Rg, every PLW's numbers, the comparisons
    with PLW 1 and the findings in words."""
    out: dict[str, Any] = {
        "study": "Rg spectrum",
        "report": str(report),
        "command": command,
        "rule": "final evaluation of each finished run",
        "interval": ROW_INTERVAL,
        "test": ROW_TEST,
        "claim": CLAIM,
        "datasets": [],
    }
    for d in datasets:
        acc = d.accuracy_key
        comparisons = compare(d)
        out["datasets"].append(
            {
                "name": d.name,
                "rg": d.rg,
                "accuracy_metric": acc.removeprefix("eval_") if acc else None,
                "plw": [plw_summary(runs, acc) for runs in d.groups.values()],
                "comparisons": [comparison_json(c) for c in comparisons],
                "pairwise": [comparison_json(c) for c in compare_others(d)],
                "finding": dataset_finding(d, comparisons),
                "scope": dataset_scope(d),
                "left_out": [str(p) for p in d.left_out],
            }
        )
    return out


def rg_text(rg: float | None) -> str:
    return "?" if rg is None else f"{rg:.2g}"


def plot_spectrum(datasets: Sequence[Dataset], path: str | Path) -> Path:
    """Final held-out completion loss against PLW, one line per dataset (mean over seeds, bars: the seeds' min–max);
    beside it the accuracy (mean over seeds, bars: 95% interval over rows) of the datasets that record one.

    The x-axis is symmetric-log with a linear region below 0.01, so 0, 0.01, 0.1 and 1 are all visible; a small
    shift per dataset keeps the bars apart.
    """
    from .plots import _figure, _save

    fig = _figure((11.0, 4.6))
    left, right = fig.subplots(1, 2)
    any_accuracy = False
    ticks: set[float] = set()
    for i, d in enumerate(datasets):
        summaries = sorted((plw_summary(runs, d.accuracy_key) for runs in d.groups.values()), key=lambda s: s["plw"])
        offset = i - (len(datasets) - 1) / 2
        xs = [s["plw"] * (1 + 0.04 * offset) if s["plw"] > 0 else 0.0005 * offset for s in summaries]
        ticks |= {s["plw"] for s in summaries}
        losses = [s["completion_loss"] for s in summaries]
        label = f"{d.name} (Rg {rg_text(d.rg)})"
        line = left.errorbar(
            xs,
            [c["mean"] for c in losses],
            yerr=[[c["mean"] - c["min"] for c in losses], [c["max"] - c["mean"] for c in losses]],
            marker="o",
            capsize=3,
            label=label,
        )
        points = [(x, s["accuracy"]) for x, s in zip(xs, summaries, strict=True) if s["accuracy"]]
        if not points:
            continue
        any_accuracy = True
        ys = [a["mean"] for _, a in points]
        err = [
            [y - (a["lo"] if a["lo"] is not None else y) for y, (_, a) in zip(ys, points, strict=True)],
            [(a["hi"] if a["hi"] is not None else y) - y for y, (_, a) in zip(ys, points, strict=True)],
        ]
        right.errorbar(
            [x for x, _ in points],
            ys,
            yerr=err,
            marker="s",
            capsize=3,
            color=line.lines[0].get_color(),
            label=f"{label}, {points[0][1]['metric']}",
        )
    for ax in (left, right):
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xticks(sorted(ticks))
        ax.set_xticklabels([f"{x:g}" for x in sorted(ticks)])
        ax.set_xlabel("prompt-loss-weight")
    left.set_ylabel("mean NLL per completion token")
    left.set_title("held-out completion loss at the final evaluation\n(mean over seeds, bars: min–max)", fontsize=10)
    left.legend(fontsize=8, frameon=False)
    right.set_ylim(0, 1)
    right.set_ylabel("accuracy")
    right.set_title("accuracy at the final evaluation\n(mean over seeds, bars: 95% interval over rows)", fontsize=10)
    if any_accuracy:
        right.legend(fontsize=8, frameon=False)
    else:
        right.text(0.5, 0.5, "no accuracy recorded", ha="center", va="center", transform=right.transAxes)
    return _save(fig, path)


def accuracy_cells(a: dict[str, Any] | None) -> tuple[str, str]:
    """(mean over seeds with their min–max, 95% interval over rows with its method) for the report's table."""
    if a is None:
        return "–", "–"
    mean = f"{pct(a['mean'])} {a['metric']}"
    if a["min"] != a["max"]:
        mean += f" ({pct(a['min'])}–{pct(a['max'])})"
    if a.get("lo") is None:
        return mean, "–"
    return mean, f"[{pct(a['lo'])}, {pct(a['hi'])}] over {a['rows']} rows ({a['method']})"


def render_spectrum(summary: dict[str, Any], figure: str) -> str:
    """The markdown text of the spectrum report, from :func:`findings` (figure path relative to the report)."""
    lines = ["# The Rg spectrum study", ""]
    if summary["command"]:
        lines += ["Reproduce with:", "", "```", summary["command"], "```", ""]
    lines += [
        f"{len(summary['datasets'])} datasets, one `plw sweep` each. The claim these measurements are set next to: "
        f"{CLAIM} The findings below are this study's measurements, worded no stronger than they are.",
        "",
        "Every number is at the **final evaluation** of each finished run (a rule declared before looking, not the "
        "best of several evaluations). Completion loss: mean held-out NLL per completion token, mean over seeds "
        "[min–max over seeds]. Accuracy: mean over seeds (min–max), and its interval with the evaluation row as the "
        f"unit: {ROW_INTERVAL}. Rg: mean completion / prompt tokens of the evaluation rows as trained (chat template "
        "included).",
        "",
        f"![completion loss and accuracy by PLW, one line per dataset]({figure})",
        "",
        "| dataset | Rg | PLW | seeds | completion loss, mean [min–max] | accuracy, mean over seeds "
        "| accuracy, 95% interval over rows |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for d in summary["datasets"]:
        for s in d["plw"]:
            loss = s["completion_loss"]
            mean, pooled_cell = accuracy_cells(s["accuracy"])
            lines.append(
                f"| {d['name']} | {rg_text(d['rg'])} | {format_plw(s['plw'])} | {len(s['seeds'])} | "
                f"{loss['mean']:.4f} [{loss['min']:.4f}–{loss['max']:.4f}] | {mean} | {pooled_cell} |"
            )
    lines += [
        "",
        "## Findings, each PLW against PLW 1",
        "",
        f"Completion loss is compared by a {ROW_LOSS_TEST} where the runs recorded per-row losses, else seed by seed "
        "(the same seed: the same data order and adapter initialisation); "
        f"accuracy by an {ROW_TEST}, on the final evaluation's rows; a direction is named only when p < {ALPHA:g}. "
        "An accuracy at one value in every run is called not informative, with no p.",
        "",
    ]
    lines += [
        f"- **{d['name']}** (Rg {rg_text(d['rg'])}): {d['finding']}. Measured with {d['scope']}."
        for d in summary["datasets"]
    ]
    pairwise = [(d, c) for d in summary["datasets"] for c in d.get("pairwise") or []]
    if pairwise:
        lines += ["", "## The other PLWs against each other", ""]
        lines += [f"- **{d['name']}**: {c['finding']}." for d, c in pairwise]
    left_out = [p for d in summary["datasets"] for p in d["left_out"]]
    if left_out:
        lines += [
            "",
            "Left out (not finished, trained on a PLW schedule, or no completion loss at the last evaluation): "
            + ", ".join(left_out)
            + ".",
        ]
    return "\n".join(lines) + "\n"


def default_out(sweep_dirs: Sequence[str | Path]) -> Path:
    """The sweep folders' common parent (``docs/results/spectrum`` for its sweeps)."""
    parents = [os.path.normpath(Path(d).parent) for d in sweep_dirs]
    try:
        return Path(os.path.commonpath(parents))
    except ValueError:  # absolute and relative paths mixed
        return Path(os.path.commonpath([os.path.abspath(p) for p in parents]))


def spectrum_command(
    sweep_dirs: Sequence[str | Path], out: str | Path | None, findings_path: str | Path | None
) -> str:
    """The command line that reproduces a spectrum report."""
    parts = ["plw", "spectrum", *map(str, sweep_dirs)]
    if out is not None:
        parts += ["--out", str(out)]
    if findings_path is not None:
        parts += ["--findings", str(findings_path)]
    return shlex.join(parts)


def write_spectrum(
    sweep_dirs: Sequence[str | Path],
    out_dir: str | Path | None = None,
    command: str | None = None,
    findings_path: str | Path | None = None,
) -> Path:
    """Write ``spectrum.png``, ``report.md`` and ``findings.json`` into ``out_dir`` (default: :func:`default_out`),
    and the findings also to ``findings_path`` when given; return the report's path."""
    datasets = load_spectrum(sweep_dirs)
    out = Path(out_dir) if out_dir is not None else default_out(sweep_dirs)
    report = out / "report.md"
    summary = findings(datasets, report, command)
    plot_spectrum(datasets, out / "spectrum.png")
    atomic_write_json(out / "findings.json", summary)
    if findings_path is not None:
        atomic_write_json(findings_path, summary)
    atomic_write_text(report, render_spectrum(summary, "spectrum.png"))
    return report
