"""`plw stats`'s "Suggested prompt_loss_weight" line, from findings written by hand so the right wording is known.

A suggestion is a PLW the study's row-level test put above PLW 1 near the data's Rg (within a factor of 3), named
with what it rests on; several when the test cannot choose between them; "no measured basis" otherwise.
"""

from __future__ import annotations

import json

import pytest

from plw.cli import main
from plw.stats import suggest_plw


def paired(mean, ref, p, rows=50, seeds=2, informative=True):
    return {
        "rows": rows,
        "seeds": seeds,
        "mean": mean,
        "interval": [mean - 0.1, mean + 0.1],
        "reference_mean": ref,
        "reference_interval": [ref - 0.1, ref + 0.1],
        "difference": mean - ref,
        "p_value": p,
        "informative": informative,
    }


def comparison(plw, against, mean, ref, p, **kw):
    return {"plw": plw, "against": against, "paired": paired(mean, ref, p, **kw)}


def findings(comparisons, pairwise=(), rg=0.04):
    return {
        "report": "docs/results/study/report.md",
        "datasets": [
            {
                "name": "short",
                "rg": rg,
                "finding": "f",
                "scope": "tiny, 2 seeds",
                "comparisons": list(comparisons),
                "pairwise": list(pairwise),
            },
            {
                "name": "long",
                "rg": 1.5,
                "finding": "g",
                "scope": "tiny",
                "comparisons": [comparison(0.0, 1.0, 0.0, 0.0, 1.0, informative=False)],
            },
        ],
    }


def test_one_value_above_plw_1_is_suggested_with_its_evidence():
    f = findings(
        [comparison(0.1, 1.0, 0.47, 0.24, 0.0013), comparison(0.0, 1.0, 0.30, 0.24, 0.4)],
    )
    line = suggest_plw(0.035, f)
    assert line == (
        "Suggested prompt_loss_weight: 0.1. It rests on short (Rg 0.04) in docs/results/study/report.md: PLW 0.1 "
        "47.0% [37.0%, 57.0%] vs PLW 1 24.0% [14.0%, 34.0%] on 50 rows x 2 seeds, row-level p = 0.0013; measured "
        "with tiny, 2 seeds"
    )


def test_the_seeds_behind_a_suggestion_are_shown():
    c = comparison(0.0, 1.0, 0.38, 0.24, 0.023)
    c["paired"]["right_per_seed"] = [[15, 12], [23, 12]]
    assert "on 50 rows x 2 seeds (right per seed: 15 vs 12, 23 vs 12), row-level p = 0.023" in suggest_plw(
        0.04, findings([c])
    )


def test_values_the_test_cannot_tell_apart_are_all_named():
    f = findings(
        [comparison(0.1, 1.0, 0.47, 0.24, 0.0013), comparison(0.0, 1.0, 0.38, 0.24, 0.023)],
        [comparison(0.0, 0.1, 0.38, 0.47, 0.14)],
    )
    line = suggest_plw(0.03, f)
    assert line.startswith("Suggested prompt_loss_weight: 0.1 or 0 (measured values the data cannot choose between: ")
    assert (
        "PLW 0 38.0% [28.0%, 48.0%] vs PLW 0.1 47.0% [37.0%, 57.0%] on 50 rows x 2 seeds, row-level p = 0.14)" in line
    )
    # When the pairwise test does tell them apart, only the more accurate one is suggested.
    f["datasets"][0]["pairwise"] = [comparison(0.0, 0.1, 0.38, 0.47, 0.01)]
    assert suggest_plw(0.03, f).startswith("Suggested prompt_loss_weight: 0.1. It rests on")


@pytest.mark.parametrize(
    "rg, comparisons, expected",
    [
        # Nothing within a factor of 3: 0.2 is 5x from 0.04 and 7.5x from 1.5.
        (0.2, [], "no measured basis: nothing was measured within a factor 3 of Rg 0.2 (nearest: short (Rg 0.04)"),
        # Near, but no PLW beat PLW 1 at row level (a lower p in the wrong direction does not count either).
        (
            0.04,
            [comparison(0.0, 1.0, 0.3, 0.25, 0.2), comparison(0.1, 1.0, 0.1, 0.3, 0.001)],
            "no measured basis at this Rg: on short (Rg 0.04) in docs/results/study/report.md, no PLW below 1 was more "
            "accurate than PLW 1 by the row-level test (p >= 0.05)",
        ),
        # An accuracy at 0% everywhere is no basis, whatever its p.
        (
            1.4,
            [],
            "no measured basis at this Rg: on long (Rg 1.5) in docs/results/study/report.md, its accuracy was "
            "not informative",
        ),
    ],
)
def test_no_measured_basis(rg, comparisons, expected):
    line = suggest_plw(rg, findings(comparisons))
    assert line.startswith(f"Suggested prompt_loss_weight: {expected}"), line


def loss_comparison(plw, against, mean, ref, p, rows=40, seeds=3):
    """A comparison whose accuracy is 0% everywhere (not informative) and whose per-row completion losses were
    tested."""
    c = comparison(plw, against, 0.0, 0.0, 1.0, rows=rows, seeds=seeds, informative=False)
    c["paired_loss"] = {
        "rows": rows,
        "seeds": seeds,
        "mean": mean,
        "interval": [mean - 0.01, mean + 0.01],
        "reference_mean": ref,
        "reference_interval": [ref - 0.01, ref + 0.01],
        "difference": mean - ref,
        "p_value": p,
    }
    return c


def test_long_completions_are_advised_on_the_row_level_completion_loss():
    f = findings([])
    f["datasets"][1]["comparisons"] = [
        loss_comparison(0.1, 1.0, 0.98, 1.04, 0.001),
        loss_comparison(0.0, 1.0, 0.97, 1.04, 0.0002),
        loss_comparison(0.5, 1.0, 1.10, 1.04, 0.001),  # significant, but higher: never suggested
    ]
    f["datasets"][1]["pairwise"] = [loss_comparison(0.0, 0.1, 0.97, 0.98, 0.3)]
    line = suggest_plw(1.4, f)  # the lowest first in the evidence, the values from large to small
    assert line == (
        "Suggested prompt_loss_weight: 0.1 or 0 (measured values the data cannot choose between: PLW 0 0.97 "
        "[0.96, 0.98] vs PLW 0.1 0.98 [0.97, 0.99] mean completion loss on 40 rows x 3 seeds, row-level p = 0.3), "
        "on completion loss (its accuracy was not informative). It rests on long (Rg 1.5) in "
        "docs/results/study/report.md: PLW 0 0.97 [0.96, 0.98] vs PLW 1 1.04 [1.03, 1.05] mean completion loss "
        "on 40 rows x 3 seeds, row-level p = 0.0002; PLW 0.1 0.98 [0.97, 0.99] vs PLW 1 1.04 [1.03, 1.05] mean "
        "completion loss on 40 rows x 3 seeds, row-level p = 0.001; measured with tiny"
    )
    # Told apart, only the lower one is suggested; none lower than PLW 1 at row level, no basis.
    f["datasets"][1]["pairwise"] = [loss_comparison(0.0, 0.1, 0.97, 0.98, 0.01)]
    assert suggest_plw(1.4, f).startswith("Suggested prompt_loss_weight: 0, on completion loss (its accuracy was")
    f["datasets"][1]["comparisons"] = [loss_comparison(0.0, 1.0, 0.97, 1.04, 0.2)]
    assert suggest_plw(1.4, f) == (
        "Suggested prompt_loss_weight: no measured basis at this Rg: on long (Rg 1.5) in docs/results/study/report.md, "
        "its accuracy was not informative (one value in every run), and no PLW below 1 had lower completion loss "
        "than PLW 1 by the row-level test (p >= 0.05)"
    )


def test_a_loss_p_at_the_monte_carlo_floor_is_a_bound_not_a_value():
    f = findings([])
    f["datasets"][1]["comparisons"] = [loss_comparison(0.0, 1.0, 0.97, 1.04, 1 / 100_001)]
    line = suggest_plw(1.4, f)
    assert "row-level p <= 1e-05" in line and "p = 1e-05" not in line, line


def test_an_informative_accuracy_comes_before_the_loss():
    c = loss_comparison(0.1, 1.0, 0.5, 0.9, 0.0001)
    c["paired"] = paired(0.30, 0.28, 0.6)  # informative, not distinguishable: no basis, whatever the loss says
    line = suggest_plw(0.04, findings([c]))
    assert "no PLW below 1 was more accurate than PLW 1 by the row-level test" in line


def test_no_findings_at_all():
    assert (
        suggest_plw(0.1, {}) == "Suggested prompt_loss_weight: no measured basis (no study findings to compare with)"
    )


def test_plw_stats_prints_the_suggestion(tmp_path, capsys, monkeypatch):
    import plw.stats

    path = tmp_path / "findings.json"
    path.write_text(json.dumps(findings([comparison(0.1, 1.0, 0.47, 0.24, 0.0013)], rg=0.02)))
    monkeypatch.setattr(plw.stats, "SPECTRUM_FINDINGS", path)
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps({"prompt": " ".join(["w"] * 50), "completion": "x"}) + "\n")  # Rg 0.02 in words
    assert main(["stats", str(data), "--no-progress"]) == 0
    assert "\nSuggested prompt_loss_weight: 0.1. It rests on short (Rg 0.02)" in capsys.readouterr().out


def test_several_datasets_each_get_a_named_line(tmp_path, capsys, monkeypatch):
    import plw.stats

    path = tmp_path / "findings.json"
    path.write_text(json.dumps(findings([comparison(0.1, 1.0, 0.47, 0.24, 0.0013)], rg=0.02)))
    monkeypatch.setattr(plw.stats, "SPECTRUM_FINDINGS", path)
    short, long = tmp_path / "short.jsonl", tmp_path / "long.jsonl"
    short.write_text(json.dumps({"prompt": " ".join(["w"] * 50), "completion": "x"}) + "\n")  # Rg 0.02
    long.write_text(json.dumps({"prompt": "w w", "completion": " ".join(["x"] * 20)}) + "\n")  # Rg 10
    assert main(["stats", str(short), str(long), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "short: Suggested prompt_loss_weight: 0.1. It rests on" in out
    assert "long: Suggested prompt_loss_weight: no measured basis: nothing was measured within a factor 3" in out
