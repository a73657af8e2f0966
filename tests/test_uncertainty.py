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
    assert not hasattr(Paired, "__add__")  # seeds are never pooled as if they were rows


def test_spearman_hand_computed():
    assert ranks([10, 20, 20, 5]) == [2, 3.5, 3.5, 1]
    # No ties: rho = 1 - 6 Σd² / (n(n²-1)); d = (0, 1, 1, 0) -> 1 - 12/60 = 0.8.
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # With ties: Pearson on average ranks; x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4) -> 4.5 / sqrt(4.5 · 5).
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman([1, 2], [2, 1]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None


# ---- the evaluation row as the unit -------------------------------------------------------------------------------


def brute_force_sign_flip(diffs):
    """Every one of the 2^n sign patterns, counted: the share whose |sum| reaches the observed |sum|."""
    import itertools
    from fractions import Fraction

    d = [Fraction(x).limit_denominator(1000) for x in diffs]
    observed = abs(sum(d))
    hits = sum(
        abs(sum(s * x for s, x in zip(signs, d, strict=True))) >= observed
        for signs in itertools.product((1, -1), repeat=len(d))
    )
    return hits / 2 ** len(d)


@pytest.mark.parametrize(
    "diffs, scale",
    [
        ([1, 1, 1, -1, 0, 1, 1], 1),
        ([1, 2 / 3, -1 / 3, 1, 0, 1 / 3, -2 / 3, 1], 3),
        ([0.5, 0.5, -1, 1, 1, 0.5, 0, -0.5, 1, 1, 1], 2),
        ([0, 0, 0], 2),
    ],
)
def test_sign_flip_p_equals_brute_force_enumeration(diffs, scale):
    from plw.uncertainty import sign_flip_p

    assert sign_flip_p(diffs, scale) == pytest.approx(brute_force_sign_flip(diffs), rel=1e-12)


def test_sign_flip_with_one_seed_is_the_exact_mcnemar_test():
    from plw.uncertainty import sign_flip_p

    for only_a, only_b in ((9, 1), (6, 0), (3, 3), (20, 7), (0, 0)):
        diffs = [1] * only_a + [-1] * only_b + [0] * 5
        assert sign_flip_p(diffs) == pytest.approx(binomial_two_sided(only_a, only_a + only_b), rel=1e-12)


def test_sign_flip_monte_carlo_for_continuous_differences_is_seeded_and_close():
    """Differences that are not multiples of 1/seeds (losses) take the seeded Monte Carlo path."""
    from plw.uncertainty import sign_flip_p

    diffs = [0.31, 0.72, -0.13, 0.55, 0.21, -0.4, 0.9, 0.05, 0.33, 0.61]
    exact = brute_force_sign_flip(diffs)
    got = sign_flip_p(diffs, scale=1, seed=3)
    assert got == sign_flip_p(diffs, scale=1, seed=3)  # deterministic
    assert got == pytest.approx(exact, abs=0.005)


def test_seeds_are_not_pooled_as_rows():
    """Three seeds that agree on every row carry the information of one seed: the row-level p is the one-seed p,
    where pooling the 3 x 10 discordant "rows" would give a far smaller McNemar p."""
    from plw.uncertainty import compare_rows

    a = {i: int(i < 15) for i in range(30)}  # right on rows 0-14
    b = {i: int(i < 5) for i in range(30)}  # right on rows 0-4
    one = compare_rows([a], [b])
    three = compare_rows([a, a, a], [b, b, b])
    assert (three.rows, three.seeds, three.a_better, three.b_better) == (30, 3, 10, 0)
    assert three.p_value == pytest.approx(one.p_value, rel=1e-12) == pytest.approx(2 / 2**10, rel=1e-12)
    assert binomial_two_sided(30, 30) < three.p_value / 1000  # what pooling would have claimed
    assert three.interval_a == one.interval_a == wilson_interval(15, 30)  # 0/1 rows: Wilson over 30 rows, not 90


def test_row_means_keep_only_rows_every_seed_has():
    from plw.uncertainty import row_means

    assert row_means([{0: 1, 1: 0, 2: 1}, {0: 1, 1: 1}]) == {0: 1.0, 1: 0.5}
    assert row_means([]) == {}


def test_row_bootstrap_matches_the_exact_bootstrap_distribution():
    """Ten rows, 3 right: a resample's mean is K/10 with K ~ Binomial(10, 0.3). Its exact 2.5% and 97.5% quantiles
    are 0 (P(K=0) = 0.028) and 0.6 (P(K<=5) = 0.953, P(K<=6) = 0.989); the seeded bootstrap finds them."""
    from plw.uncertainty import row_bootstrap

    values = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    cdf = [sum(math.comb(10, j) * 0.3**j * 0.7 ** (10 - j) for j in range(k + 1)) for k in range(11)]
    exact = (next(k for k in range(11) if cdf[k] >= 0.025) / 10, next(k for k in range(11) if cdf[k] >= 0.975) / 10)
    assert exact == (0.0, 0.6)
    assert row_bootstrap(values) == pytest.approx(exact, abs=1e-9)
    assert row_bootstrap(values) == row_bootstrap(values)  # seeded


def test_compare_rows_with_seeds_that_disagree():
    """Two seeds; row means A = (1, .5, 1, 0), B = (0, .5, 0, 0): differences x 2 = (2, 0, 2, 0), sum 4: only the
    2 of 4 sign patterns with both +2 or both -2 reach it: p = 0.5. Intervals are row bootstraps over 4 rows."""
    from plw.uncertainty import compare_rows

    a = [{0: 1, 1: 1, 2: 1, 3: 0}, {0: 1, 1: 0, 2: 1, 3: 0}]
    b = [{0: 0, 1: 0, 2: 0, 3: 0}, {0: 0, 1: 1, 2: 0, 3: 0}]
    c = compare_rows(a, b)
    assert (c.rows, c.seeds, c.a_better, c.b_better) == (4, 2, 2, 0)
    assert (c.mean_a, c.mean_b, c.difference) == pytest.approx((0.625, 0.125, 0.5))
    assert c.p_value == pytest.approx(0.5)
    assert c.interval_a[0] <= 0.625 <= c.interval_a[1] and c.informative
    with pytest.raises(ValueError, match="same number"):
        compare_rows(a, b[:1])


def test_a_metric_at_one_value_everywhere_is_not_informative():
    from plw.uncertainty import compare_rows

    zeros = {i: 0 for i in range(8)}
    c = compare_rows([zeros, zeros], [zeros, zeros])
    assert not c.informative and c.p_value == 1.0
    assert c.interval_a == wilson_interval(0, 8)  # not a collapsed [0, 0]
