"""`plw spectrum` on two sweep folders written by hand, so every number in the table and every test is known.

Each fake run evaluates 10 rows (ids 0-9) at steps 0, 10 and 20; step 20 is the final evaluation. Some runs have a
lower completion loss or a higher accuracy at step 10 than at the end, so a table built from the best evaluation
instead of the final one gives other numbers. The files follow what `plw train` writes: ``metrics.jsonl`` lines
(``plw.runner.MetricsJsonlCallback``), ``predictions.jsonl`` lines ``{"step", "id", "exact", "correct", "choice"}``
(``plw.metrics.StreamingMetrics.row_outcomes``: ``correct`` is -1 without answer choices), ``data_report.json``
with ``{"train"|"eval": {"rg": {"rg_mean": ...}}}`` and ``state.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from plw.cli import main
from plw.spectrum import compare, default_out, findings, load_spectrum, plot_spectrum, write_spectrum
from plw.uncertainty import wilson_interval

ROWS = 10
PNG = b"\x89PNG\r\n\x1a\n"

# (PLW, seed) -> [(step, completion loss, ids of the rows right)]. "short": letter answers (eval_accuracy).
SHORT = {
    (1.0, 1): [(0, 2.0, []), (10, 0.45, range(8)), (20, 0.50, range(5))],
    (1.0, 2): [(0, 2.0, []), (10, 0.70, range(3)), (20, 0.60, range(6))],
    (0.1, 1): [(0, 2.0, []), (10, 0.55, range(4)), (20, 0.40, range(1, 7))],
    (0.1, 2): [(0, 2.0, []), (10, 0.66, range(4)), (20, 0.65, range(7))],
    (0.0, 1): [(0, 2.0, []), (10, 0.28, range(10)), (20, 0.30, range(1, 10))],
    (0.0, 2): [(0, 2.0, []), (10, 0.40, range(9)), (20, 0.35, range(10))],
}
# "long": answers that are text (eval_exact_match, no answer choices).
LONG = {
    (1.0, 1): [(0, 3.0, []), (10, 1.30, range(2)), (20, 1.20, range(6))],
    (1.0, 2): [(0, 3.0, []), (10, 1.10, range(2)), (20, 1.00, range(6))],
    (0.1, 1): [(0, 3.0, []), (10, 1.20, range(2)), (20, 1.10, range(6))],
    (0.1, 2): [(0, 3.0, []), (10, 1.20, range(2)), (20, 1.05, range(6))],
    (0.0, 1): [(0, 3.0, []), (10, 1.25, range(5)), (20, 1.30, range(3))],
    (0.0, 2): [(0, 3.0, []), (10, 1.20, range(5)), (20, 1.25, range(3))],
}


def write_run(folder, plw, seed, evals, choices, rg_eval, rg_train, status="finished"):
    folder.mkdir(parents=True)
    config = {"prompt_loss_weight": plw, "seed": seed, "model": "tiny-llama", "lora": {"r": 4}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "state.json").write_text(json.dumps({"status": status, "step": evals[-1][0]}))
    report = {"train": {"kept": 30, "rg": {"rg_mean": rg_train}}, "eval": {"rg": {"rg_mean": rg_eval}}}
    (folder / "data_report.json").write_text(json.dumps(report))
    metrics, predictions = [], []
    for step, loss, right in evals:
        outcome = [int(i in set(right)) for i in range(ROWS)]
        line = {
            "step": step,
            "epoch": step / 20,
            "plw": plw,
            "train_loss": None if step == 0 else 1.0,
            "eval_prompt_loss": 2.5,
            "eval_completion_loss": loss,
            "eval_full_loss": 2.4,
            "eval_completion_token_accuracy": 0.5,
            "eval_exact_match": sum(outcome) / ROWS,
            "eval_rows": float(ROWS),
        }
        if choices:
            line |= {"eval_accuracy": sum(outcome) / ROWS, "eval_choice_accuracy": 0.5, "eval_answer_rows": 10.0}
        metrics.append(line)
        correct = outcome if choices else [-1] * ROWS
        predictions.append(
            {"step": step, "id": list(range(ROWS)), "exact": outcome, "correct": correct, "choice": [-1] * ROWS}
        )
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (folder / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))


def write_sweep(folder, table, choices, rg_eval, rg_train):
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps({"command": f"plw sweep {folder.name}.yaml", "seeds": [1, 2]}))
    for (plw, seed), evals in table.items():
        write_run(folder / f"plw={plw:g}" / f"seed={seed}", plw, seed, evals, choices, rg_eval, rg_train)
    return folder


@pytest.fixture
def sweeps(tmp_path):
    """Two sweep folders under ``tmp_path/spectrum``; the "short" one also holds an unfinished third seed."""
    root = tmp_path / "spectrum"
    short = write_sweep(root / "short", SHORT, True, rg_eval=0.02, rg_train=0.05)
    # Still running: its (bad) last evaluation is not a final one and must be left out.
    write_run(short / "plw=1" / "seed=3", 1.0, 3, [(0, 2.0, []), (10, 9.0, [])], True, 0.02, 0.05, "running")
    long = write_sweep(root / "long", LONG, False, rg_eval=3.0, rg_train=2.0)
    return long, short


def by_plw(dataset):
    return {s["plw"]: s for s in dataset["plw"]}


def test_table_is_the_final_evaluation_over_finished_runs(sweeps):
    datasets = load_spectrum(sweeps)
    assert [d.name for d in datasets] == ["short", "long"]  # ordered by Rg
    assert [d.rg for d in datasets] == [0.02, 3.0]  # the evaluation rows' Rg, not the training rows'
    assert [p.name for p in datasets[0].left_out] == ["seed=3"]
    short, long = (by_plw(d) for d in findings(datasets, "report.md")["datasets"])
    # By hand, final losses: short PLW 1: 0.50, 0.60; PLW 0.1: 0.40, 0.65; PLW 0: 0.30, 0.35.
    hand = {1.0: (0.55, 0.5, 0.6), 0.1: (0.525, 0.4, 0.65), 0.0: (0.325, 0.3, 0.35)}
    for plw, (mean, lo, hi) in hand.items():
        loss = short[plw]["completion_loss"]
        assert (loss["mean"], loss["min"], loss["max"]) == pytest.approx((mean, lo, hi), abs=1e-12), plw
        assert short[plw]["seeds"] == [1, 2] and short[plw]["steps"] == [20, 20]
    # Long: PLW 1: 1.20, 1.00; PLW 0.1: 1.10, 1.05; PLW 0: 1.30, 1.25.
    hand = {1.0: (1.1, 1.0, 1.2), 0.1: (1.075, 1.05, 1.1), 0.0: (1.275, 1.25, 1.3)}
    for plw, (mean, lo, hi) in hand.items():
        loss = long[plw]["completion_loss"]
        assert (loss["mean"], loss["min"], loss["max"]) == pytest.approx((mean, lo, hi), abs=1e-12), plw
    # Accuracy at the final evaluation: short PLW 0.1 right 6 and 7 of 10; PLW 0 right 9 and 10 of 10.
    a = short[0.1]["accuracy"]
    assert a["metric"] == "accuracy"
    assert (a["mean"], a["min"], a["max"], a["rows"], a["seeds"]) == pytest.approx((0.65, 0.6, 0.7, 10, 2))
    assert short[0.0]["accuracy"]["mean"] == pytest.approx(19 / 20)
    assert long[1.0]["accuracy"]["metric"] == "exact_match" and long[1.0]["accuracy"]["mean"] == 0.6


def test_accuracy_intervals_count_rows_not_rows_times_seeds(sweeps):
    """Two seeds: the interval is a bootstrap over the 10 evaluation rows (each row's two seeds together), not a
    Wilson interval over 20 "rows"; with every row right or wrong in both seeds it is Wilson over the 10 rows."""
    short, long = (by_plw(d) for d in findings(load_spectrum(sweeps), "report.md")["datasets"])
    for summary in (short[1.0], short[0.1], short[0.0]):
        a = summary["accuracy"]
        assert a["rows"] == ROWS and a["method"] == "row bootstrap"
        assert a["lo"] <= a["mean"] <= a["hi"]
    # Short PLW 1: rows 0-4 right in both seeds, row 5 in one, rows 6-9 in none. Pooling the seeds as 20 rows would
    # give Wilson(11, 20) = [34.2%, 74.2%]; the 10 rows resampled spread wider.
    a = short[1.0]["accuracy"]
    assert a["hi"] - a["lo"] > 0.742 - 0.342
    # Long PLW 1: rows 0-5 right and 6-9 wrong in both seeds: every row's mean is 0 or 1, so Wilson(6, 10).
    a = long[1.0]["accuracy"]
    assert a["method"] == "Wilson" and (a["lo"], a["hi"]) == pytest.approx(wilson_interval(6, ROWS), abs=1e-12)


def test_row_level_tests_on_constructed_rows(sweeps):
    short, long = (
        {c.plw: c for c in compare(d)} for d in sorted(load_spectrum(sweeps), key=lambda d: d.name != "short")
    )
    # Short, PLW 0 vs PLW 1 at the end, each row's mean over the 2 seeds: PLW 1 rows 0-4: 1, row 5: 0.5, 6-9: 0;
    # PLW 0 row 0: 0.5, rows 1-9: 1. Differences x 2: row 0: -1, row 5: +1, rows 6-9: +2; sum 8 of at most 10.
    # Of the 2^6 sign patterns, |sum| >= 8 needs all four 2s on one side and the 1s not both against: 2 x 3 = 6.
    p = short[0.0].paired
    assert (p.rows, p.seeds, p.a_better, p.b_better) == (10, 2, 5, 1)
    assert (p.mean_a, p.mean_b) == pytest.approx((0.95, 0.55))
    assert p.p_value == pytest.approx(6 / 64, rel=1e-12)  # pooling the seeds as rows gave McNemar 22/1024
    # PLW 0.1 vs PLW 1: differences x 2: row 0: -1, row 5: +1, row 6: +2; |sum| >= 2 in 6 of 8 patterns.
    assert (short[0.1].paired.a_better, short[0.1].paired.b_better) == (2, 1)
    assert short[0.1].paired.p_value == pytest.approx(0.75, rel=1e-12)
    # Long, exact match: PLW 0 right on rows 0-2, PLW 1 on rows 0-5, both seeds: 3 rows at -2 each: p = 2 / 2^3.
    assert (long[0.0].paired.a_better, long[0.0].paired.b_better) == (0, 3)
    assert long[0.0].paired.p_value == pytest.approx(2 / 8, rel=1e-12)
    assert long[0.1].paired.p_value == 1.0 and long[0.1].paired.informative  # the same rows right
    assert short[0.0].lower == 2 and short[0.1].lower == 1 and short[0.1].higher == 1 and long[0.0].higher == 2


def test_findings_are_worded_no_stronger_than_the_test(sweeps):
    short, long = (d for d in findings(load_spectrum(sweeps), "report.md")["datasets"])
    assert short["finding"].startswith(
        "PLW 0.1 had lower completion loss than PLW 1 in 1 of 2 seeds (0.525 vs 0.55 mean), and its accuracy was "
        "not distinguishable from PLW 1's (65.0% ["
    )
    # 95% vs 55% looks large, but at row level p = 6/64: not distinguishable, and no direction is named.
    assert (
        "PLW 0 had lower completion loss than PLW 1 in 2 of 2 seeds (0.325 vs 0.55 mean), and its accuracy was "
        "not distinguishable from PLW 1's (95.0% [" in short["finding"]
    )
    assert short["finding"].endswith("on 10 rows x 2 seeds, right per seed: 9 vs 5, 10 vs 6, row-level p = 0.094)")
    assert "higher" not in short["finding"] and "McNemar" not in short["finding"]
    assert "its exact_match was not distinguishable from PLW 1's (30.0% [" in long["finding"]
    # The other PLWs against each other: PLW 0 vs PLW 0.1.
    (pair,) = short["pairwise"]
    assert (pair["plw"], pair["against"], pair["paired"]["rows"]) == (0.0, 0.1, ROWS)


def test_metric_at_zero_everywhere_is_not_informative(tmp_path):
    """No run gets a row right: the finding says the metric is not informative, and quotes no p-value."""
    folder = tmp_path / "zero"
    for plw in (1.0, 0.0):
        for seed in (1, 2):
            write_run(folder / f"plw={plw:g}" / f"seed={seed}", plw, seed, [(0, 3.0, []), (20, 1.0, [])], False, 1, 1)
    (d,) = findings(load_spectrum([folder]), "report.md")["datasets"]
    assert d["finding"] == (
        "PLW 0 had the same completion loss as PLW 1 in all 2 seeds (1), and its exact_match is not informative: "
        "0.0% in every run of both PLWs on 10 rows x 2 seeds"
    )
    assert d["comparisons"][0]["paired"]["informative"] is False
    assert "p =" not in d["finding"] and "distinguishable" not in d["finding"]


def test_one_seed_says_so(tmp_path):
    folder = tmp_path / "one"
    write_run(folder / "plw=1", 1.0, 42, LONG[(1.0, 1)], False, 1.5, 1.5)
    write_run(folder / "plw=0", 0.0, 42, LONG[(0.1, 1)], False, 1.5, 1.5)
    (d,) = findings(load_spectrum([folder]), "report.md")["datasets"]
    assert d["finding"] == (
        "PLW 0 had lower completion loss than PLW 1 (1.1 vs 1.2; one seed), and its exact_match was not "
        "distinguishable from PLW 1's (60.0% [31.3%, 83.2%] vs 60.0% [31.3%, 83.2%] on 10 rows, one seed, "
        "row-level p = 1)"
    )
    lo, hi = wilson_interval(6, 10)  # one seed: the Wilson interval
    assert f"[{100 * lo:.1f}%, {100 * hi:.1f}%]" == "[31.3%, 83.2%]"
    (folder / "plw=0" / "predictions.jsonl").unlink()
    (d,) = findings(load_spectrum([folder]), "report.md")["datasets"]
    assert d["finding"].endswith("one seed), and its exact_match has no per-row outcomes to pair")


def test_cli_writes_figure_report_and_findings(sweeps, tmp_path, capsys, monkeypatch):
    long, short = sweeps
    packaged = tmp_path / "pkg" / "spectrum_findings.json"
    assert main(["spectrum", str(long), str(short), "--findings", str(packaged)]) == 0
    out = tmp_path / "spectrum"  # the sweeps' common parent
    assert str(out / "report.md") in capsys.readouterr().out
    assert (out / "spectrum.png").read_bytes()[:8] == PNG
    summary = json.loads((out / "findings.json").read_text())
    assert json.loads(packaged.read_text()) == summary
    assert summary["report"] == str(out / "report.md")
    assert [d["name"] for d in summary["datasets"]] == ["short", "long"]
    report = (out / "report.md").read_text()
    assert "| short | 0.02 | 1 | 2 | 0.5500 [0.5000–0.6000] |" in report
    assert "over 10 rows (row bootstrap) |" in report and "34.2%" not in report
    assert "Huerta-Enochian & Ko (2024) report that" in report
    assert f"plw spectrum {long} {short} --findings {packaged}" in report
    assert "short/plw=1/seed=3" in report  # named as left out
    assert ". Measured with tiny-llama, LoRA r4, 30 training rows, 20 steps, 10 evaluation rows, seeds 1,2." in report
    # plw stats reads what plw spectrum wrote: a dataset of Rg 0.02 in words gets the "short" finding.
    import plw.stats

    monkeypatch.setattr(plw.stats, "SPECTRUM_FINDINGS", packaged)
    rows = [{"prompt": " ".join(["w"] * 50), "completion": "x"}] * 2
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["stats", str(data), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert (
        f"Nearest measured Rg to mine (Rg mean 0.02): short (Rg 0.02) in the spectrum study ({out / 'report.md'})"
        in printed
    )
    assert summary["datasets"][0]["finding"] in printed
    assert f"Measured with {summary['datasets'][0]['scope']}: a small study" in printed
    # 95% vs 55% at row level p = 0.094: no basis for a suggestion.
    assert "\nSuggested prompt_loss_weight: no measured basis at this Rg: on short (Rg 0.02)" in printed


def test_default_out_is_the_common_parent(tmp_path):
    assert default_out(["docs/results/spectrum/a", "docs/results/spectrum/b/"]) == Path("docs/results/spectrum")
    assert default_out(["r/x/a", "r/y/b"]) == Path("r")
    assert default_out(["r/x/a"]) == Path("r/x")
    assert default_out([tmp_path / "x" / "a", "r/b"]).is_absolute()


def test_explicit_out_and_plot(sweeps, tmp_path):
    report = write_spectrum(sweeps, tmp_path / "elsewhere", command="plw spectrum ...")
    assert report == tmp_path / "elsewhere" / "report.md" and "plw spectrum ..." in report.read_text()
    # A dataset without any accuracy still gets its loss line; the accuracy panel says so.
    datasets = load_spectrum([sweeps[0]])
    for run in datasets[0].runs:
        for line in run.lines:
            line.pop("eval_exact_match")
            line.pop("eval_completion_token_accuracy")
    assert datasets[0].accuracy_key is None
    assert plot_spectrum(datasets, tmp_path / "p.png").read_bytes()[:8] == PNG


def test_folders_without_finished_runs_are_clear_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["spectrum", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"plw spectrum: error: {tmp_path / 'empty'}: no finished runs" in err
    write_run(tmp_path / "busy" / "plw=1", 1.0, 1, LONG[(1.0, 1)], False, 1.0, 1.0, status="running")
    assert main(["spectrum", str(tmp_path / "busy"), "--out", str(tmp_path / "o")]) == 2
    assert f"{tmp_path / 'busy'}: no finished runs" in capsys.readouterr().err
    assert main(["spectrum", str(tmp_path / "missing")]) == 2
    assert "missing: no such sweep folder" in capsys.readouterr().err
    write_run(tmp_path / "a" / "x" / "plw=1", 1.0, 1, LONG[(1.0, 1)], False, 1.0, 1.0)
    write_run(tmp_path / "b" / "x" / "plw=1", 1.0, 1, LONG[(1.0, 1)], False, 1.0, 1.0)
    assert main(["spectrum", str(tmp_path / "a" / "x"), str(tmp_path / "b" / "x")]) == 2
    assert "share the name 'x'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_findings_say_what_each_dataset_was_measured_with(sweeps):
    out = findings(load_spectrum(sweeps), "r.md")
    scopes = {d["name"]: d["scope"] for d in out["datasets"]}
    # The unfinished seed 3 of "short" is left out of the seeds, as it is of the numbers.
    assert scopes == {
        "short": "tiny-llama, LoRA r4, 30 training rows, 20 steps, 10 evaluation rows, seeds 1,2",
        "long": "tiny-llama, LoRA r4, 30 training rows, 20 steps, 10 evaluation rows, seeds 1,2",
    }
