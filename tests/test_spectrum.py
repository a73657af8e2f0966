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
    assert (a["mean"], a["min"], a["max"], a["correct"], a["rows"]) == pytest.approx((0.65, 0.6, 0.7, 13, 20))
    assert short[0.0]["accuracy"]["pooled"] == pytest.approx(19 / 20)
    assert long[1.0]["accuracy"]["metric"] == "exact_match" and long[1.0]["accuracy"]["correct"] == 12


def test_pooled_accuracy_has_the_wilson_interval_of_the_summed_counts(sweeps):
    short, long = (by_plw(d) for d in findings(load_spectrum(sweeps), "report.md")["datasets"])
    cases = [(short[1.0], 5 + 6), (short[0.1], 6 + 7), (short[0.0], 9 + 10), (long[1.0], 6 + 6), (long[0.0], 3 + 3)]
    for summary, right in cases:
        a = summary["accuracy"]
        assert (a["correct"], a["rows"]) == (right, 2 * ROWS)
        assert (a["lo"], a["hi"]) == pytest.approx(wilson_interval(right, 2 * ROWS), abs=1e-12)
    # By hand for 11 of 20: p = 0.55, z = 1.959964, centre = (p + z²/40) / (1 + z²/20),
    # half = z·sqrt(p(1-p)/20 + z²/1600) / (1 + z²/20).
    a = short[1.0]["accuracy"]
    assert (a["lo"], a["hi"]) == pytest.approx((0.3420853, 0.7418021), abs=2e-6)


def test_mcnemar_on_constructed_discordant_rows(sweeps):
    short, long = (
        {c.plw: c for c in compare(d)} for d in sorted(load_spectrum(sweeps), key=lambda d: d.name != "short")
    )
    # Short, PLW 0 vs PLW 1 at the end: seed 1 rows 5-9 right only at PLW 0, row 0 only at PLW 1; seed 2 rows 6-9
    # only at PLW 0. 9 vs 1 discordant rows: p = 2 · (C(10,0) + C(10,1)) / 2^10 = 22 / 1024.
    p = short[0.0].mcnemar
    assert (p.n, p.only_a, p.only_b, p.correct_a, p.correct_b) == (20, 9, 1, 19, 11)
    assert p.p_value == pytest.approx(22 / 1024, rel=1e-12)
    # PLW 0.1 vs PLW 1: 3 vs 1 discordant: p = 2 · (1 + 4) / 16 = 0.625.
    assert (short[0.1].mcnemar.only_a, short[0.1].mcnemar.only_b) == (3, 1)
    assert short[0.1].mcnemar.p_value == pytest.approx(0.625, rel=1e-12)
    # Long, exact match: PLW 0 right on rows 0-2, PLW 1 on rows 0-5, both seeds: 0 vs 6, p = 2 / 2^6.
    assert (long[0.0].mcnemar.only_a, long[0.0].mcnemar.only_b) == (0, 6)
    assert long[0.0].mcnemar.p_value == pytest.approx(2 / 64, rel=1e-12)
    assert long[0.1].mcnemar.p_value == 1.0  # the same rows right: no discordant row
    assert short[0.0].lower == 2 and short[0.1].lower == 1 and short[0.1].higher == 1 and long[0.0].higher == 2


def test_findings_are_worded_no_stronger_than_the_test(sweeps):
    short, long = (d["finding"] for d in findings(load_spectrum(sweeps), "report.md")["datasets"])
    assert short == (
        "PLW 0.1 had lower completion loss than PLW 1 in 1 of 2 seeds (0.525 vs 0.55 mean), and its accuracy was "
        "not distinguishable from PLW 1's (65.0% vs 55.0% on 20 paired rows, p = 0.625); "
        "PLW 0 had lower completion loss than PLW 1 in 2 of 2 seeds (0.325 vs 0.55 mean), and its accuracy was "
        "higher (95.0% vs 55.0% on 20 paired rows, McNemar p = 0.0215)"
    )
    assert long == (
        "PLW 0.1 had lower completion loss than PLW 1 in 1 of 2 seeds (1.075 vs 1.1 mean), and its exact_match was "
        "not distinguishable from PLW 1's (60.0% vs 60.0% on 20 paired rows, p = 1); "
        "PLW 0 had higher completion loss than PLW 1 in 2 of 2 seeds (1.275 vs 1.1 mean), and its exact_match was "
        "lower (30.0% vs 60.0% on 20 paired rows, McNemar p = 0.0312)"
    )


def test_one_seed_says_so(tmp_path):
    folder = tmp_path / "one"
    write_run(folder / "plw=1", 1.0, 42, LONG[(1.0, 1)], False, 1.5, 1.5)
    write_run(folder / "plw=0", 0.0, 42, LONG[(0.1, 1)], False, 1.5, 1.5)
    (d,) = findings(load_spectrum([folder]), "report.md")["datasets"]
    assert d["finding"] == (
        "PLW 0 had lower completion loss than PLW 1 (1.1 vs 1.2; one seed), and its exact_match was not "
        "distinguishable from PLW 1's (60.0% vs 60.0% on 10 paired rows, p = 1)"
    )
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
    assert "11/20 = 55.0% [34.2%, 74.2%]" in report
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
