"""The ordering of PLWs (plw.verdicts.ordering, the report's opening line) and the learning-rate control
(plw.lr_control): the learning rate is chosen on selection rows only, and the held-out comparison is the exact
row-level test, checked against the binomial computed by hand."""

from __future__ import annotations

import json
from math import comb

import pytest
import yaml

from plw.analysis import load_run
from plw.cli import main
from plw.lr_control import find_trials, pick_learning_rates, render
from plw.report import ordering_lines
from plw.verdicts import ordering


def write_folder(folder, plw, seed, right, rows, lr=None, loss=0.5, finished=True):
    """A run (or plw eval) folder with one final evaluation where the rows listed in ``right`` are right
    (generated-answer accuracy)."""
    folder.mkdir(parents=True)
    config = {"prompt_loss_weight": plw, "seed": seed}
    if lr is not None:
        config["learning_rate"] = lr
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    correct = [int(i in right) for i in range(rows)]
    line = {
        "step": 48,
        "epoch": 1.0,
        "plw": plw,
        "eval_completion_loss": loss,
        "eval_full_loss": loss + 1,
        "eval_generated_accuracy": sum(correct) / rows,
        "eval_generated_rows": rows,
        "eval_rows": rows,
    }
    (folder / "metrics.jsonl").write_text(json.dumps(line) + "\n")
    (folder / "predictions.jsonl").write_text(
        json.dumps({"step": 48, "id": list(range(rows)), "generated_correct": correct}) + "\n"
    )
    (folder / "state.json").write_text(json.dumps({"status": "finished" if finished else "running"}))
    return load_run(folder)


def test_ordering_ranks_by_mean_and_tests_the_best_against_each_other(tmp_path):
    # 20 rows. PLW 0.1: rows 0-17 right; PLW 0: rows 0-15; PLW 1: rows 0-5.
    runs = [
        write_folder(tmp_path / "a", 1.0, 1, set(range(6)), 20),
        write_folder(tmp_path / "b", 0.1, 1, set(range(18)), 20),
        write_folder(tmp_path / "c", 0.0, 1, set(range(16)), 20),
    ]
    o = ordering(runs, "eval_generated_accuracy")
    assert [label for label, _ in o.ranked] == ["PLW 0.1", "PLW 0", "PLW 1"]
    assert [mean for _, mean in o.ranked] == pytest.approx([0.9, 0.8, 0.3])
    by = dict(o.against_best)
    # Exact McNemar by hand: 0.1 vs 0 has 2 discordant rows, both for 0.1: p = 2 * 0.5**2 = 0.5.
    assert by["PLW 0"].p_value == pytest.approx(0.5)
    # 0.1 vs 1: 12 discordant rows, all for 0.1: p = 2 * 0.5**12.
    assert by["PLW 1"].p_value == pytest.approx(2 * 0.5**12)
    assert o.tied_with_best() == ["PLW 0"]
    text = ordering_lines(runs, "eval_generated_accuracy")[0]
    assert "PLW 0.1 90.0%" in text and text.index("PLW 0.1") < text.index("PLW 0 ") < text.index("PLW 1 ")
    assert (
        "Paired on 20 rows, one seed, the most accurate, PLW 0.1, cannot be told apart (p >= 0.05) from PLW 0 (p = 0.5)"
        in text
    )
    assert "more accurate than PLW 1 (+60.0 points" in text


def test_ordering_with_a_split_discordance(tmp_path):
    # 10 discordant rows, 8 for PLW 0 and 2 for PLW 1: p = 2 * P(X <= 2), X ~ Bin(10, 1/2).
    runs = [
        write_folder(tmp_path / "a", 1.0, 1, {0, 1}, 30),
        write_folder(tmp_path / "b", 0.0, 1, set(range(2, 10)), 30),
    ]
    o = ordering(runs, "eval_generated_accuracy")
    assert o.best == "PLW 0"
    expected = 2 * sum(comb(10, k) for k in range(3)) / 2**10
    assert o.against_best[0][1].p_value == pytest.approx(expected)


def make_study(tmp_path):
    """PLW 1 and 0 at two learning rates. Selection rows prefer lr 8e-3 for PLW 1 and 2e-3 for PLW 0; the held-out
    rows would prefer the other rate for PLW 1 (a rule that peeked at them would pick 2e-3 there)."""
    root = tmp_path / "lr-control"
    for lr, plw, sel_right, held_right in [
        (2e-3, 1.0, 5, 12),
        (8e-3, 1.0, 9, 6),
        (2e-3, 0.0, 10, 20),
        (8e-3, 0.0, 4, 3),
    ]:
        run = root / f"lr={lr:g}" / f"plw={plw:g}" / "seed=1"
        write_folder(run, plw, 1, set(range(sel_right)), 10, lr=lr)
        write_folder(run / "heldout", plw, 1, set(range(held_right)), 20)
    return root


def test_learning_rates_are_chosen_on_selection_rows_only(tmp_path):
    trials = find_trials(make_study(tmp_path))
    assert len(trials) == 4 and all(t.heldout is not None for t in trials)
    picks = pick_learning_rates(trials)
    assert picks[1.0].learning_rate == pytest.approx(8e-3)
    assert picks[0.0].learning_rate == pytest.approx(2e-3)


def test_ties_go_to_lower_loss_then_lower_rate_and_unfinished_runs_are_not_candidates(tmp_path):
    root = tmp_path / "lr-control"
    write_folder(root / "lr=0.001" / "plw=1" / "seed=1", 1.0, 1, {0, 1}, 10, lr=1e-3, loss=0.4)
    write_folder(root / "lr=0.002" / "plw=1" / "seed=1", 1.0, 1, {0, 1}, 10, lr=2e-3, loss=0.3)
    write_folder(root / "lr=0.004" / "plw=1" / "seed=1", 1.0, 1, {0, 1}, 10, lr=4e-3, loss=0.3)
    write_folder(root / "lr=0.008" / "plw=1" / "seed=1", 1.0, 1, set(range(9)), 10, lr=8e-3, finished=False)
    picks = pick_learning_rates(find_trials(root))
    assert picks[1.0].learning_rate == pytest.approx(2e-3)


def test_report_compares_each_plw_at_its_chosen_rate(tmp_path):
    root = make_study(tmp_path)
    text, findings = render(root, "bash scripts/how-much.sh b")
    assert findings["chosen_learning_rates"] == {"1": pytest.approx(8e-3), "0": pytest.approx(2e-3)}
    at_chosen = findings["at_chosen"]
    assert at_chosen["best"] == "0"
    # Held-out: PLW 0 (lr 2e-3) right on all 20 rows, PLW 1 (lr 8e-3) on rows 0-5: 14 discordant, all for PLW 0.
    assert at_chosen["against_best"][0]["p"] == pytest.approx(2 * 0.5**14)
    assert at_chosen["against_best"][0]["difference"] == pytest.approx(0.7)
    assert "Chosen learning rates: PLW 1: 0.008, PLW 0: 0.002." in text
    assert set(findings["by_learning_rate"]) == {"0.002", "0.008"}
    assert main(["lr-control", str(root)]) == 0
    assert (root / "report.md").exists() and json.loads((root / "findings.json").read_text())["at_chosen"]


def test_an_empty_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["lr-control", str(tmp_path)]) == 2
    assert "no runs under lr=*/" in capsys.readouterr().err


def test_ordering_names_each_comparisons_seeds_when_groups_differ(tmp_path):
    # PLW 0 and 0.1 have seeds 1-3, PLW 1 seeds 1-2: each pair is made on the seeds both have.
    runs = [write_folder(tmp_path / f"p0-s{s}", 0.0, s, set(range(9)), 10) for s in (1, 2, 3)]
    runs += [write_folder(tmp_path / f"p01-s{s}", 0.1, s, set(range(8)), 10) for s in (1, 2, 3)]
    runs += [write_folder(tmp_path / f"p1-s{s}", 1.0, s, set(range(2)), 10) for s in (1, 2)]
    text = ordering_lines(runs, "eval_generated_accuracy")[0]
    assert "Paired on the seeds each pair shares, the most accurate, PLW 0," in text
    assert "PLW 0.1 (p = 1, 10 rows x 3 seeds)" in text
    # PLW 0 vs 1 over seeds 1-2: rows 2-8 right at PLW 0 in both seeds, wrong at PLW 1: 7 rows, p = 2 * 0.5**7.
    assert f"p = {2 * 0.5**7:.2g}, 10 rows x 2 seeds)" in text
