"""Wilson intervals, the exact McNemar test and Spearman's rho against values computed by hand."""

from __future__ import annotations

import math

import pytest

from plw.uncertainty import Paired, binomial_two_sided, paired, ranks, spearman, wilson_interval


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [
        # By hand: centre = (p + z²/2n) / (1 + z²/n), half = z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n), z = 1.95996.
        (8, 10, 0.4901625, 0.9433178),
        (0, 10, 0.0, 0.2775328),
        (10, 10, 0.7224672, 1.0),
        (50, 100, 0.4038315, 0.5961685),
        (81, 100, 0.7222115, 0.8748525),
    ],
)
def test_wilson_interval_hand_computed(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=2e-6)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    # Narrower with more rows, and always containing the observed share.
    assert (
        wilson_interval(80, 100)[1] - wilson_interval(80, 100)[0]
        < wilson_interval(8, 10)[1] - wilson_interval(8, 10)[0]
    )
    for k in range(0, 31):
        lo, hi = wilson_interval(k, 30)
        assert lo <= k / 30 <= hi


@pytest.mark.parametrize(
    "k, n, p",
    [
        (1, 7, 2 * (1 + 7) / 128),  # P(X <= 1 | 7 flips) = 8/128, doubled
        (0, 5, 2 / 32),
        (3, 6, 1.0),  # the centre: capped at 1
        (2, 10, 2 * (1 + 10 + 45) / 1024),
        (9, 10, 2 * (1 + 10) / 1024),  # the upper tail mirrors the lower one
        (0, 0, 1.0),
    ],
)
def test_exact_binomial_two_sided(k, n, p):
    assert binomial_two_sided(k, n) == pytest.approx(p, rel=1e-12)


def test_mcnemar_on_paired_rows():
    a = {0: 1, 1: 1, 2: 1, 3: 0, 4: 1, 5: 1, 6: 1, 7: 0, 8: 1}
    b = {0: 1, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 1, 8: 1, 99: 1}  # row 99 has no partner: left out
    p = paired(a, b)
    assert (p.n, p.correct_a, p.correct_b, p.only_a, p.only_b) == (9, 7, 3, 5, 1)
    assert p.difference == pytest.approx(4 / 9)
    assert p.p_value == pytest.approx(2 * (1 + 6) / 64)  # 1 of 6 discordant rows the other way: 2·P(X<=1 | 6)
    pooled = p + Paired(n=9, correct_a=5, correct_b=5, only_a=2, only_b=2)
    assert (pooled.n, pooled.only_a, pooled.only_b) == (18, 7, 3)
    assert pooled.p_value == pytest.approx(2 * sum(math.comb(10, i) for i in range(4)) / 1024)


def test_spearman_hand_computed():
    assert ranks([10, 20, 20, 5]) == [2, 3.5, 3.5, 1]
    # No ties: rho = 1 - 6 Σd² / (n(n²-1)); d = (0, 1, 1, 0) -> 1 - 12/60 = 0.8.
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # With ties: Pearson on average ranks; x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4) -> 4.5 / sqrt(4.5 · 5).
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman([1, 2], [2, 1]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None
