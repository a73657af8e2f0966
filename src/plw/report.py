"""The sweep report: one ``report.md`` per sweep — what it shows, accuracy by stopping rule with intervals, paired
comparisons, verdicts on the article's claims, the data's Rg and the figures.

The evaluation row is the unit (:mod:`plw.uncertainty`): with one seed an accuracy carries its 95% Wilson interval;
with several it is the mean over seeds with the seeds' min–max, and its interval is a bootstrap over rows that keeps
each row's seeds together. Paired comparisons are row-level tests, and the report names both methods. It prints only
what was measured: no untrained accuracy without a step-0 evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .analysis import (
    OPTIMISTIC,
    RULES,
    Run,
    group_by_plw,
    load_run,
    metric_name,
    rows_scored,
    rule_accuracy,
    run_row,
    sort_runs,
)
from .runio import atomic_write_text
from .verdicts import untrained_accuracy


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def find_runs(sweep_dir: str | Path) -> list[Run]:
    """Every run folder (one with ``metrics.jsonl``) directly inside ``sweep_dir`` or one level down (seeds:
    ``plw=V/seed=S``), ordered by PLW."""
    sweep_dir = Path(sweep_dir)
    folders = []
    for p in sorted(sweep_dir.iterdir()):
        if (p / "metrics.jsonl").exists():
            folders.append(p)
        elif p.is_dir():
            folders += [c for c in sorted(p.iterdir()) if (c / "metrics.jsonl").exists()]
    return sort_runs([load_run(p) for p in folders])


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


def format_accuracy(a: dict[str, Any] | None, seeds: int) -> str:
    if a is None:
        return "–"
    text = _pct(a["mean"])
    if a["lo"] is not None:
        text += f" [{_pct(a['lo'])}, {_pct(a['hi'])}]"
    if seeds > 1:
        text += f" (seeds {_pct(a['min'])}–{_pct(a['max'])})"
    return text


def accuracy_table(runs: list[Run], acc: str) -> list[str]:
    groups = group_by_plw(runs)
    seeds = max(len(g) for _, _, g in groups)
    lines = [
        "| PLW | seeds | " + " | ".join(f"at {r}" for r in RULES) + f" | {OPTIMISTIC} | untrained |",
        "|---|---|" + "---|" * (len(RULES) + 2),
    ]
    for label, _, group in groups:
        cells = [format_accuracy(rule_accuracy(group, acc, rule), seeds) for rule in (*RULES, OPTIMISTIC)]
        untrained = _pct(untrained_accuracy(group, acc))
        lines.append(f"| {label.removeprefix('PLW ')} | {len(group)} | " + " | ".join(cells) + f" | {untrained} |")
    return lines


def headline(runs: list[Run], acc: str) -> list[str]:
    """What the sweep shows, in plain words, from the final accuracies and the paired test."""
    from .verdicts import ALPHA, describe, paired_against_largest

    groups = group_by_plw(runs)
    out = []
    for label, _, group in groups:
        a = rule_accuracy(group, acc, "final")
        b = rule_accuracy(group, acc, "completion-loss minimum")
        untrained = untrained_accuracy(group, acc)
        start = f" (untrained: {_pct(untrained)})" if untrained is not None else ""
        if a:
            out.append(
                f"- {label}: final {metric_name(acc)} {format_accuracy(a, len(group))}; at the "
                f"completion-loss minimum {format_accuracy(b, len(group))}{start}."
            )
    for small, large, c in paired_against_largest(runs, acc, "final"):
        if not c.informative:
            out.append(f"- At the end of training, {small} vs {large}: {describe(c, small, large)}.")
        elif c.p_value < ALPHA:
            word = "more" if c.mean_a > c.mean_b else "less"
            out.append(
                f"- At the end of training {small} is {word} accurate than {large}: {describe(c, small, large)}."
            )
        else:
            out.append(
                f"- At the end of training {small} and {large} cannot be told apart at this sample size: "
                f"{describe(c, small, large)}."
            )
    return out


def ordering_lines(runs: list[Run], acc: str, rule: str = "final", o: Any = None) -> list[str]:
    """The answer to "how much": the PLWs ranked by accuracy at ``rule`` with their intervals, and the most
    accurate one against every other by the row-level paired test (:func:`plw.verdicts.ordering`; pass ``o`` when
    the caller already computed it for these runs)."""
    from .verdicts import ALPHA, ordering, rows_text

    o = o if o is not None else ordering(runs, acc, rule)
    if o is None:
        return []
    groups = {label: group for label, _, group in group_by_plw(runs)}
    ranked = ", ".join(
        f"{label} {format_accuracy(rule_accuracy(groups[label], acc, rule), len(groups[label]))}"
        for label, _ in o.ranked
    )
    sizes = {rows_text(c) for _, c in o.against_best}
    # Groups with different seeds are paired on the seeds they share: then each comparison names its own size.
    own = (lambda c: f", {rows_text(c)}") if len(sizes) > 1 else (lambda c: "")
    tied = [
        f"{label} (p = {c.p_value:.2g}{own(c)})" if c.informative else f"{label} (the same outcome on every row)"
        for label, c in o.against_best
        if label in o.tied_with_best()
    ]
    worse = [
        f"{label} ({100 * c.difference:+.1f} points [{100 * c.difference_interval[0]:+.1f}, "
        f"{100 * c.difference_interval[1]:+.1f}], p = {c.p_value:.2g}{own(c)})"
        for label, c in o.against_best
        if label not in o.tied_with_best()
    ]
    paired_on = f" on {sizes.pop()}" if len(sizes) == 1 else " on the seeds each pair shares"
    text = f"- **Ordering** by {rule} {metric_name(acc)}, most accurate first: {ranked}. Paired{paired_on}, "
    if tied:
        text += f"the most accurate, {o.best}, cannot be told apart (p >= {ALPHA:g}) from {', '.join(tied)}"
        text += f"; it is more accurate than {', '.join(worse)}." if worse else "."
    else:
        text += f"the most accurate, {o.best}, is more accurate than every other: {', '.join(worse)}."
    return [text]


def loss_lines(runs: list[Run]) -> list[str]:
    """One line per PLW against the largest on the per-row completion loss at the final evaluation (row-level test,
    :func:`plw.verdicts.losses_against_largest`); none without per-row losses."""
    from .verdicts import decide_loss, describe_loss, losses_against_largest

    out = []
    for small, large, c in losses_against_largest(runs, "final"):
        word = decide_loss(c)
        if word == "not distinguishable":
            text = f"{small} and {large} cannot be told apart on completion loss"
        else:
            text = f"{small} has {word} completion loss than {large}"
        out.append(f"- At the end of training {text}: {describe_loss(c, small, large)}.")
    return out


def render_report(runs: list[Run], figures: dict[str, str], command: str | None = None) -> str:
    """The markdown text of a sweep report (figure paths relative to the report)."""
    from .uncertainty import ROW_INTERVAL, ROW_LOSS_TEST, ROW_TEST
    from .verdicts import ALPHA, TARGET_RULE, paired_against_largest, verdicts

    rows = [run_row(r) for r in runs]
    acc = next((r["accuracy_metric"] for r in rows if r["accuracy_metric"]), None)
    acc_name = metric_name(acc) if acc else "accuracy"
    name = runs[0].path.parent.name if runs else "sweep"
    if runs and runs[0].path.parent.name.startswith("plw="):
        name = runs[0].path.parent.parent.name
    groups = group_by_plw(runs)
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    lines = [f"# PLW sweep: {name}", ""]
    if command:
        lines += ["Reproduce with:", "", "```", command, "```", ""]
    n_rows = rows_scored(runs[0].lines[-1], acc) if runs and runs[0].lines and acc else None
    lines += [
        f"{len(groups)} PLW values x {max(len(g) for _, _, g in groups)} seed(s) ({', '.join(map(str, seeds))}); "
        f"accuracy is `{acc_name}` on {n_rows if n_rows is not None else 'the'} validation rows. "
        "The evaluation row is the unit: a row's seeds are not independent rows. "
        f"Intervals: {ROW_INTERVAL}; with several seeds the seeds' min–max follows. "
        f"Paired comparisons: {ROW_TEST}.",
        "",
    ]
    losses = loss_lines(runs)
    if acc or losses:
        opening = [*ordering_lines(runs, acc), *headline(runs, acc)] if acc else []
        lines += ["## What this sweep shows", "", *opening, *losses, ""]
    if losses:
        lines += ["## Completion loss per row, paired, at the final evaluation", "", f"Test: {ROW_LOSS_TEST}.", ""]
        lines += [f"- {line.removeprefix('- At the end of training ')}" for line in losses]
        lines.append("")
    if acc:
        k = max(len(r.lines) for r in runs)
        best = (
            "With one evaluation per run it is the final accuracy."
            if k == 1
            else f"The best accuracy over all evaluations is optimistic — it picks the maximum of {k} noisy "
            "measurements — and is shown for reference only."
        )
        lines += [
            "## Accuracy by checkpoint rule",
            "",
            "The rules are declared before looking: the evaluation with the lowest completion loss, the one with the "
            f"lowest full-sequence loss (usual practice), and the last one. {best}",
            "",
            *accuracy_table(runs, acc),
            "",
        ]
        comparisons = paired_against_largest(runs, acc)
        if comparisons:
            lines += ["## Paired comparisons at the completion-loss checkpoint", "", f"Test: {ROW_TEST}.", ""]
            lines += [f"- {small} vs {large}: {describe_pair(p, small, large)}" for small, large, p in comparisons]
            lines.append("")
        lines += [
            "## Verdicts on the article's claims",
            "",
            f'A verdict is *supported* or *contradicted* only when its test rejects "no difference" at p < {ALPHA:g}; '
            "*not informative* when the accuracy is one value in every run; *not measured* when the sweep lacks "
            f"what the claim needs. For (c), {TARGET_RULE}.",
            "",
        ]
        for v in verdicts(runs):
            lines += [f"- **({v.claim}) {v.verdict}.** {v.statement} {v.evidence}. Test: {v.test}.", ""]
    lines += [
        "## Per run",
        "",
        "| PLW | seed | min completion loss | at epoch | accuracy there | min full loss at epoch | accuracy there "
        "| final accuracy | best accuracy (optimistic) | accuracy at start |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run, r in zip(runs, rows, strict=True):
        final = run.lines[-1].get(acc) if run.lines and acc else None
        lines.append(
            f"| {r['label']} | {run.seed} | {_num(r['min_completion_loss'])} | {_num(r['min_completion_loss_epoch'], 2)} | "
            f"{_pct(r['acc_at_min_completion_loss'])} | {_num(r['min_full_loss_epoch'], 2)} | "
            f"{_pct(r['acc_at_min_full_loss'])} | {_pct(final)} | {_pct(r['best_accuracy'])} | "
            f"{_pct(r['initial_accuracy'])} |"
        )
    lines.append("")
    lines += rg_section(runs)
    lines += ["## Figures", ""]
    for title, rel in figures.items():
        lines += [f"### {title}", "", f"![{title}]({rel})", ""]
    return "\n".join(lines)


def describe_pair(p: Any, small: str, large: str) -> str:
    from .verdicts import describe

    return describe(p, small, large)


def write_sweep_outputs(sweep_dir: str | Path, command: str | None = None) -> Path:
    """Draw the sweep figures and each run's figure, then write ``report.md``; return the report's path."""
    from .plots import plot_run, plot_sweep_best, plot_sweep_curves

    sweep_dir = Path(sweep_dir)
    if command is None and (sweep_dir / "sweep.json").exists():
        command = json.loads((sweep_dir / "sweep.json").read_text()).get("command")
    found = find_runs(sweep_dir)
    if not found:
        raise FileNotFoundError(f"no run folders with metrics.jsonl in {sweep_dir}")
    # Only finished runs: an unfinished run's last evaluation would pass for its final one.
    runs = [r for r in found if r.finished]
    unfinished = [r.path.relative_to(sweep_dir) for r in found if not r.finished]
    if not runs:
        raise FileNotFoundError(f"no finished runs in {sweep_dir} (not finished: {', '.join(map(str, unfinished))})")
    figures = {
        "Completion loss and accuracy by PLW": "plots/sweep_curves.png",
        "Accuracy by checkpoint rule, by PLW": "plots/sweep_best.png",
    }
    plot_sweep_curves(runs, sweep_dir / figures["Completion loss and accuracy by PLW"])
    plot_sweep_best(runs, sweep_dir / figures["Accuracy by checkpoint rule, by PLW"])
    for run in runs:
        rel = str(run.path.relative_to(sweep_dir) / "plots" / "losses.png")
        plot_run(run, sweep_dir / rel)
        figures[
            f"{run.label}{f' seed {run.seed}' if len(runs) > len(group_by_plw(runs)) else ''}: losses and accuracy"
        ] = rel
    report = sweep_dir / "report.md"
    text = render_report(runs, figures, command)
    if unfinished:
        note = f"Left out, not finished: {', '.join(f'`{p}`' for p in unfinished)}."
        title, rest = text.split("\n", 1)
        text = f"{title}\n\n{note}\n{rest}"
    atomic_write_text(report, text)
    return report
