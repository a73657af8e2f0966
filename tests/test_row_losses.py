"""The row-level paired test on per-row completion loss and its place in the sweep report, on hand-computed cases.

Run folders are written by hand with a ``completion_loss`` per row in ``predictions.jsonl``; the exact p-value of
the sign-flip test follows by counting sign patterns, and the Monte Carlo estimate must come close to it.
"""

from __future__ import annotations

import json

import pytest
import yaml

from plw.analysis import load_run
from plw.report import render_report
from plw.uncertainty import compare_row_losses
from plw.verdicts import decide_loss, losses_against_largest


def write_run(folder, plw, seed, losses):
    """One run with a step-0 and a final evaluation; ``losses`` are the rows' completion losses at the end. The
    exact match is 0 everywhere (long completions), so only the loss can tell the PLWs apart."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"prompt_loss_weight": plw, "seed": seed}))
    n = len(losses)
    metrics, predictions = [], []
    for step, row_losses in ((0, [3.0] * n), (10, losses)):
        mean = sum(row_losses) / n
        metrics.append(
            {"step": step, "epoch": step / 10, "plw": plw, "eval_completion_loss": mean, "eval_full_loss": mean}
            | {"eval_exact_match": 0.0, "eval_rows": n}
        )
        predictions.append(
            {"step": step, "id": list(range(n)), "exact": [0] * n, "correct": [-1] * n, "choice": [-1] * n}
            | {"completion_loss": row_losses}
        )
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (folder / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
    return load_run(folder)


def test_compare_row_losses_hand_computed():
    # Two seeds; row means for A: 0.5, 0.5, 0.5, 0.5, 1.5 against B's 1.0 everywhere: differences -0.5 x 4, +0.5.
    a = [{0: 0.5, 1: 0.25, 2: 0.75, 3: 0.5, 4: 1.5}, {0: 0.5, 1: 0.75, 2: 0.25, 3: 0.5, 4: 1.5}]
    b = [dict.fromkeys(range(5), 1.0), dict.fromkeys(range(5), 1.0)]
    c = compare_row_losses(a, b)
    assert (c.rows, c.seeds, c.a_lower, c.b_lower) == (5, 2, 4, 1)
    assert (c.mean_a, c.mean_b) == pytest.approx((0.7, 1.0))
    # |sum of signed 0.5s| >= 1.5 in 1 + 5 + 5 + 1 = 12 of the 32 sign patterns.
    assert c.p_value == pytest.approx(12 / 32, abs=0.01)
    assert c.p_value != 12 / 32  # the Monte Carlo estimate, not the exact enumeration
    assert decide_loss(c) == "not distinguishable"


def test_report_gives_long_completion_data_a_verdict_on_loss(tmp_path):
    rows = 8
    runs = []
    for seed in (1, 2):
        runs.append(write_run(tmp_path / f"plw=1/seed={seed}", 1.0, seed, [2.0] * rows))
        # PLW 0 is lower on every row by 0.5 or 0.75 (row means 1.375 after averaging the two seeds).
        runs.append(write_run(tmp_path / f"plw=0/seed={seed}", 0.0, seed, [1.5 if seed == 1 else 1.25] * rows))
    [(small, large, c)] = losses_against_largest(runs)
    assert (small, large) == ("PLW 0", "PLW 1")
    assert (c.rows, c.seeds, c.a_lower, c.b_lower) == (8, 2, 8, 0)
    assert c.difference == pytest.approx(-0.625)
    # Only the two all-same-sign patterns of 2^8 reach |sum| = 8 x 0.625.
    assert c.p_value == pytest.approx(2 / 256, abs=0.002)
    assert decide_loss(c) == "lower"
    text = render_report(runs, {})
    assert "PLW 0 has lower completion loss than PLW 1" in text
    assert "## Completion loss per row, paired, at the final evaluation" in text
    assert "Monte Carlo" in text
    loss_section = text.split("## Completion loss per row")[1].split("\n## ")[0]
    assert "right per seed" not in loss_section and "on 8 rows x 2 seeds" in loss_section
    # The accuracy is teacher-forced exact match, named as such, and 0 everywhere: not informative, no p quoted.
    assert "exact match (teacher-forced)" in text


def test_runs_without_row_losses_get_no_loss_test(tmp_path):
    runs = [write_run(tmp_path / f"plw={p}", p, 1, [1.0, 2.0]) for p in (1.0, 0.0)]
    for run in runs:
        for line in run.predictions.values():
            del line["completion_loss"]
    assert losses_against_largest(runs) == []
    assert "Completion loss per row" not in render_report(runs, {})


def test_spectrum_finding_uses_the_row_level_loss_test(tmp_path):
    from plw.spectrum import compare, load_dataset

    sweep = tmp_path / "explanation"
    for seed in (1, 2):
        write_run(sweep / f"plw=1/seed={seed}", 1.0, seed, [2.0] * 8)
        write_run(sweep / f"plw=0/seed={seed}", 0.0, seed, [1.5 if seed == 1 else 1.25] * 8)
    for state in sweep.glob("plw=*/seed=*"):
        (state / "state.json").write_text(json.dumps({"status": "finished"}))
    [c] = compare(load_dataset(sweep))
    assert c.paired_loss is not None and c.paired_loss.rows == 8
    assert c.paired_loss.p_value == pytest.approx(2 / 256, abs=0.002)
    assert c.finding.startswith("PLW 0 had lower completion loss than PLW 1 (PLW 0 1.3750")
    assert "rows lower for PLW 0: 8" in c.finding and "in 2 of 2 seeds" not in c.finding


def test_a_monte_carlo_p_at_its_floor_is_printed_as_a_bound():
    """No sign pattern of 100,000 draws as extreme as 100 rows all lower: the p is below the resolution of the
    draws, so the report says ``p <= 1e-05``, not ``p = 1e-05``."""
    from plw.uncertainty import compare_row_losses
    from plw.verdicts import describe_loss

    a = {i: 0.1 + 0.001 * i for i in range(100)}
    b = {i: 0.5 + 0.002 * i for i in range(100)}
    c = compare_row_losses([a], [b])
    assert c.p_value == 1 / 100_001
    assert "row-level p <= 1e-05" in describe_loss(c, "PLW 0", "PLW 1")
    close = compare_row_losses([a], [{i: v + (0.01 if i % 2 else -0.01) for i, v in a.items()}])
    assert "row-level p = " in describe_loss(close, "PLW 0", "PLW 1")
