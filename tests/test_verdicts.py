"""Verdicts on the article's claims, on run folders written by hand so the right answer is known.

Each fake run evaluates the same 40 rows at the steps given; the first ``right`` rows are right, so the rows' mean
outcomes over seeds, the row-level tests and the verdicts follow by hand.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from plw.analysis import load_run
from plw.verdicts import claim_a, claim_b, claim_c, claim_d, steps_to

ROWS = 40


def write_run(folder, plw, seed, evals):
    """``evals``: (step, completion_loss, full_loss, rows right) — the first ``right`` rows are right."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"prompt_loss_weight": plw, "seed": seed}))
    metrics, predictions = [], []
    for step, c_loss, f_loss, right in evals:
        correct = [1] * right + [0] * (ROWS - right)
        metrics.append(
            {
                "step": step,
                "epoch": step / 30,
                "plw": plw,
                "eval_completion_loss": c_loss,
                "eval_full_loss": f_loss,
                "eval_accuracy": right / ROWS,
                "eval_answer_rows": ROWS,
                "eval_rows": ROWS,
            }
        )
        predictions.append(
            {"step": step, "id": list(range(ROWS)), "exact": correct, "correct": correct, "choice": [0] * ROWS}
        )
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (folder / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
    return load_run(folder)


def test_clear_differences_give_supported(tmp_path):
    runs = []
    for seed in (1, 2):
        # PLW 1: the full loss bottoms out early (step 10, 12 right), the completion loss late (step 30, 30 right);
        # it learns slowly. PLW 0 learns fast and ends at 39/40.
        runs.append(
            write_run(
                tmp_path / f"1-{seed}",
                1.0,
                seed,
                [(0, 3, 3, 10), (10, 2, 1.0, 12), (20, 1.5, 1.2, 20), (30, 1, 1.5, 30)],
            )
        )
        runs.append(
            write_run(
                tmp_path / f"0-{seed}",
                0.0,
                seed,
                [(0, 3, 3, 10), (10, 1, 4, 36), (20, 0.5, 4.2, 38), (30, 0.3, 4.4, 39)],
            )
        )
    acc = "eval_accuracy"
    # Rows 12-29 right at the completion-loss minimum only, in both seeds: 18 rows at +1, p = 2 / 2^18.
    a = claim_a(runs, acc)
    assert (
        a.verdict == "supported" and "on 40 rows x 2 seeds" in a.evidence and "for full-loss minimum: 0" in a.evidence
    )
    d = claim_d(runs, acc)
    assert d.verdict == "supported"  # rows 30-38 better at PLW 0 in both seeds: 9 rows, p = 2 / 2^9
    assert (
        "rows better for PLW 0: 9, for PLW 1: 0; right per seed: 39 vs 30, 39 vs 30; row-level p = 0.0039"
        in d.evidence
    )
    # Four evaluations per run: steps to a target cannot be placed, so (c) is not measured, not "supported".
    c = claim_c(runs, acc)
    assert c.verdict == "not measured" and "4 evaluations per run, fewer than the 8" in c.evidence
    # Completion loss ranks like accuracy in every run; full loss does not: 4 of 4 runs, two-sided sign test p = 0.125.
    b = claim_b(runs, acc)
    assert b.verdict == "inconclusive" and "better in 4 runs, worse in 0" in b.evidence


def test_reversed_differences_give_contradicted(tmp_path):
    runs = []
    for seed in (1, 2, 3):
        runs.append(
            write_run(
                tmp_path / f"1-{seed}", 1.0, seed, [(0, 3, 3, 10), (10, 2, 1, 36), (20, 1, 2, 20), (30, 1.5, 2.5, 38)]
            )
        )
        runs.append(
            write_run(
                tmp_path / f"0-{seed}", 0.0, seed, [(0, 3, 3, 10), (10, 2, 4, 12), (20, 1, 4, 14), (30, 1.5, 4, 15)]
            )
        )
    acc = "eval_accuracy"
    assert claim_a(runs, acc).verdict == "contradicted"  # full-loss minimum (36) beats completion-loss minimum (20)
    assert claim_d(runs, acc).verdict == "contradicted"  # PLW 0 at its completion-loss minimum: 14 vs 20, 6 rows


def test_small_differences_are_inconclusive(tmp_path):
    runs = []
    for seed in (1, 2):
        runs.append(write_run(tmp_path / f"1-{seed}", 1.0, seed, [(0, 3, 3, 10), (10, 2, 2, 20), (20, 1, 1, 21)]))
        runs.append(write_run(tmp_path / f"0-{seed}", 0.0, seed, [(0, 3, 3, 10), (10, 2, 4, 21), (20, 1, 4, 22)]))
    acc = "eval_accuracy"
    for claim in (claim_a, claim_d):
        assert claim(runs, acc).verdict == "inconclusive", claim.__name__
    assert claim_c(runs, acc).verdict == "not measured"
    a = claim_a(runs, acc)
    assert "same evaluation in 2 of 2 seeds" in a.evidence


def test_sweep_report_leaves_out_unfinished_runs(tmp_path):
    """A run still training (or stopped) must not have its last evaluation reported as final."""
    from plw.report import write_sweep_outputs

    sweep = tmp_path / "sweep"
    write_run(sweep / "plw=1" / "seed=1", 1.0, 1, [(0, 2.0, 2.0, 0), (30, 0.5, 1.0, 20)])
    write_run(sweep / "plw=0" / "seed=1", 0.0, 1, [(0, 2.0, 2.0, 0), (30, 0.3, 3.0, 36)])
    write_run(sweep / "plw=0" / "seed=2", 0.0, 2, [(0, 2.0, 2.0, 0), (10, 1.0, 2.5, 4)])
    for folder in ("plw=1/seed=1", "plw=0/seed=1"):
        (sweep / folder / "state.json").write_text(json.dumps({"status": "finished"}))
    (sweep / "plw=0" / "seed=2" / "state.json").write_text(json.dumps({"status": "running"}))
    text = (write_sweep_outputs(sweep)).read_text()
    assert "Left out, not finished: `plw=0/seed=2`" in text
    # PLW 0's final accuracy is seed 1's 36/40 alone, not pooled with the unfinished run's 4/40.
    assert "PLW 0: final accuracy 90.0%" in text
    assert "10.0%" not in text.split("## Accuracy by checkpoint rule")[0]


def test_sweep_report_calls_best_accuracy_optimistic_only_over_several_evaluations(tmp_path):
    from plw.report import write_sweep_outputs

    for k, evals in ((1, [(30, 0.5, 1.0, 20)]), (3, [(0, 2.0, 2.0, 0), (15, 1.0, 1.5, 25), (30, 0.5, 1.0, 20)])):
        sweep = tmp_path / f"k{k}"
        write_run(sweep / "plw=1", 1.0, 1, evals)
        text = write_sweep_outputs(sweep).read_text()
        optimistic = f"picks the maximum of {k} noisy measurements"
        assert (optimistic in text) == (k > 1), text
        assert ("With one evaluation per run it is the final accuracy." in text) == (k == 1)


NINE = (0, 10, 20, 30, 40, 50, 60, 70, 80)


def nine_evaluations(tmp_path, fast, slow, seeds=(1, 2), start=0):
    """PLW 0 right on ``fast[k]`` rows and PLW 1 on ``slow[k]`` at the k-th of nine evaluations, in every seed."""
    runs = []
    for seed in seeds:
        for plw, right in ((1.0, slow), (0.0, fast)):
            evals = [(s + start, 2 - k / 10, 2, r) for k, (s, r) in enumerate(zip(NINE, right, strict=True))]
            runs.append(write_run(tmp_path / f"{plw:g}-{seed}", plw, seed, evals))
    return runs


def test_steps_to_target_is_interpolated_between_evaluations(tmp_path):
    (run,) = [
        r for r in nine_evaluations(tmp_path, [0, 16, 24, 32, 36, 38, 39, 39, 39], [0] * 9, seeds=(1,)) if r.plw == 0.0
    ]
    # 50% = 20 of 40 rows: 16 at step 10 (40%), 24 at step 20 (60%): 10 + (0.5 - 0.4) / (0.6 - 0.4) x 10 = 15.
    assert steps_to(run, "eval_accuracy", 0.5) == pytest.approx(15.0)
    assert steps_to(run, "eval_accuracy", 0.4) == pytest.approx(10.0)  # reached exactly at an evaluation
    assert steps_to(run, "eval_accuracy", 0.99) is None  # never reached


def test_claim_c_measured_as_steps_to_a_declared_target(tmp_path):
    """Untrained 0% -> target 50% (declared from the untrained evaluation alone). PLW 0 crosses it at step 15,
    PLW 1 at step 60, in both seeds; at step 20 (PLW 0's first evaluation above it) 24 vs 4 rows: supported."""
    runs = nine_evaluations(tmp_path, [0, 16, 24, 32, 36, 38, 39, 39, 39], [0, 2, 4, 8, 12, 16, 20, 24, 30])
    c = claim_c(runs, "eval_accuracy")
    assert c.verdict == "supported", c.evidence
    assert "target 50.0%" in c.evidence and "seed 1: 15.0 vs 60.0; seed 2: 15.0 vs 60.0" in c.evidence
    assert "At step 20: PLW 0 60.0%" in c.evidence and "on 40 rows x 2 seeds" in c.evidence


def test_claim_c_does_not_count_the_final_comparison_twice(tmp_path):
    """PLW 0 reaches the target only at the last evaluation: (c)'s test would be (d)'s, so (c) stays inconclusive."""
    runs = nine_evaluations(tmp_path, [0, 2, 4, 6, 8, 10, 12, 14, 30], [0, 1, 2, 3, 4, 5, 6, 7, 8])
    c = claim_c(runs, "eval_accuracy")
    assert c.verdict == "inconclusive"
    assert "would be claim (d)'s comparison; it is not counted twice" in c.evidence
    assert claim_d(runs, "eval_accuracy").verdict == "supported"


def test_claim_c_without_an_untrained_evaluation_is_not_measured(tmp_path):
    runs = nine_evaluations(tmp_path, [0, 16, 24, 32, 36, 38, 39, 39, 39], [0] * 9, start=5)
    c = claim_c(runs, "eval_accuracy")
    assert c.verdict == "not measured" and "no untrained (step-0) evaluation" in c.evidence
    assert "%" not in c.evidence  # no target, no untrained accuracy printed


def test_a_metric_at_zero_everywhere_is_not_informative(tmp_path):
    runs = []
    for seed in (1, 2):
        for plw in (1.0, 0.0):
            runs.append(write_run(tmp_path / f"{plw:g}-{seed}", plw, seed, [(0, 3, 3, 0), (10, 2, 2, 0)]))
    d = claim_d(runs, "eval_accuracy")
    assert d.verdict == "not informative"
    assert d.evidence.startswith("not informative: 0.0% for PLW 0 and 0.0% for PLW 1 on every one of 40 rows x 2")
    assert "p =" not in d.evidence


def test_report_prints_no_untrained_accuracy_when_none_was_measured(tmp_path):
    """Not measured -> not printed: runs without a step-0 evaluation get no untrained number anywhere."""
    from plw.report import write_sweep_outputs

    sweep = tmp_path / "sweep"
    write_run(sweep / "plw=1" / "seed=1", 1.0, 1, [(10, 1.0, 1.0, 20), (30, 0.5, 1.0, 22)])
    write_run(sweep / "plw=0" / "seed=1", 0.0, 1, [(10, 0.8, 3.0, 30), (30, 0.3, 3.0, 36)])
    text = write_sweep_outputs(sweep).read_text()
    assert not re.search(r"untrained( accuracy)?:? \(?\d", text)
    for section in ("## Accuracy by checkpoint rule", "## Per run"):  # the untrained column is the last one
        table = [
            ln for ln in text.split(section)[1].split("\n## ")[0].splitlines() if ln.startswith(("| 1 |", "| 0 |"))
        ]
        assert len(table) == 2 and all(ln.endswith("| – |") for ln in table), table
    assert "on 40 rows, one seed" in text and "Wilson" in text and "sign-flip permutation test" in text
    # With a step-0 evaluation the same report prints it.
    sweep2 = tmp_path / "sweep2"
    write_run(sweep2 / "plw=1" / "seed=1", 1.0, 1, [(0, 2.0, 2.0, 4), (30, 0.5, 1.0, 22)])
    assert "(untrained: 10.0%)" in write_sweep_outputs(sweep2).read_text()
