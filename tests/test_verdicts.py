"""Verdicts on the article's claims, on run folders written by hand so the right answer is known.

Each fake run has evaluations at steps 0, 10, 20, 30 on the same 40 rows; its per-row outcomes are chosen so that
the accuracies and the paired discordant counts are fixed, and so are the verdicts.
"""

from __future__ import annotations

import json

import yaml

from plw.analysis import load_run
from plw.verdicts import claim_a, claim_b, claim_c, claim_d

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
    assert claim_a(runs, acc).verdict == "supported"  # 60 vs 24 right of 80 paired rows, 36 discordant one way
    assert claim_c(runs, acc).verdict == "supported"  # target 0.9 x 97.5%: PLW 0 at step 10 in both seeds, PLW 1 never
    assert claim_d(runs, acc).verdict == "supported"  # 78 vs 60 of 80
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
    assert claim_d(runs, acc).verdict == "contradicted"  # PLW 0 at its completion-loss minimum: 14 vs 20
    assert claim_c(runs, acc).verdict == "contradicted"  # PLW 1 reaches 0.9 x 95% at step 10; PLW 0 never


def test_small_differences_are_inconclusive(tmp_path):
    runs = []
    for seed in (1, 2):
        runs.append(write_run(tmp_path / f"1-{seed}", 1.0, seed, [(0, 3, 3, 10), (10, 2, 2, 20), (20, 1, 1, 21)]))
        runs.append(write_run(tmp_path / f"0-{seed}", 0.0, seed, [(0, 3, 3, 10), (10, 2, 4, 21), (20, 1, 4, 22)]))
    acc = "eval_accuracy"
    for claim in (claim_a, claim_c, claim_d):
        assert claim(runs, acc).verdict == "inconclusive", claim.__name__
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
