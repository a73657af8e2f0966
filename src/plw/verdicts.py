"""Verdicts on the seed article's claims about the prompt-loss-weight, from the runs of one sweep.

Each claim gets a word that matches its evidence: *supported* or *contradicted* when a test rejects "no difference"
at ``ALPHA`` (the direction then says which), *inconclusive* when it does not, *not informative* when the accuracy
is the same value in every run (0% everywhere tells nothing apart), and *not measured* when the sweep lacks what the
claim needs. Accuracy comparisons are paired on the same evaluation rows (per-row outcomes in
``predictions.jsonl``) with the row as the unit: each row's outcome is its mean over the matched seeds, and the test
is :data:`plw.uncertainty.ROW_TEST` (:func:`plw.uncertainty.compare_rows`).

The claims (Huerta-Enochian & Ko 2024, and the article behind this project):

* (a) at PLW 1, stopping at the full-loss minimum gives lower accuracy than stopping at the completion-loss minimum;
* (b) completion loss tracks accuracy better than full loss does (rank correlation over evaluations, per run);
* (c) a smaller PLW reaches a given accuracy in fewer steps: steps to a target declared before the runs
  (:func:`declared_target`), interpolated between evaluations, with at least ``MIN_EVALUATIONS`` per run;
* (d) a smaller PLW ends more accurate (at the completion-loss checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .analysis import Run, accuracy_key, argbest, checkpoint_lines, group_by_plw
from .uncertainty import (
    ROW_TEST,
    LossComparison,
    Paired,
    RowComparison,
    binomial_two_sided,
    compare_row_losses,
    compare_rows,
    p_text,
    paired,
    spearman,
)

ALPHA = 0.05
# Claim (c): the target is declared before the runs, from the untrained evaluation alone: half-way from the
# untrained accuracy u to 100%, u + TARGET_SHARE * (1 - u) (0% untrained -> 50%; 25% -> 62.5%).
TARGET_SHARE = 0.5
MIN_EVALUATIONS = 8  # claim (c): fewer evaluations per run cannot place the crossing of a target
TARGET_RULE = (
    f"the target accuracy is declared before the runs: {TARGET_SHARE:g} of the way from the untrained accuracy "
    "(step-0 evaluation, mean over runs) to 100%; a run's steps to it are interpolated linearly between the "
    f"evaluations around its first crossing; it needs at least {MIN_EVALUATIONS} evaluations per run"
)
MCNEMAR = ROW_TEST  # the name earlier callers used for the paired test


@dataclass(frozen=True)
class Verdict:
    claim: str
    statement: str
    verdict: str
    evidence: str
    test: str


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def interval(bounds: tuple[float, float]) -> str:
    return f"[{pct(bounds[0])}, {pct(bounds[1])}]"


def rows_text(c: RowComparison | LossComparison) -> str:
    """``100 rows x 3 seeds`` (rows are the unit; seeds are nested in them) or ``100 rows, one seed``."""
    return f"{c.rows} rows x {c.seeds} seeds" if c.seeds > 1 else f"{c.rows} rows, one seed"


def describe(c: RowComparison, name_a: str, name_b: str) -> str:
    """``A 95.3% [..] vs B 51.7% [..] on 100 rows x 3 seeds; difference +43.7 points [..]; rows better for A: x,
    for B: y; row-level p = ...``; a metric with one value everywhere is called not informative, with no p."""
    if not c.informative:
        return (
            f"not informative: {pct(c.mean_a)} for {name_a} and {pct(c.mean_b)} for {name_b} on every one of "
            f"{rows_text(c)}, so this metric tells nothing apart"
        )
    lo, hi = c.difference_interval
    return (
        f"{name_a} {pct(c.mean_a)} {interval(c.interval_a)} vs {name_b} {pct(c.mean_b)} {interval(c.interval_b)} "
        f"on {rows_text(c)}; difference {100 * c.difference:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}]; "
        f"rows better for {name_a}: {c.a_better}, for {name_b}: {c.b_better}{per_seed_text(c)}; "
        f"row-level p = {c.p_value:.2g}"
    )


def per_seed_text(c: RowComparison) -> str:
    """``; right per seed: 15 vs 12, 23 vs 12`` with several seeds (so one seed carrying a result shows), else ``""``."""
    if c.seeds < 2:
        return ""
    return "; right per seed: " + ", ".join(f"{a:g} vs {b:g}" for a, b in c.per_seed)


def decide(c: RowComparison | None, a_better_supports: bool = True) -> str:
    """Supported / contradicted when the row-level test rejects equality, by the direction; not informative when
    the metric is one value everywhere; else inconclusive."""
    if c is None or c.rows == 0:
        return "inconclusive"
    if not c.informative:
        return "not informative"
    if c.p_value >= ALPHA or c.mean_a == c.mean_b:
        return "inconclusive"
    return "supported" if (c.mean_a > c.mean_b) == a_better_supports else "contradicted"


def paired_at(run_a: Run, step_a: int, run_b: Run, step_b: int, acc: str | None) -> Paired | None:
    """One seed's discordant counts (:class:`plw.uncertainty.Paired`) at two evaluations; None without outcomes."""
    a, b = run_a.outcomes(step_a, acc), run_b.outcomes(step_b, acc)
    return paired(a, b) if a is not None and b is not None else None


def compare_at(picks: list[tuple[Run, int, Run, int]], acc: str | None) -> RowComparison | None:
    """Row-level comparison of A and B over matched seeds, each pick ``(run_a, step_a, run_b, step_b)`` one seed;
    None when a pick has no per-row outcomes."""
    a_by_seed, b_by_seed = [], []
    for run_a, step_a, run_b, step_b in picks:
        a, b = run_a.outcomes(step_a, acc), run_b.outcomes(step_b, acc)
        if a is None or b is None:
            return None
        a_by_seed.append(a)
        b_by_seed.append(b)
    return compare_rows(a_by_seed, b_by_seed) if picks else None


def matched_seeds(small: list[Run], large: list[Run]) -> list[tuple[Run, Run]]:
    """Pairs of runs with the same seed (same data order, same adapter init) from two PLW groups."""
    by_seed = {r.seed: r for r in large}
    return [(r, by_seed[r.seed]) for r in small if r.seed in by_seed]


def numeric_groups(runs: list[Run]) -> list[tuple[str, float, list[Run]]]:
    return [(label, float(plw), rs) for label, plw, rs in group_by_plw(runs) if isinstance(plw, (int, float))]


def claim_a(runs: list[Run], acc: str | None) -> Verdict:
    statement = "At PLW 1, stopping at the full-loss minimum gives lower accuracy than at the completion-loss minimum."
    group = next((rs for _, plw, rs in numeric_groups(runs) if plw == 1.0), None)
    if not group or not acc:
        return Verdict("a", statement, "not measured", "the sweep has no PLW 1 run with an accuracy", "none")
    picks, same = [], 0
    for run in group:
        choice = checkpoint_lines(run, acc)
        at_c, at_f = choice["completion-loss minimum"], choice["full-loss minimum"]
        if at_c is None or at_f is None:
            return Verdict("a", statement, "not measured", "a PLW 1 run lacks one of the two losses", "none")
        same += at_c["step"] == at_f["step"]
        picks.append((run, at_c["step"], run, at_f["step"]))
    if same == len(group):
        evidence = f"both rules pick the same evaluation in {same} of {len(group)} seeds, so they cannot differ here"
        return Verdict("a", statement, "inconclusive", evidence, "none: nothing to compare")
    c = compare_at(picks, acc)
    if c is None:
        return Verdict("a", statement, "not measured", "no per-row predictions at those checkpoints", "none")
    evidence = describe(c, "completion-loss minimum", "full-loss minimum")
    evidence += f"; both rules pick the same evaluation in {same} of {len(group)} seeds"
    return Verdict("a", statement, decide(c), evidence, ROW_TEST)


def claim_b(runs: list[Run], acc: str | None) -> Verdict:
    statement = "Completion loss tracks accuracy better than full loss (rank correlation over evaluations, per run)."
    if not acc:
        return Verdict("b", statement, "not measured", "no accuracy recorded", "none")
    better = worse = 0
    parts = []
    for label, _, group in group_by_plw(runs):
        for run in group:
            lines = [ln for ln in run.lines if all(k in ln for k in (acc, "eval_completion_loss", "eval_full_loss"))]
            accs = [ln[acc] for ln in lines]
            rho_c = spearman([-ln["eval_completion_loss"] for ln in lines], accs)
            rho_f = spearman([-ln["eval_full_loss"] for ln in lines], accs)
            if rho_c is None or rho_f is None:
                continue
            better += rho_c > rho_f
            worse += rho_c < rho_f
            parts.append(f"{label} seed {run.seed}: {rho_c:.2f} vs {rho_f:.2f}")
    if not parts:
        return Verdict("b", statement, "not measured", "too few evaluations for a rank correlation", "none")
    p_value = binomial_two_sided(better, better + worse)
    verdict = "inconclusive"
    if better + worse and p_value < ALPHA:
        verdict = "supported" if better > worse else "contradicted"
    evidence = (
        f"Spearman correlation of accuracy with minus completion loss vs with minus full loss: {'; '.join(parts)}. "
        f"Completion loss correlates better in {better} runs, worse in {worse}; p = {p_value:.3g}"
    )
    return Verdict("b", statement, verdict, evidence, "two-sided sign test over runs (ties dropped)")


def untrained_accuracy(runs: list[Run], acc: str) -> float | None:
    """Mean ``acc`` of the runs' step-0 evaluations; None when no run evaluated before training."""
    start = [
        ln[acc] for r in runs for ln in r.lines[:1] if ln.get("step") == 0 and isinstance(ln.get(acc), float | int)
    ]
    return sum(start) / len(start) if start else None


def declared_target(untrained: float) -> float:
    """Claim (c)'s target (:data:`TARGET_RULE`), from the untrained accuracy alone, so it is fixed before any
    training result is seen."""
    return untrained + TARGET_SHARE * (1 - untrained)


def steps_to(run: Run, acc: str, target: float) -> float | None:
    """Optimizer steps until ``acc`` first reaches ``target``, interpolated linearly between the evaluation below
    it and the first at or above it; None when no evaluation reaches it."""
    previous = None
    for line in run.lines:
        value = line.get(acc)
        if not isinstance(value, (int, float)):
            continue
        step = float(line["step"])
        if value >= target:
            if previous is None or previous[1] >= value:
                return step
            s0, v0 = previous
            return s0 + (target - v0) / (value - v0) * (step - s0)
        previous = (step, float(value))
    return None


def _mean_acc_by_step(group: list[Run], acc: str) -> dict[int, float]:
    steps: dict[int, list[float]] = {}
    for run in group:
        for line in run.lines:
            if isinstance(line.get(acc), (int, float)):
                steps.setdefault(int(line["step"]), []).append(line[acc])
    return {s: sum(v) / len(v) for s, v in sorted(steps.items()) if len(v) == len(group)}


def _steps_text(step: float | None, budget: int) -> str:
    return f"{step:.1f}" if step is not None else f"not within {budget}"


def claim_c(runs: list[Run], acc: str | None) -> Verdict:
    """Claim (c), measured as steps to the declared target (:data:`TARGET_RULE`) in every matched seed. The verdict
    also needs, at the first evaluation where the leading PLW's mean reaches the target, a row-level test showing
    the other behind; when that evaluation is the final one, that test is (d)'s comparison and is not counted
    twice."""
    groups = numeric_groups(runs)
    statement = "A smaller PLW reaches a given accuracy in fewer steps."
    if not acc or len(groups) < 2:
        return Verdict("c", statement, "not measured", "needs two PLWs with an accuracy", "none")
    (large_label, _, large), (small_label, _, small) = groups[0], groups[-1]
    statement = f"A smaller PLW reaches a given accuracy in fewer steps ({small_label} vs {large_label})."
    pairs = matched_seeds(small, large)
    evaluations = (
        min(sum(isinstance(ln.get(acc), (int, float)) for ln in r.lines) for pair in pairs for r in pair)
        if pairs
        else 0
    )
    if evaluations < MIN_EVALUATIONS:
        evidence = (
            f"steps to a target are not measured: {evaluations} evaluations per run, fewer than the "
            f"{MIN_EVALUATIONS} needed to place the crossing of a target"
        )
        return Verdict("c", statement, "not measured", evidence, "none")
    untrained = untrained_accuracy(runs, acc)
    if untrained is None:
        evidence = "no untrained (step-0) evaluation, so no target could be declared before the runs"
        return Verdict("c", statement, "not measured", evidence, "none")
    target = declared_target(untrained)
    budget = max(int(r.lines[-1]["step"]) for pair in pairs for r in pair)
    fewer = more = 0
    parts = []
    inf = float("inf")
    for s_run, l_run in pairs:
        s_step, l_step = steps_to(s_run, acc, target), steps_to(l_run, acc, target)
        s_val, l_val = (s_step if s_step is not None else inf), (l_step if l_step is not None else inf)
        fewer += s_val < l_val
        more += s_val > l_val
        parts.append(f"seed {s_run.seed}: {_steps_text(s_step, budget)} vs {_steps_text(l_step, budget)}")
    evidence = (
        f"target {pct(target)}, declared from the untrained {pct(untrained)}; optimizer steps to reach it, "
        f"{small_label} vs "
        f"{large_label}: {'; '.join(parts)}"
    )
    test = f"steps to the declared target in every matched seed, and at the leader's crossing the {ROW_TEST}"
    verdict = "inconclusive"
    for leader, other, count, supports in ((small, large, fewer, True), (large, small, more, False)):
        if count != len(pairs):
            continue
        reached = [s for s, v in _mean_acc_by_step(leader, acc).items() if v >= target]
        if not reached:
            continue
        step = reached[0]
        if all(step >= int(r.lines[-1]["step"]) for pair in pairs for r in pair):
            evidence += (
                f". The leader's mean reaches the target only at the final evaluation (step {step}), where the "
                "row-level test would be claim (d)'s comparison; it is not counted twice"
            )
            break
        c = compare_at([(a, step, b, step) for a, b in matched_seeds(leader, other)], acc)
        names = (small_label, large_label) if supports else (large_label, small_label)
        if c is not None:
            evidence += f". At step {step}: " + describe(c, *names)
            if decide(c) == "supported":
                verdict = "supported" if supports else "contradicted"
        break
    else:
        if fewer != len(pairs) and more != len(pairs):
            evidence += f". Neither PLW reaches it first in every seed ({fewer} vs {more})"
    return Verdict("c", statement, verdict, evidence, test)


def claim_d(runs: list[Run], acc: str | None) -> Verdict:
    groups = numeric_groups(runs)
    if not acc or len(groups) < 2:
        statement = "A smaller PLW ends more accurate."
        return Verdict("d", statement, "not measured", "needs two PLWs with an accuracy", "none")
    (large_label, _, large), (small_label, _, small) = groups[0], groups[-1]
    statement = (
        f"A smaller PLW ends more accurate, at the completion-loss checkpoint ({small_label} vs {large_label})."
    )
    picks = [
        (s, argbest(s.lines, "eval_completion_loss")["step"], g, argbest(g.lines, "eval_completion_loss")["step"])
        for s, g in matched_seeds(small, large)
    ]
    c = compare_at(picks, acc)
    if c is None:
        return Verdict("d", statement, "not measured", "no per-row predictions to pair", "none")
    return Verdict("d", statement, decide(c), describe(c, small_label, large_label), ROW_TEST)


def describe_loss(c: LossComparison, name_a: str, name_b: str) -> str:
    """``PLW 0 0.512 [..] vs PLW 1 0.734 [..] mean completion loss on 100 rows x 3 seeds; difference -0.222 [..];
    rows lower for PLW 0: 80, for PLW 1: 20; row-level p = ...`` (rows are counted, not seeds: a loss is not right
    or wrong)."""
    lo, hi = c.difference_interval
    return (
        f"{name_a} {c.mean_a:.4f} [{c.interval_a[0]:.4f}, {c.interval_a[1]:.4f}] vs {name_b} {c.mean_b:.4f} "
        f"[{c.interval_b[0]:.4f}, {c.interval_b[1]:.4f}] mean completion loss on {rows_text(c)}; difference "
        f"{c.difference:+.4f} [{lo:+.4f}, {hi:+.4f}]; rows lower for {name_a}: {c.a_lower}, for {name_b}: "
        f"{c.b_lower}; row-level {p_text(c.p_value)}"
    )


def decide_loss(c: LossComparison | None) -> str:
    """``lower`` / ``higher`` (A's completion loss against B's) when the row-level test rejects equality at
    :data:`ALPHA`, ``not distinguishable`` when it does not, ``not measured`` without per-row losses."""
    if c is None or c.rows == 0:
        return "not measured"
    if c.p_value >= ALPHA or c.mean_a == c.mean_b:
        return "not distinguishable"
    return "lower" if c.mean_a < c.mean_b else "higher"


def losses_against_largest(runs: list[Run], rule: str = "final") -> list[tuple[str, str, LossComparison]]:
    """Every PLW against the largest one on the per-row completion loss (``predictions.jsonl``) at ``rule``'s
    checkpoint, over matched seeds; pairs without per-row losses are left out."""
    groups = numeric_groups(runs)
    if len(groups) < 2:
        return []
    large_label, _, large = groups[0]
    out = []
    for label, _, group in groups[1:]:
        a_by_seed, b_by_seed = [], []
        for s, g in matched_seeds(group, large):
            a_line, b_line = checkpoint_lines(s, None)[rule], checkpoint_lines(g, None)[rule]
            a = s.row_losses(a_line["step"]) if a_line else None
            b = g.row_losses(b_line["step"]) if b_line else None
            if a is None or b is None:
                break
            a_by_seed.append(a)
            b_by_seed.append(b)
        else:
            if a_by_seed:
                out.append((label, large_label, compare_row_losses(a_by_seed, b_by_seed)))
    return out


def compare_groups(a: list[Run], b: list[Run], acc: str, rule: str) -> RowComparison | None:
    """Two PLW groups paired on rows at ``rule``'s checkpoint over their matched seeds; None without per-row
    outcomes or matched seeds."""
    picks = []
    for s, g in matched_seeds(a, b):
        line_a, line_b = checkpoint_lines(s, acc)[rule], checkpoint_lines(g, acc)[rule]
        if not (line_a and line_b):
            return None
        picks.append((s, line_a["step"], g, line_b["step"]))
    return compare_at(picks, acc)


def paired_against_largest(
    runs: list[Run], acc: str | None, rule: str = "completion-loss minimum"
) -> list[tuple[str, str, RowComparison]]:
    """Every PLW against the largest one, paired on rows at ``rule``'s checkpoint over matched seeds."""
    groups = numeric_groups(runs)
    if not acc or len(groups) < 2:
        return []
    large_label, _, large = groups[0]
    out = []
    for label, _, group in groups[1:]:
        c = compare_groups(group, large, acc, rule)
        if c is not None:
            out.append((label, large_label, c))
    return out


@dataclass(frozen=True)
class Ordering:
    """The PLWs ranked by mean accuracy at one checkpoint rule, and the most accurate one against each other."""

    ranked: list[tuple[str, float]]  # (label, mean accuracy over seeds), best first
    against_best: list[tuple[str, RowComparison]]  # every other PLW: (label, best vs it), in ranked order

    @property
    def best(self) -> str:
        return self.ranked[0][0]

    def tied_with_best(self) -> list[str]:
        """The PLWs the row-level test cannot tell apart from the best (p >= ALPHA, or a metric equal everywhere)."""
        return [label for label, c in self.against_best if not c.informative or c.p_value >= ALPHA]


def ordering(runs: list[Run], acc: str | None, rule: str = "final") -> Ordering | None:
    """Rank the PLWs (matched seeds, per-row outcomes) by accuracy at ``rule``'s checkpoint and pair the most
    accurate with every other; ties in the mean keep the larger PLW first. None with fewer than two PLWs or
    without per-row outcomes."""
    groups = numeric_groups(runs)
    if not acc or len(groups) < 2:
        return None
    means = []
    for label, _, group in groups:
        values = [(checkpoint_lines(r, acc)[rule] or {}).get(acc) for r in group]
        if any(not isinstance(v, (int, float)) for v in values):
            return None
        means.append((label, sum(values) / len(values), group))
    ranked = sorted(means, key=lambda m: -m[1])  # stable: equal means keep the larger PLW first
    best_group = ranked[0][2]
    against = []
    for label, _, group in ranked[1:]:
        c = compare_groups(best_group, group, acc, rule)
        if c is None:
            return None
        against.append((label, c))
    return Ordering([(label, mean) for label, mean, _ in ranked], against)


def verdicts(runs: list[Run]) -> list[Verdict]:
    """The four verdicts for a sweep's runs."""
    acc = accuracy_key([line for r in runs for line in r.lines])
    return [claim_a(runs, acc), claim_b(runs, acc), claim_c(runs, acc), claim_d(runs, acc)]


__all__: list[Any] = [
    "Verdict",
    "verdicts",
    "paired_against_largest",
    "Ordering",
    "ordering",
    "losses_against_largest",
    "describe",
    "describe_loss",
    "ALPHA",
    "MCNEMAR",
    "ROW_TEST",
]
