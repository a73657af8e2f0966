"""Uncertainty for accuracies measured on a finite validation set: Wilson intervals, exact McNemar, Spearman.

Plain functions over counts and lists, used by the sweep report (:mod:`plw.report`) and its verdicts
(:mod:`plw.verdicts`). No SciPy: each is a few lines, and the tests check them against hand-computed cases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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
    """Two classifiers compared on the same rows: ``only_a`` rows right only for A, ``only_b`` only for B."""

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

    def __add__(self, other: Paired) -> Paired:
        """Pool two comparisons (e.g. over seeds): counts add, the test runs on the pooled discordant rows."""
        return Paired(
            self.n + other.n,
            self.correct_a + other.correct_a,
            self.correct_b + other.correct_b,
            self.only_a + other.only_a,
            self.only_b + other.only_b,
        )


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
