"""`plw sweep` on a tiny model: run folders, figures, a report whose numbers match metrics.jsonl, no reruns."""

from __future__ import annotations

import json

import pytest
import yaml

from plw.cli import main
from tests.conftest import save_tiny_model

PLW_ARG = "1,0,1->0:linear"  # two constants and a schedule


@pytest.fixture(scope="module")
def sweep_setup(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("sweep")
    model_dir = root / "model"
    save_tiny_model(model_dir, tokenizer, seed=4)
    config = root / "sweep.yaml"
    config.write_text(
        yaml.safe_dump(
            {
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
            }
        )
    )
    assert main(["sweep", str(config), "--plw", PLW_ARG, "--no-progress"]) == 0
    return root / "runs" / "tiny-sweep", config


def expected_row(lines):
    """The report's numbers, recomputed here from metrics.jsonl."""
    at_c = min(lines, key=lambda x: x["eval_completion_loss"])
    at_f = min(lines, key=lambda x: x["eval_full_loss"])
    best = max(lines, key=lambda x: x["eval_accuracy"])
    within = next(x for x in lines if x["eval_accuracy"] >= best["eval_accuracy"] - 0.01)
    return [
        f"{at_c['eval_completion_loss']:.4f}",
        f"{at_c['epoch']:.2f}",
        f"{100 * at_c['eval_accuracy']:.1f}%",
        f"{at_f['epoch']:.2f}",
        f"{100 * at_f['eval_accuracy']:.1f}%",
        f"{100 * best['eval_accuracy']:.1f}%",
        f"{best['epoch']:.2f}",
        f"{within['epoch']:.2f}",
        f"{100 * lines[0]['eval_accuracy']:.1f}%",
    ]


def test_sweep_writes_runs_figures_and_report(sweep_setup):
    sweep_dir, _ = sweep_setup
    report = (sweep_dir / "report.md").read_text()
    table = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in report.splitlines()
        if line.startswith("| ") and not line.startswith("| PLW")
    }
    assert set(table) == {"1", "0", "1→0 linear"}  # --plw on the command line wins over plw_values
    # A schedule records the weight of the objective at each evaluation: 1 - step / 4 over the 4 steps.
    for plws, label, folder in (
        ([1.0] * 5, "1", "1"),
        ([0.0] * 5, "0", "0"),
        ([1.0, 0.75, 0.5, 0.25, 0.0], "1→0 linear", "1to0-linear"),
    ):
        run = sweep_dir / f"plw={folder}"
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert [x["step"] for x in lines] == [0, 1, 2, 3, 4]
        assert [x["plw"] for x in lines] == pytest.approx(plws)
        assert json.loads((run / "state.json").read_text())["status"] == "finished"
        assert (run / "plots" / "losses.png").stat().st_size > 10_000
        assert table[label] == expected_row(lines)
    for figure in ("sweep_curves.png", "sweep_best.png"):
        assert (sweep_dir / "plots" / figure).stat().st_size > 10_000
        assert f"plots/{figure}" in report
    assert "plw sweep" in report and "--plw '1,0,1->0:linear'" in report
    assert "Rg arithmetic mean" in report


def test_restarting_a_finished_sweep_reruns_nothing(sweep_setup, capsys):
    sweep_dir, config = sweep_setup
    before = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("plw=*/metrics.jsonl")}
    assert main(["sweep", str(config), "--plw", PLW_ARG, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("already finished, skipped") == 3
    assert before == {p: p.stat().st_mtime_ns for p in sweep_dir.glob("plw=*/metrics.jsonl")}


def test_plot_command_redraws(sweep_setup, capsys):
    sweep_dir, _ = sweep_setup
    assert main(["plot", str(sweep_dir / "plw=1"), str(sweep_dir)]) == 0
    assert "losses.png" in capsys.readouterr().out
    assert "--plw '1,0,1->0:linear'" in (sweep_dir / "report.md").read_text()  # the command survives a redraw
    assert main(["plot", str(sweep_dir / "nothing-here")]) == 2


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
