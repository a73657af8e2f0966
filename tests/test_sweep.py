"""`plw sweep` on a tiny model: run folders, figures, a report whose numbers match metrics.jsonl, no reruns."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from plw.cli import main
from tests.conftest import save_tiny_model

PLW_ARG = "1,0,1->0:linear"  # two constants and a schedule
SEEDS = (1, 2)


@pytest.fixture(scope="module")
def sweep_setup(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("sweep")
    model_dir = root / "model"
    save_tiny_model(model_dir, tokenizer, seed=4)
    config = root / "sweep.yaml"
    values = {
        "name": "tiny-sweep",
        "output_dir": str(root / "runs"),
        "model": str(model_dir),
        "train_data": {"source": "synthetic", "rows": 8, "seed": 1, "people": 4, "fillers": 0},
        "eval_data": {"source": "synthetic", "rows": 8, "seed": 2, "people": 4, "fillers": 0},
        "max_steps": 4,
        "batch_size": 2,
        "eval_steps": 1,
        "learning_rate": 0.01,
        "report_to": [],
        "bf16": False,
        "plw_values": [1.0, 0.5],
        "seeds": [7],
    }
    config.write_text(yaml.safe_dump(values))
    args = ["sweep", str(config), "--plw", PLW_ARG, "--seeds", ",".join(map(str, SEEDS)), "--no-progress"]
    assert main(args) == 0
    return root / "runs" / "tiny-sweep", config, args, values


def read_lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def expected_row(lines):
    """The report's per-run numbers, recomputed here from metrics.jsonl."""
    at_c = min(lines, key=lambda x: x["eval_completion_loss"])
    at_f = min(lines, key=lambda x: x["eval_full_loss"])
    best = max(lines, key=lambda x: x["eval_accuracy"])
    return [
        f"{at_c['eval_completion_loss']:.4f}",
        f"{at_c['epoch']:.2f}",
        f"{100 * at_c['eval_accuracy']:.1f}%",
        f"{at_f['epoch']:.2f}",
        f"{100 * at_f['eval_accuracy']:.1f}%",
        f"{100 * lines[-1]['eval_accuracy']:.1f}%",
        f"{100 * best['eval_accuracy']:.1f}%",
        f"{100 * lines[0]['eval_accuracy']:.1f}%",
    ]


def test_sweep_writes_runs_figures_and_report(sweep_setup):
    sweep_dir, *_ = sweep_setup
    report = (sweep_dir / "report.md").read_text()
    per_run = report.split("## Per run", 1)[1].split("\n## ", 1)[0]
    table = {
        tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")[3:-1]]
        for line in per_run.splitlines()
        if line.startswith("| ") and not line.startswith("| PLW |")
    }
    # --plw and --seeds on the command line win over plw_values and seeds.
    assert set(table) == {(v, str(s)) for v in ("1", "0", "1→0 linear") for s in SEEDS}
    # A schedule records the weight of the objective at each evaluation: 1 - step / 4 over the 4 steps.
    for plws, label, folder in (
        ([1.0] * 5, "1", "1"),
        ([0.0] * 5, "0", "0"),
        ([1.0, 0.75, 0.5, 0.25, 0.0], "1→0 linear", "1to0-linear"),
    ):
        for seed in SEEDS:
            run = sweep_dir / f"plw={folder}" / f"seed={seed}"
            lines = read_lines(run / "metrics.jsonl")
            assert [x["step"] for x in lines] == [0, 1, 2, 3, 4]
            assert [x["plw"] for x in lines] == pytest.approx(plws)
            assert json.loads((run / "state.json").read_text())["status"] == "finished"
            assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == seed
            assert (run / "plots" / "losses.png").stat().st_size > 10_000
            assert table[(label, str(seed))] == expected_row(lines)
    for figure in ("sweep_curves.png", "sweep_best.png"):
        assert (sweep_dir / "plots" / figure).stat().st_size > 10_000
        assert f"plots/{figure}" in report
    assert "plw sweep" in report and "--plw '1,0,1->0:linear' --seeds 1,2" in report
    assert "Rg arithmetic mean" in report
    for claim in "abcd":
        verdict = re.search(rf"\*\*\({claim}\) ([\w ]+)\.\*\*", report)
        assert verdict and verdict.group(1) in (
            "supported",
            "contradicted",
            "inconclusive",
            "not measured",
            "not informative",
        ), claim


def test_seeds_change_the_data_order(sweep_setup):
    sweep_dir, *_ = sweep_setup
    losses = [
        [x["train_loss"] for x in read_lines(sweep_dir / "plw=1" / f"seed={s}" / "metrics.jsonl")[1:]] for s in SEEDS
    ]
    assert losses[0] != pytest.approx(losses[1], rel=1e-4)


def test_a_seed_is_reproducible(sweep_setup, tmp_path):
    """Training PLW 0 with seed 2 again, alone, gives the sweep's metrics for that run."""
    from plw.config import from_dict
    from plw.runner import train_run

    sweep_dir, _, _, values = sweep_setup
    config = dict(values, name="again", output_dir=str(tmp_path), prompt_loss_weight=0.0, seed=2)
    config.pop("plw_values"), config.pop("seeds")
    again = read_lines(train_run(from_dict(config), progress=False) / "metrics.jsonl")
    first = read_lines(sweep_dir / "plw=0" / "seed=2" / "metrics.jsonl")
    for a, b in zip(again, first, strict=True):
        assert (a["train_loss"] is None) == (b["train_loss"] is None)  # none before the first step
        for key in ("train_loss", "eval_completion_loss", "eval_full_loss", "eval_accuracy"):
            if b[key] is not None:
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key


def test_predictions_are_written_and_agree_with_the_metrics(sweep_setup):
    """predictions.jsonl has one line per evaluation with every validation row; its shares are the metrics."""
    from plw.analysis import load_run

    sweep_dir, *_ = sweep_setup
    for run_dir in sorted(sweep_dir.glob("plw=*/seed=*")):
        metrics = read_lines(run_dir / "metrics.jsonl")
        predictions = read_lines(run_dir / "predictions.jsonl")
        assert [p["step"] for p in predictions] == [m["step"] for m in metrics]
        run = load_run(run_dir)
        for m, p in zip(metrics, predictions, strict=True):
            assert p["id"] == list(range(8))
            assert sum(p["exact"]) / 8 == pytest.approx(m["eval_exact_match"])
            answered = [c for c in p["correct"] if c >= 0]
            assert len(answered) == m["eval_answer_rows"]
            assert sum(answered) / len(answered) == pytest.approx(m["eval_accuracy"])
            assert set(p["choice"]) <= {-1, 0, 1, 2, 3}
            assert run.outcomes(m["step"], "eval_accuracy") == dict(enumerate(p["correct"]))


def test_report_intervals_and_paired_counts(sweep_setup):
    """The paired comparison of PLW 0 vs PLW 1 at the end, recomputed by hand with the evaluation row as the unit:
    each row's mean correctness over the 2 seeds, rows better on each side, and the sign-flip p by enumerating every
    sign pattern of the rows' differences."""
    import itertools

    sweep_dir, *_ = sweep_setup
    report = (sweep_dir / "report.md").read_text()
    finals = {
        v: [read_lines(sweep_dir / f"plw={v}" / f"seed={s}" / "predictions.jsonl")[-1] for s in SEEDS] for v in (1, 0)
    }
    means = {v: [sum(p["correct"][i] for p in finals[v]) / len(SEEDS) for i in range(8)] for v in (1, 0)}
    diffs = [a - b for a, b in zip(means[0], means[1], strict=True)]
    better_0, better_1 = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    nonzero = [d for d in diffs if d]
    hits = sum(
        abs(sum(s * d for s, d in zip(signs, nonzero, strict=True))) >= abs(sum(nonzero)) - 1e-9
        for signs in itertools.product((1, -1), repeat=len(nonzero))
    )
    p = hits / 2 ** len(nonzero) if nonzero and sum(nonzero) else 1.0
    if len(set(means[0] + means[1])) > 1:  # an informative accuracy
        assert "on 8 rows x 2 seeds; difference" in report
        assert f"rows better for PLW 0: {better_0}, for PLW 1: {better_1}; row-level p = {p:.2g}" in report
    else:
        assert "not informative" in report
    assert "rows (rows x seeds)" not in report and "16 paired rows" not in report


def test_restarting_a_finished_sweep_reruns_nothing(sweep_setup, capsys):
    sweep_dir, _, args, _ = sweep_setup
    before = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("plw=*/seed=*/metrics.jsonl")}
    assert len(before) == 6
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("already finished, skipped") == 6
    assert before == {p: p.stat().st_mtime_ns for p in sweep_dir.glob("plw=*/seed=*/metrics.jsonl")}


def test_plot_command_redraws(sweep_setup, capsys):
    sweep_dir, *_ = sweep_setup
    assert main(["plot", str(sweep_dir / "plw=1" / "seed=1"), str(sweep_dir)]) == 0
    assert "losses.png" in capsys.readouterr().out
    assert "--seeds 1,2" in (sweep_dir / "report.md").read_text()  # the command survives a redraw
    assert main(["plot", str(sweep_dir / "nothing-here")]) == 2


def test_bad_seeds():
    from plw.config import ConfigError
    from plw.sweep import parse_seeds

    assert parse_seeds("1, 2,3") == [1, 2, 3]
    for bad, msg in (("1,1", "each seed once"), ("a", "integers"), ("-1", ">= 0"), ("", "non-empty")):
        with pytest.raises(ConfigError, match=msg):
            parse_seeds(bad)


def test_bad_plw_list():
    from plw.config import ConfigError
    from plw.sweep import parse_plw_values

    assert parse_plw_values("1, 0.5,0") == [1.0, 0.5, 0.0]
    assert parse_plw_values("0.1, 1->0, 1->0.1:cosine") == [0.1, "1->0:linear", "1->0.1:cosine"]
    bad_values = (
        ("1,2", r"in \[0, 1\]"),
        ("a", "not a number"),
        ("0.1,0.1", "repeated"),
        ("1->0,1->0:linear", "repeated"),
        ("1->2", r"in \[0, 1\]"),
        ("1->0:wobbly", "shape"),
        ("", "at least one"),
    )
    for bad, msg in bad_values:
        with pytest.raises((ConfigError, ValueError), match=msg):
            parse_plw_values(bad)
