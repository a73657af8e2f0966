"""Record and message weights from the data: read from JSONL/CSV/Parquet, checked, carried per token, reported."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainingArguments

import plw
from plw.config import from_dict
from plw.data.encode import RecordError, encode_records
from plw.data.sources import load_records
from plw.data.weights import WeightError, complete_data_weights
from plw.runner import prepare_rows
from tests.conftest import make_tiny_model

PC = [
    {"prompt": "What is two plus two?", "completion": "Four.", "weight": 2},
    {"prompt": "Name a colour.", "completion": "Blue.", "weight": 0},
    {"prompt": "Say hi.", "completion": "Hi!"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def encoded(tokenizer, spec):
    loaded = load_records(spec)
    rows, _ = encode_records(tokenizer, loaded.records, 256, names=loaded.names)
    complete_data_weights(rows)
    return rows


def test_record_weight_multiplies_every_token_of_its_row(tokenizer, tmp_path):
    rows = encoded(tokenizer, str(write_jsonl(tmp_path / "d.jsonl", PC)))
    for row, want in zip(rows, [2.0, 0.0, 1.0], strict=True):
        assert row["data_weight"] == [want] * len(row["input_ids"])


def test_weight_field_renames_and_then_is_required(tokenizer, tmp_path):
    data = [{"prompt": "a?", "completion": "b", "w": 0.5}, {"prompt": "c?", "completion": "d", "w": 3}]
    path = write_jsonl(tmp_path / "d.jsonl", data)
    rows = encoded(tokenizer, {"source": "file", "path": str(path), "weight_field": "w"})
    assert [r["data_weight"][0] for r in rows] == [0.5, 3.0]
    write_jsonl(path, [*data, {"prompt": "e?", "completion": "f"}])
    with pytest.raises(RecordError, match=rf"^{path}:3: missing weight field 'w'"):
        load_records({"source": "file", "path": str(path), "weight_field": "w"})


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_weights_from_csv_and_parquet(tokenizer, tmp_path, fmt):
    import datasets

    ds = datasets.Dataset.from_list([{k: r.get(k, 1.0) for k in ("prompt", "completion", "weight")} for r in PC])
    path = tmp_path / f"d.{fmt}"
    ds.to_csv(str(path), index=False) if fmt == "csv" else ds.to_parquet(str(path))
    rows = encoded(tokenizer, str(path))
    assert [r["data_weight"][-1] for r in rows] == [2.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("text", "shown"),
    [("-1", "-1"), ("NaN", "nan"), ("Infinity", "inf"), ("true", "True"), ('"2"', "'2'"), ("null", "None")],
)
@pytest.mark.parametrize("strict", [True, False])
def test_bad_record_weight_is_a_one_line_error_naming_file_and_line(tmp_path, text, shown, strict):
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"prompt": "a", "completion": "b"}\n' + '{"prompt": "a", "completion": "b", "weight": ' + text + "}\n"
    )
    with pytest.raises(WeightError) as err:
        load_records({"source": "file", "path": str(path), "strict": strict})
    assert str(err.value) == f"{path}:2: weight must be a finite number >= 0, got {shown}"


def test_bad_message_weight_names_the_message(tmp_path):
    record = {"messages": [{"role": "user", "content": "x", "weight": -0.5}, {"role": "assistant", "content": "y"}]}
    path = write_jsonl(tmp_path / "m.jsonl", [record])
    with pytest.raises(
        WeightError, match=rf"^{path}:1: messages\[0\]\.weight must be a finite number >= 0, got -0.5$"
    ):
        load_records(str(path))


CONVERSATION = {
    "weight": 2.0,
    "messages": [
        {"role": "user", "content": "First question about apples?", "weight": 0.5},
        {"role": "assistant", "content": "An early answer about apples.", "weight": 0.0},
        {"role": "user", "content": "Second question about pears?"},
        {"role": "assistant", "content": "The final answer about pears.", "weight": 3},
    ],
}


def test_message_weights_follow_the_turns(tokenizer, tmp_path):
    rows = encoded(tokenizer, str(write_jsonl(tmp_path / "m.jsonl", [CONVERSATION])))
    row = rows[0]
    w = row["data_weight"]
    by_weight: dict[float, list[int]] = {}
    for tok, x in zip(row["input_ids"], w, strict=True):
        by_weight.setdefault(x, []).append(tok)
    text = {x: tokenizer.decode(ids) for x, ids in by_weight.items()}
    # record weight 2 times each message's weight; the template's default system preamble weighs 2 * 1
    assert set(text) == {2.0 * 0.5, 0.0, 2.0, 6.0}
    assert "First question about apples?" in text[1.0] and "assistant" in text[1.0]  # + the header that follows it
    assert "An early answer about apples." in text[0.0]
    assert "Second question about pears?" in text[2.0]
    # the last assistant message's weight covers exactly the completion
    assert [x == 6.0 for x in w] == [bool(c) for c in row["completion_mask"]]
    assert text[6.0].startswith("The final answer about pears.")


def test_message_weights_in_packed_evaluation_equal_brute_force(tokenizer, tmp_path):
    records = [CONVERSATION, {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}]
    rows = encoded(tokenizer, str(write_jsonl(tmp_path / "m.jsonl", records)))
    for row in rows:
        row.pop("turn_ids")
    model = make_tiny_model(len(tokenizer), seed=4)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = plw.PLWTrainer(
        model=model, args=args, eval_dataset=rows, prompt_loss_weight=0.5, packing=True, max_length=1024
    )
    got = trainer.evaluate()["eval_weighted_loss"]
    num = den = 0.0
    for row in rows:
        ids = torch.tensor([row["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        for t in range(1, len(row["input_ids"])):
            w = (0.5 * row["prompt_mask"][t] + row["completion_mask"][t]) * row["data_weight"][t]
            num += w * -logp[t - 1, row["input_ids"][t]].item()
            den += w
    assert got == pytest.approx(num / den, rel=1e-5)


def test_data_report_counts_weights_and_zero_rows(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", PC)
    config = from_dict({"train_data": str(path), "max_length": 256})
    rows, info, _ = prepare_rows(config, tokenizer, "train")
    assert all("data_weight" in r for r in rows)
    report = info["weights"]
    assert report["rows_of_weight_zero"] == 1
    assert report["record_weight"]["min"] == 0.0 and report["record_weight"]["max"] == 2.0
    assert report["record_weight"]["zero"] == 1 and report["record_weight"]["n"] == 3
    unweighted = write_jsonl(tmp_path / "u.jsonl", [{k: r[k] for k in ("prompt", "completion")} for r in PC])
    rows, info, _ = prepare_rows(from_dict({"train_data": str(unweighted)}), tokenizer, "train")
    assert "weights" not in info and not any("data_weight" in r for r in rows)
