"""Uncertainty for accuracies measured on a finite validation set, with the evaluation row as the unit.

The seeds of one row share the row (its text, its difficulty): they are not independent rows. So with several seeds
each row is reduced to its mean outcome over seeds (:func:`row_means`), and

* an accuracy's interval is a percentile bootstrap over rows, a row's seeds kept together (:func:`row_bootstrap`);
  with one seed it is the Wilson interval (:func:`wilson_interval`);
* two settings are compared on the same rows by an exact paired sign-flip permutation test of the rows' mean
  differences (:func:`sign_flip_p`), with a row-bootstrap interval of the difference (:func:`compare_rows`). With
  one seed the test is the exact McNemar test.

Plain functions over counts and lists, used by the sweep report (:mod:`plw.report`), its verdicts
(:mod:`plw.verdicts`) and the spectrum study (:mod:`plw.spectrum`). Seeded and deterministic; the tests check them
against hand-computed cases and brute-force enumeration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); ``(0, 1)`` when ``n`` is 0.

    Unlike the normal approximation ``p ± z·sqrt(p(1-p)/n)`` it stays inside [0, 1] and does not collapse to a
    point at 0% or 100%, which matters for the small validation sets of CPU studies.
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, {n}], got {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # At 0 and n the bound on that side is exactly the observed share (rounding would put it a hair inside).
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair coin flips: twice the smaller tail, at most 1."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class Paired:
    """Two classifiers compared on the same rows of one seed: ``only_a`` rows right only for A, ``only_b`` only for
    B. Several seeds are not pooled into one of these (their rows are not independent): see :func:`compare_rows`."""

    n: int
    correct_a: int
    correct_b: int
    only_a: int
    only_b: int

    @property
    def p_value(self) -> float:
        """Exact McNemar test: under "equally accurate", each discordant row is a fair coin."""
        return binomial_two_sided(self.only_a, self.only_a + self.only_b)

    @property
    def difference(self) -> float:
        """Accuracy of A minus accuracy of B."""
        return (self.correct_a - self.correct_b) / self.n if self.n else 0.0


def paired(a: dict[int, int], b: dict[int, int]) -> Paired:
    """Compare per-row outcomes (row id -> 1 correct / 0 wrong) on the rows both have."""
    rows = sorted(set(a) & set(b))
    return Paired(
        n=len(rows),
        correct_a=sum(a[r] for r in rows),
        correct_b=sum(b[r] for r in rows),
        only_a=sum(1 for r in rows if a[r] and not b[r]),
        only_b=sum(1 for r in rows if b[r] and not a[r]),
    )


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson on average ranks); ``None`` when undefined (fewer than 3 points or a
    constant series)."""
    if len(x) != len(y):
        raise ValueError("x and y must have the same length")
    if len(x) < 3:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


# ---- the evaluation row as the unit ------------------------------------------------------------------------------

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
PERMUTATION_RESAMPLES = 100_000  # only when the differences are not multiples of 1 / seeds (Monte Carlo)
ROW_TEST = (
    "exact paired sign-flip permutation test over evaluation rows on each row's mean outcome over seeds, two-sided "
    "(with one seed: the exact McNemar test)"
)
ROW_INTERVAL = (
    f"95% percentile bootstrap over evaluation rows, each row's seeds kept together ({BOOTSTRAP_RESAMPLES:,} "
    f"resamples, seed {BOOTSTRAP_SEED}); with one seed, or where every row is right in all seeds or in none, the "
    "95% Wilson interval over rows"
)


def row_means(outcomes_by_seed: Sequence[dict[int, float]]) -> dict[int, float]:
    """Each row's mean outcome over seeds (one dict row id -> outcome per seed), on the rows every seed has."""
    if not outcomes_by_seed:
        return {}
    rows = set(outcomes_by_seed[0]).intersection(*outcomes_by_seed[1:])
    return {r: sum(o[r] for o in outcomes_by_seed) / len(outcomes_by_seed) for r in sorted(rows)}


def row_bootstrap(values: Sequence[float], seed: int = BOOTSTRAP_SEED, resamples: int = BOOTSTRAP_RESAMPLES):
    """95% percentile interval of the mean of ``values`` (one per row) resampled with replacement, rows as units."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return 0.0, 1.0
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


def interval_method(means: dict[int, float], seeds: int) -> str:
    """Which interval :func:`accuracy_interval` gives these rows: ``"Wilson"`` when the rows are 0/1 outcomes (one
    seed, or every row right in all seeds or in none), else ``"row bootstrap"``."""
    return "Wilson" if seeds == 1 or all(v in (0.0, 1.0) for v in means.values()) else "row bootstrap"


def accuracy_interval(means: dict[int, float], seeds: int) -> tuple[float, float]:
    """The 95% interval of an accuracy from its rows' mean outcomes over ``seeds`` seeds (:data:`ROW_INTERVAL`).

    Where every row is right in all seeds or in none, the seeds add nothing: the rows are 0/1 outcomes as with one
    seed, and get the Wilson interval (a bootstrap would collapse to a point at 0% or 100%). Otherwise the row
    bootstrap."""
    values = list(means.values())
    if interval_method(means, seeds) == "Wilson":
        return wilson_interval(round(sum(values)), len(values))
    return row_bootstrap(values)


def _scaled(diffs: Sequence[float], scale: int) -> list[int] | None:
    """``diffs * scale`` as integers, or None when some difference is not a multiple of ``1 / scale``."""
    out = [round(d * scale) for d in diffs]
    return out if all(abs(d * scale - k) < 1e-9 for d, k in zip(diffs, out, strict=True)) else None


def sign_flip_p(diffs: Sequence[float], scale: int = 1, seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip permutation test: under "no difference" each row's difference is
    as likely negative as positive, so every one of the 2^n sign patterns is equally likely; p is the share whose
    sum is at least as far from 0 as the observed one.

    When every difference is a multiple of ``1 / scale`` (mean correctness over ``scale`` seeds) the distribution is
    computed exactly, by convolution over the rows' integer magnitudes (in floating point: fast for thousands of
    rows); otherwise (e.g. losses) it is estimated from
    :data:`PERMUTATION_RESAMPLES` seeded draws, ``(1 + hits) / (1 + draws)``.
    """
    scaled = _scaled(diffs, scale)
    if scaled is not None:
        magnitudes = [abs(k) for k in scaled if k]
        observed = abs(sum(scaled))
        if not magnitudes or observed == 0:
            return 1.0
        total = sum(magnitudes)
        probability = np.zeros(2 * total + 1)  # probability[t + total]: P(sum = t) over the sign patterns so far
        probability[total] = 1.0
        for m in magnitudes:  # the support never reaches past +-total, so rolling never wraps around
            probability = 0.5 * (np.roll(probability, m) + np.roll(probability, -m))
        sums = np.abs(np.arange(-total, total + 1))
        return float(min(1.0, probability[sums >= observed].sum()))
    d = np.asarray(diffs, dtype=float)
    observed = abs(d.sum())
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(PERMUTATION_RESAMPLES, d.size))
    hits = int((np.abs(signs @ d) >= observed - 1e-12 * max(1.0, observed)).sum())
    return (1 + hits) / (1 + PERMUTATION_RESAMPLES)


MONTE_CARLO_FLOOR = 1 / (1 + PERMUTATION_RESAMPLES)  # the smallest p the Monte Carlo branch can return


def p_text(p: float) -> str:
    """``p = 0.023``, or ``p <= 1e-05`` at the Monte Carlo floor (no draw was as extreme: the p is below what the
    draws can resolve, not equal to it)."""
    return f"p <= {MONTE_CARLO_FLOOR:.2g}" if p <= MONTE_CARLO_FLOOR * (1 + 1e-9) else f"p = {p:.2g}"


@dataclass(frozen=True)
class RowComparison:
    """Two settings (A, B) on the same evaluation rows, each row's outcome a mean over the ``seeds`` matched seeds.

    ``a_better`` / ``b_better`` count rows, not row x seed pairs; ``informative`` is False when every outcome of both
    settings is the same value (e.g. 0% everywhere): such a metric cannot tell anything apart, whatever its p."""

    rows: int
    seeds: int
    mean_a: float
    mean_b: float
    interval_a: tuple[float, float]
    interval_b: tuple[float, float]
    difference_interval: tuple[float, float]
    a_better: int
    b_better: int
    p_value: float
    informative: bool
    per_seed: tuple[tuple[float, float], ...] = ()  # (A's total, B's total) on the compared rows, seed by seed

    @property
    def difference(self) -> float:
        return self.mean_a - self.mean_b


def _matched_rows(
    a_by_seed: Sequence[dict[int, float]], b_by_seed: Sequence[dict[int, float]], caller: str
) -> tuple[dict[int, float], dict[int, float], list[int], list[float]]:
    """A's and B's row means over matched seeds on the rows both have, those rows (sorted) and A - B per row."""
    if len(a_by_seed) != len(b_by_seed) or not a_by_seed:
        raise ValueError(f"{caller} needs the same number (at least one) of seeds on both sides")
    a, b = row_means(a_by_seed), row_means(b_by_seed)
    rows = sorted(set(a) & set(b))
    a, b = {r: a[r] for r in rows}, {r: b[r] for r in rows}
    return a, b, rows, [a[r] - b[r] for r in rows]


def compare_rows(a_by_seed: Sequence[dict[int, float]], b_by_seed: Sequence[dict[int, float]]) -> RowComparison:
    """Compare A and B (per-row outcomes, one dict per seed, the seeds in matched order) on the rows all have:
    :func:`sign_flip_p` on the rows' mean differences, intervals by :func:`accuracy_interval` and, for the
    difference, by :func:`row_bootstrap` (Wilson does not apply to a difference)."""
    a, b, rows, diffs = _matched_rows(a_by_seed, b_by_seed, "compare_rows")
    seeds = len(a_by_seed)
    values = {o[r] for side in (a_by_seed, b_by_seed) for o in side for r in rows}
    n = len(rows)
    return RowComparison(
        rows=n,
        seeds=seeds,
        mean_a=sum(a.values()) / n if n else 0.0,
        mean_b=sum(b.values()) / n if n else 0.0,
        interval_a=accuracy_interval(a, seeds),
        interval_b=accuracy_interval(b, seeds),
        difference_interval=row_bootstrap(diffs),
        a_better=sum(d > 0 for d in diffs),
        b_better=sum(d < 0 for d in diffs),
        p_value=sign_flip_p(diffs, scale=seeds),
        informative=n > 0 and len(values) > 1,
        per_seed=tuple(
            (sum(oa[r] for r in rows), sum(ob[r] for r in rows)) for oa, ob in zip(a_by_seed, b_by_seed, strict=True)
        ),
    )


ROW_LOSS_TEST = (
    "paired sign-flip permutation test over evaluation rows on each row's completion loss (mean NLL over its "
    f"completion tokens, averaged over seeds), two-sided, Monte Carlo ({PERMUTATION_RESAMPLES:,} seeded draws); "
    f"intervals: 95% percentile bootstrap over rows ({BOOTSTRAP_RESAMPLES:,} resamples, seed {BOOTSTRAP_SEED})"
)


@dataclass(frozen=True)
class LossComparison:
    """Two settings (A, B) compared on the per-row completion loss of the same evaluation rows, each row's loss a
    mean over the ``seeds`` matched seeds; ``a_lower`` / ``b_lower`` count rows."""

    rows: int
    seeds: int
    mean_a: float
    mean_b: float
    interval_a: tuple[float, float]
    interval_b: tuple[float, float]
    difference_interval: tuple[float, float]
    a_lower: int
    b_lower: int
    p_value: float

    @property
    def difference(self) -> float:
        return self.mean_a - self.mean_b


def compare_row_losses(a_by_seed: Sequence[dict[int, float]], b_by_seed: Sequence[dict[int, float]]) -> LossComparison:
    """Compare A's and B's per-row losses (one dict row id -> loss per seed, seeds in matched order) on the rows all
    have: :func:`sign_flip_p` on the rows' mean differences (losses are not multiples of ``1 / seeds``: the Monte
    Carlo branch), :func:`row_bootstrap` intervals (Wilson applies to shares, not to losses)."""
    a, b, rows, diffs = _matched_rows(a_by_seed, b_by_seed, "compare_row_losses")
    n = len(rows)
    return LossComparison(
        rows=n,
        seeds=len(a_by_seed),
        mean_a=sum(a[r] for r in rows) / n if n else 0.0,
        mean_b=sum(b[r] for r in rows) / n if n else 0.0,
        interval_a=row_bootstrap([a[r] for r in rows]) if n else (0.0, 0.0),
        interval_b=row_bootstrap([b[r] for r in rows]) if n else (0.0, 0.0),
        difference_interval=row_bootstrap(diffs) if n else (0.0, 0.0),
        a_lower=sum(d < 0 for d in diffs),
        b_lower=sum(d > 0 for d in diffs),
        p_value=sign_flip_p(diffs) if n else 1.0,
    )
