"""Crash safety: SIGKILL then resume gives the uninterrupted metrics; sweeps rerun only what did not finish;
bad data is counted exactly; a NaN loss stops the run naming the step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import plw.trainer
from plw.cli import main
from tests.conftest import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("robust")
    model_dir = root / "model"
    save_tiny_model(model_dir, tokenizer, seed=7)
    config = root / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(root / "runs"),
                "model": str(model_dir),
                "train_data": {"source": "synthetic", "rows": 16, "seed": 1, "people": 4, "fillers": 0},
                "eval_data": {"source": "synthetic", "rows": 6, "seed": 2, "people": 4, "fillers": 0},
                "max_steps": 8,
                "batch_size": 2,
                "eval_steps": 2,
                "learning_rate": 0.003,
                "report_to": [],
                "bf16": False,
                "device": "cpu",
                "prompt_loss_weight": 0.1,
                "lr_scheduler": "cosine",
                "warmup": 2,
            }
        )
    )
    return root, config


def lines_of(run_dir: Path) -> list[dict]:
    text = (run_dir / "metrics.jsonl").read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def killed(args: list[str], step: int, plw_value: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(ROOT / "tests" / "kill_worker.py"), str(step), str(plw_value), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_sigkill_then_resume_equals_uninterrupted(setup):
    root, config = setup
    assert main(["train", str(config), "--set", "name=whole", "--no-progress"]) == 0
    whole = lines_of(root / "runs" / "whole")

    proc = killed(["train", str(config), "--set", "name=crash", "--no-progress"], step=5, plw_value=0.1)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    crash = root / "runs" / "crash"
    assert json.loads((crash / "state.json").read_text())["status"] == "running"  # what a crash leaves
    assert [x["step"] for x in lines_of(crash)] == [0, 2, 4]
    assert (crash / "checkpoints" / "checkpoint-4").is_dir()

    # Without --resume the folder is protected; with it, training continues from step 4.
    assert main(["train", str(config), "--set", "name=crash", "--no-progress"]) == 2
    assert main(["train", str(config), "--set", "name=crash", "--no-progress", "--resume"]) == 0
    resumed = lines_of(crash)
    assert [x["step"] for x in resumed] == [x["step"] for x in whole] == [0, 2, 4, 6, 8]
    for a, b in zip(whole, resumed, strict=True):
        for key, value in a.items():
            if value is None:
                assert b[key] is None, (a["step"], key)
            elif key.startswith("eval_") and ("loss" in key or "accuracy" in key) or key == "train_loss":
                assert b[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (a["step"], key)
    assert json.loads((crash / "state.json").read_text())["status"] == "finished"
    assert not (crash / "checkpoints").exists()


def test_killed_sweep_reruns_only_the_unfinished_value(setup, capsys):
    root, config = setup
    args = ["sweep", str(config), "--set", "name=sw", "--plw", "1,0", "--no-progress"]
    proc = killed(args, step=3, plw_value=0.0)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    sweep = root / "runs" / "sw"
    assert json.loads((sweep / "plw=1" / "state.json").read_text())["status"] == "finished"
    assert json.loads((sweep / "plw=0" / "state.json").read_text())["status"] == "running"
    first = (sweep / "plw=1" / "metrics.jsonl").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "plw=1 already finished, skipped" in out
    assert "resuming" in out and "checkpoint-2" in out
    assert (sweep / "plw=1" / "metrics.jsonl").stat().st_mtime_ns == first
    assert [x["step"] for x in lines_of(sweep / "plw=0")] == [0, 2, 4, 6, 8]
    assert (sweep / "report.md").exists()


def test_data_report_counts_bad_lines_exactly(setup):
    root, config = setup
    data = root / "bad.jsonl"
    data.write_text(
        "\n".join(
            [
                '{"prompt": "one", "completion": "A"}',
                '{"prompt": "two", "completion": "B"',  # malformed
                "not json at all",  # malformed
                '{"prompt": "three"}',  # incomplete
                '{"prompt": "four", "completion": ""}',  # empty completion
                '{"prompt": 5, "completion": "C"}',  # wrong type
                '{"prompt": "six", "completion": "D"}',
                '{"prompt": "' + "long " * 400 + '", "completion": "E"}',  # too long for max_length
                '{"prompt": "eight", "completion": "A"}',
            ]
        )
        + "\n"
    )
    spec = json.dumps({"source": "jsonl", "path": str(data), "strict": False})
    assert (
        main(
            [
                "train",
                str(config),
                "--set",
                "name=bad-data",
                "--set",
                f"train_data={spec}",
                "--set",
                "max_length=256",
                "--set",
                "max_steps=1",
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads((root / "runs" / "bad-data" / "data_report.json").read_text())["train"]
    assert report["load"]["read"] == 9 and report["load"]["kept"] == 4
    assert report["load"]["dropped"] == {
        "malformed JSON": 2,
        "missing field 'completion'": 1,
        "empty completion": 1,
        "field 'prompt' must be a string": 1,
    }
    assert report["load"]["examples"]["malformed JSON"] == [f"{data}:2", f"{data}:3"]
    assert (report["read"], report["kept"], report["dropped"]) == (4, 3, {"too_long": 1})


def test_nan_loss_stops_naming_the_step(setup, monkeypatch):
    root, config = setup
    calls = {"n": 0}
    real = plw.trainer.chunked_weighted_nll_sum

    def poisoned(*args, **kwargs):
        total, weight = real(*args, **kwargs)
        calls["n"] += 1
        return (total * float("nan"), weight) if calls["n"] == 5 else (total, weight)

    monkeypatch.setattr(plw.trainer, "chunked_weighted_nll_sum", poisoned)
    with pytest.raises(plw.trainer.NonFiniteLossError, match="at optimizer step 5"):
        main(["train", str(config), "--set", "name=nan", "--set", "eval_on_start=false", "--no-progress"])
    run = root / "runs" / "nan"
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "failed" and "optimizer step 5" in state["error"]
    assert (run / "checkpoints" / "checkpoint-4").is_dir()  # the last good checkpoint is kept

    calls["n"] = 0
    assert (
        main(
            [
                "train",
                str(config),
                "--set",
                "name=nan-skip",
                "--set",
                "nonfinite=skip",
                "--set",
                "eval_on_start=false",
                "--no-progress",
            ]
        )
        == 0
    )
    assert [x["step"] for x in lines_of(root / "runs" / "nan-skip")] == [2, 4, 6, 8]
    state = json.loads((root / "runs" / "nan-skip" / "state.json").read_text())
    assert state["status"] == "finished" and state["skipped_nonfinite_batches"] == 1
