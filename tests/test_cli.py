"""`plw train` end to end on a tiny local model, and its one-line errors for bad input."""

from __future__ import annotations

import json

import pytest
import yaml

from plw.cli import main
from plw.data.synthetic import make_synthetic_mcqa
from tests.conftest import save_tiny_model

EVAL_KEYS = {
    "eval_prompt_loss",
    "eval_completion_loss",
    "eval_full_loss",
    "eval_weighted_loss",
    "eval_completion_token_accuracy",
    "eval_accuracy",
    "eval_choice_accuracy",
}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("tiny-model")
    save_tiny_model(folder, tokenizer)
    return folder


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_config(tmp_path, **values):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_train_writes_run_folder(tmp_path, tiny_model_dir, capsys):
    records = [
        {"prompt": r["prompt"], "completion": r["completion"]} for r in make_synthetic_mcqa(12, seed=0, people=4)
    ]
    train = write_jsonl(tmp_path / "train.jsonl", records[:8])
    valid = write_jsonl(tmp_path / "valid.jsonl", records[8:])
    config = write_config(
        tmp_path,
        name="tiny",
        output_dir=str(tmp_path / "runs"),
        model=str(tiny_model_dir),
        train_data=str(train),
        eval_data=str(valid),
        answer_choices=["A", "B", "C", "D"],
        max_steps=4,
        batch_size=2,
        eval_steps=2,
        report_to=[],
        bf16=False,
        prompt_loss_weight=0.1,
    )
    assert main(["train", str(config), "--no-progress", "--set", "learning_rate=0.001"]) == 0
    run = tmp_path / "runs" / "tiny"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["learning_rate"] == 0.001 and saved["prompt_loss_weight"] == 0.1
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 2, 4]
    for line in lines:
        assert EVAL_KEYS <= set(line) and line["plw"] == 0.1 and "train_loss" in line
    assert lines[-1]["train_loss"] is not None
    summary = json.loads((run / "summary.json").read_text())
    best = min(lines, key=lambda x: x["eval_completion_loss"])
    assert summary["best"]["eval_completion_loss"]["step"] == best["step"]
    report = json.loads((run / "data_report.json").read_text())
    assert report["train"]["kept"] == 8 and report["eval"]["kept"] == 4


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "a", "completion": "b"', "malformed JSON"),
        ('{"prompt": "a"}', "missing field 'completion'"),
        ('{"prompt": 1, "completion": "b"}', "field 'prompt' must be a string"),
        ('{"prompt": "a", "completion": ""}', "empty completion"),
    ],
)
def test_bad_record_is_named_before_training(tmp_path, tiny_model_dir, capsys, line, message):
    train = tmp_path / "train.jsonl"
    train.write_text('{"prompt": "fine", "completion": "ok"}\n\n' + line + "\n")
    config = write_config(
        tmp_path, output_dir=str(tmp_path / "runs"), model=str(tiny_model_dir), train_data=str(train), report_to=[]
    )
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{train}:3: {message}" in err
    assert not (tmp_path / "runs").exists()  # nothing started


def test_config_and_model_errors(tmp_path, capsys):
    train = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "a", "completion": "b"}])
    assert main(["train", "--set", f"train_data={train}", "--set", "prompt_loss_weight=2"]) == 2
    assert "prompt_loss_weight must be in [0, 1]" in capsys.readouterr().err
    assert main(["train", "--set", f"train_data={train}", "--set", "epoch=2"]) == 2
    assert "unknown key 'epoch' (did you mean 'epochs'?)" in capsys.readouterr().err
    missing = tmp_path / "no-such-model"
    assert main(["train", "--set", f"train_data={train}", "--set", f"model={missing}"]) == 2
    assert f"model path {str(missing)!r} does not exist" in capsys.readouterr().err


def test_sweep_and_eval_option_errors(tmp_path, capsys):
    """Bad launch options and a missing checkpoint are one-line errors before any model is loaded."""
    config = write_config(tmp_path, model="nowhere", train_data={"source": "synthetic", "rows": 4})
    cases = (
        (["sweep", str(config), "--jobs", "0"], "jobs: must be >= 1, got 0"),
        (["sweep", str(config), "--gpus-per-run", "-1"], "gpus_per_run: must be >= 0, got -1"),
        (
            ["sweep", str(config), "--set", "slurm.partion=gpu"],
            "unknown key slurm.partion (did you mean 'partition'?)",
        ),
        (["eval", str(config)], "eval_data: required by plw eval"),
    )
    for args, message in cases:
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(message) and "\n" not in err, err
    with_eval = write_config(
        tmp_path, train_data={"source": "synthetic", "rows": 4}, eval_data={"source": "synthetic", "rows": 4}
    )
    assert main(["eval", str(with_eval), "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "--checkpoint: no such folder" in capsys.readouterr().err
