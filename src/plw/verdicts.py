"""Verdicts on the seed article's claims about the prompt-loss-weight, from the runs of one sweep.

Each claim gets *supported*, *contradicted* or *inconclusive*, the numbers behind it and the test that decided.
Comparisons of accuracy are paired on the same validation rows (per-row outcomes in ``predictions.jsonl``) and
pooled over seeds: an exact McNemar test on the pooled discordant rows, two-sided at ``ALPHA``. A verdict other than
*inconclusive* needs that test (or a sign test over runs) to reject "no difference"; the direction of the
difference then says which.

The claims (Huerta-Enochian & Ko 2024, and the article behind this project):

* (a) at PLW 1, stopping at the full-loss minimum gives lower accuracy than stopping at the completion-loss minimum;
* (b) completion loss tracks accuracy better than full loss does (rank correlation over evaluations, per run);
* (c) a smaller PLW reaches a given accuracy in fewer steps;
* (d) a smaller PLW ends more accurate (at the completion-loss checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .analysis import Run, accuracy_key, argbest, checkpoint_lines, group_by_plw
from .uncertainty import Paired, binomial_two_sided, paired, spearman, wilson_interval

ALPHA = 0.05
TARGET_SHARE = 0.9  # claim (c): steps to reach this share of the best PLW's mean final accuracy
MCNEMAR = "exact McNemar test on the rows' paired outcomes, discordant rows pooled over seeds, two-sided"


@dataclass(frozen=True)
class Verdict:
    claim: str
    statement: str
    verdict: str
    evidence: str
    test: str


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def describe(p: Paired, name_a: str, name_b: str) -> str:
    """``A 81.0% [76.2, 85.1] vs B 62.3% [..] on N paired rows; only A right: x, only B right: y; p = ...``."""
    lo_a, hi_a = wilson_interval(p.correct_a, p.n)
    lo_b, hi_b = wilson_interval(p.correct_b, p.n)
    acc_a = p.correct_a / p.n if p.n else 0.0
    acc_b = p.correct_b / p.n if p.n else 0.0
    return (
        f"{name_a} {pct(acc_a)} [{pct(lo_a)}, {pct(hi_a)}] vs {name_b} {pct(acc_b)} [{pct(lo_b)}, {pct(hi_b)}] "
        f"on {p.n} paired rows (rows x seeds); right only for {name_a}: {p.only_a}, only for {name_b}: {p.only_b}; "
        f"p = {p.p_value:.3g}"
    )


def decide(p: Paired | None, a_better_supports: bool = True) -> str:
    """Supported / contradicted when the paired test rejects equality, by the direction; else inconclusive."""
    if p is None or p.n == 0 or p.p_value >= ALPHA or p.correct_a == p.correct_b:
        return "inconclusive"
    a_better = p.correct_a > p.correct_b
    return "supported" if a_better == a_better_supports else "contradicted"


def pooled(pairs: list[Paired | None]) -> Paired | None:
    present = [p for p in pairs if p is not None]
    if not present or len(present) < len(pairs):
        return None
    total = present[0]
    for p in present[1:]:
        total = total + p
    return total


def paired_at(run_a: Run, step_a: int, run_b: Run, step_b: int, acc: str | None) -> Paired | None:
    a, b = run_a.outcomes(step_a, acc), run_b.outcomes(step_b, acc)
    return paired(a, b) if a is not None and b is not None else None


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
        return Verdict("a", statement, "inconclusive", "the sweep has no PLW 1 run with an accuracy", "none")
    pairs, same = [], 0
    for run in group:
        picks = checkpoint_lines(run, acc)
        at_c, at_f = picks["completion-loss minimum"], picks["full-loss minimum"]
        if at_c is None or at_f is None:
            pairs.append(None)
            continue
        same += at_c["step"] == at_f["step"]
        pairs.append(paired_at(run, at_c["step"], run, at_f["step"], acc))
    p = pooled(pairs)
    if p is None:
        return Verdict("a", statement, "inconclusive", "no per-row predictions at those checkpoints", "none")
    evidence = describe(p, "completion-loss minimum", "full-loss minimum")
    evidence += f"; both rules pick the same evaluation in {same} of {len(group)} seeds"
    return Verdict("a", statement, decide(p), evidence, MCNEMAR)


def claim_b(runs: list[Run], acc: str | None) -> Verdict:
    statement = "Completion loss tracks accuracy better than full loss (rank correlation over evaluations, per run)."
    if not acc:
        return Verdict("b", statement, "inconclusive", "no accuracy recorded", "none")
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
        return Verdict("b", statement, "inconclusive", "too few evaluations for a rank correlation", "none")
    p_value = binomial_two_sided(better, better + worse)
    verdict = "inconclusive"
    if better + worse and p_value < ALPHA:
        verdict = "supported" if better > worse else "contradicted"
    evidence = (
        f"Spearman correlation of accuracy with minus completion loss vs with minus full loss: {'; '.join(parts)}. "
        f"Completion loss correlates better in {better} runs, worse in {worse}; p = {p_value:.3g}"
    )
    return Verdict("b", statement, verdict, evidence, "two-sided sign test over runs (ties dropped)")


def _first_step_reaching(run: Run, acc: str, target: float) -> int | None:
    for line in run.lines:
        if isinstance(line.get(acc), (int, float)) and line[acc] >= target:
            return int(line["step"])
    return None


def _mean_acc_by_step(group: list[Run], acc: str) -> dict[int, float]:
    steps: dict[int, list[float]] = {}
    for run in group:
        for line in run.lines:
            if isinstance(line.get(acc), (int, float)):
                steps.setdefault(int(line["step"]), []).append(line[acc])
    return {s: sum(v) / len(v) for s, v in sorted(steps.items()) if len(v) == len(group)}


def claim_c(runs: list[Run], acc: str | None) -> Verdict:
    groups = numeric_groups(runs)
    if not acc or len(groups) < 2:
        statement = "A smaller PLW reaches a given accuracy in fewer steps."
        return Verdict("c", statement, "inconclusive", "needs two PLWs with an accuracy", "none")
    (large_label, _, large), (small_label, _, small) = groups[0], groups[-1]
    statement = f"A smaller PLW reaches a given accuracy in fewer steps ({small_label} vs {large_label})."
    finals = {label: sum(r.lines[-1].get(acc, 0.0) for r in rs) / len(rs) for label, _, rs in groups}
    best_label = max(finals, key=finals.get)
    target = TARGET_SHARE * finals[best_label]
    start = max((ln[acc] for _, _, rs in groups for r in rs for ln in r.lines[:1] if ln.get("step") == 0), default=0.0)
    if target <= start:
        evidence = f"the target ({pct(target)}, {TARGET_SHARE:g} x the best mean final accuracy) is not above the untrained accuracy ({pct(start)})"
        return Verdict("c", statement, "inconclusive", evidence, "none: no PLW improved on the start")
    pairs = matched_seeds(small, large)
    fewer = more = 0
    parts = []
    for s_run, l_run in pairs:
        s_step, l_step = _first_step_reaching(s_run, acc, target), _first_step_reaching(l_run, acc, target)
        inf = float("inf")
        fewer += (s_step if s_step is not None else inf) < (l_step if l_step is not None else inf)
        more += (s_step if s_step is not None else inf) > (l_step if l_step is not None else inf)
        parts.append(
            f"seed {s_run.seed}: {s_step if s_step is not None else 'never'} vs "
            f"{l_step if l_step is not None else 'never'}"
        )
    evidence = (
        f"target {pct(target)} = {TARGET_SHARE:g} x the best mean final accuracy ({best_label}, {pct(finals[best_label])}); "
        f"optimizer steps to reach it, {small_label} vs {large_label}: {'; '.join(parts)}"
    )
    verdict = "inconclusive"
    for leader, other, count, supports in ((small, large, fewer, True), (large, small, more, False)):
        if not pairs or count != len(pairs):
            continue
        # At the first evaluation where the leading PLW's mean accuracy reaches the target, is the other behind?
        reached = [s for s, v in _mean_acc_by_step(leader, acc).items() if v >= target]
        if not reached:
            continue
        step = reached[0]
        p = pooled([paired_at(a, step, b, step, acc) for a, b in matched_seeds(leader, other)])
        names = (small_label, large_label) if supports else (large_label, small_label)
        if p is not None:
            evidence += f". At step {step}: " + describe(p, *names)
            if decide(p) == "supported":
                verdict = "supported" if supports else "contradicted"
    test = f"steps to the target in every seed, and at that step an {MCNEMAR}"
    return Verdict("c", statement, verdict, evidence, test)


def claim_d(runs: list[Run], acc: str | None) -> Verdict:
    groups = numeric_groups(runs)
    if not acc or len(groups) < 2:
        statement = "A smaller PLW ends more accurate."
        return Verdict("d", statement, "inconclusive", "needs two PLWs with an accuracy", "none")
    (large_label, _, large), (small_label, _, small) = groups[0], groups[-1]
    statement = (
        f"A smaller PLW ends more accurate, at the completion-loss checkpoint ({small_label} vs {large_label})."
    )
    p = pooled(
        [
            paired_at(
                s,
                argbest(s.lines, "eval_completion_loss")["step"],
                g,
                argbest(g.lines, "eval_completion_loss")["step"],
                acc,
            )
            for s, g in matched_seeds(small, large)
        ]
    )
    if p is None:
        return Verdict("d", statement, "inconclusive", "no per-row predictions to pair", "none")
    return Verdict("d", statement, decide(p), describe(p, small_label, large_label), MCNEMAR)


def paired_against_largest(
    runs: list[Run], acc: str | None, rule: str = "completion-loss minimum"
) -> list[tuple[str, str, Paired]]:
    """Every PLW against the largest one, paired on rows at ``rule``'s checkpoint, pooled over seeds."""
    groups = numeric_groups(runs)
    if not acc or len(groups) < 2:
        return []
    large_label, _, large = groups[0]
    out = []
    for label, _, group in groups[1:]:
        pairs = []
        for s, g in matched_seeds(group, large):
            a, b = checkpoint_lines(s, acc)[rule], checkpoint_lines(g, acc)[rule]
            pairs.append(paired_at(s, a["step"], g, b["step"], acc) if a and b else None)
        p = pooled(pairs)
        if p is not None:
            out.append((label, large_label, p))
    return out


def verdicts(runs: list[Run]) -> list[Verdict]:
    """The four verdicts for a sweep's runs."""
    acc = accuracy_key([line for r in runs for line in r.lines])
    return [claim_a(runs, acc), claim_b(runs, acc), claim_c(runs, acc), claim_d(runs, acc)]


__all__: list[Any] = ["Verdict", "verdicts", "paired_against_largest", "describe", "ALPHA", "MCNEMAR"]
