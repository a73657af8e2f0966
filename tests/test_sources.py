"""Data specs -> records: local JSONL/JSON/CSV/Parquet files, HF datasets, field mapping, and the load report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from plw.data.encode import RecordError
from plw.data.sources import load_records, open_records

GOOD = [
    {"id": "a", "prompt": "Name a colour.", "completion": "Blue."},
    {"id": "b", "prompt": "Two plus two?", "completion": "Four.", "system": "Be brief."},
]
EXPECTED = [
    {"prompt": "Name a colour.", "completion": "Blue.", "id": "a"},
    {"prompt": "Two plus two?", "completion": "Four.", "id": "b", "system": "Be brief."},
]

# A loader counts no encoding: the counters the encoder fills stay 0.
NO_ENCODING = {"truncated": 0, "eos_appended": 0, "tail_cut": 0, "history_rewritten": 0}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_path_spec_gives_records_and_report(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", GOOD + [""])  # a blank line is not a row
    loaded = load_records(str(path))
    assert loaded.records == EXPECTED
    assert loaded.names == ["a", "b"]
    assert loaded.answer_choices is None
    assert loaded.report.as_dict() == {"read": 2, "kept": 2, "skipped": 0, "dropped": {}, "examples": {}} | NO_ENCODING
    assert load_records({"source": "jsonl", "path": str(path)}).records == EXPECTED


def test_bad_jsonl_rows_are_counted_by_reason_with_locations(tmp_path):
    rows = [
        GOOD[0],
        '{"prompt": "broken',
        {"prompt": "no completion here"},
        {"id": "list", "prompt": "x", "completion": ["not", "text"]},
        {"id": "empty", "prompt": "x", "completion": "  "},
        [1, 2],
        {"id": "num", "prompt": "How many?", "completion": 3},
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    loaded = load_records(str(path), strict=False)
    assert loaded.names == ["a"]
    report = loaded.report
    assert (report.read, report.kept, report.n_dropped) == (7, 1, 6)
    assert report.dropped == {
        "malformed JSON": 1,
        "missing field 'completion'": 1,
        "field 'completion' must be a string": 2,
        "empty completion": 1,
        "not a JSON object": 1,
    }
    assert report.examples["field 'completion' must be a string"] == ["list", "num"]
    assert report.examples["malformed JSON"] == [f"{path}:2"]
    assert report.examples["missing field 'completion'"] == [f"{path}:3"]  # no id: file and line
    assert report.examples["empty completion"] == ["empty"]
    assert "7 read, 1 kept" in report.summary() and f"{path}:2" in report.summary()
    # Training loads are strict by default: the first bad row stops them, named by file and line (and id).
    with pytest.raises(RecordError, match=r"bad\.jsonl:2: malformed JSON \(Unterminated string"):
        load_records(str(path))
    assert load_records({"source": "file", "path": str(path), "strict": False}).names == ["a"]
    good_then_list = write_jsonl(tmp_path / "list.jsonl", [rows[0], rows[3]])
    with pytest.raises(RecordError, match=r"list\.jsonl:2 \(id list\): field 'completion' must be a string"):
        load_records(str(good_then_list))


def test_json_csv_parquet_give_the_same_records(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": r["id"], "prompt": r["prompt"], "completion": r["completion"]} for r in GOOD]
    expected = [{k: v for k, v in r.items() if k != "system"} for r in EXPECTED]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    with (tmp_path / "d.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "prompt", "completion"])
        writer.writeheader()
        writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    write_jsonl(tmp_path / "lines.json", rows)  # a .json file of JSON lines
    for name in ("d.json", "d.csv", "d.parquet", "lines.json"):
        loaded = load_records(str(tmp_path / name))
        assert loaded.records == expected, name
    # an explicit file format overrides the extension
    (tmp_path / "d.txt").write_text((tmp_path / "d.csv").read_text())
    assert load_records({"source": "file", "path": str(tmp_path / "d.txt"), "file_format": "csv"}).records == expected
    with pytest.raises(ValueError, match="cannot tell the file format"):
        load_records(str(tmp_path / "d.txt"))


def test_folder_of_files_and_missing_paths(tmp_path):
    write_jsonl(tmp_path / "2.jsonl", GOOD[1:])
    write_jsonl(tmp_path / "1.jsonl", GOOD[:1])
    (tmp_path / "notes.md").write_text("ignored")
    assert load_records(str(tmp_path)).records == EXPECTED
    with pytest.raises(FileNotFoundError):
        load_records(str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no data files"):
        load_records(str(tmp_path / "empty"))


ALPACA = [
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "Name a prime number.", "input": "", "output": "7"},
]


def test_alpaca_rows_are_detected_and_templated(tmp_path):
    loaded = load_records(str(write_jsonl(tmp_path / "a.jsonl", ALPACA)))
    assert [r["prompt"] for r in loaded.records] == ["Translate to French.\n\nGood morning", "Name a prime number."]
    assert [r["completion"] for r in loaded.records] == ["Bonjour", "7"]


def test_prompt_template_and_field_mapping(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ALPACA + [{"instruction": "No input field", "output": "x"}])
    spec = {"source": "file", "path": str(path), "prompt_template": "Task: {instruction}\nInput: {input}"}
    spec["completion_field"] = "output"
    loaded = load_records(spec, strict=False)
    assert [r["prompt"] for r in loaded.records] == [
        "Task: Translate to French.\nInput: Good morning",
        "Task: Name a prime number.\nInput:",
    ]
    assert loaded.report.dropped == {"missing field 'input'": 1}
    qa = write_jsonl(tmp_path / "qa.jsonl", [{"q": "Capital of Peru?", "a": "Lima", "ctx": "geo"}])
    spec = {"source": "file", "path": str(qa), "prompt_field": "q", "completion_field": "a", "system_field": "ctx"}
    assert load_records(spec).records == [
        {"prompt": "Capital of Peru?", "completion": "Lima", "id": f"{qa}:1", "system": "geo"}
    ]
    with pytest.raises(ValueError, match="named placeholders"):
        load_records({"source": "file", "path": str(qa), "prompt_template": "{} and {0}"})
    with pytest.raises(ValueError, match="not both"):
        load_records({"source": "file", "path": str(qa), "prompt_template": "{q}", "prompt_field": "q"})


def test_template_fields_may_be_numbers(tmp_path):
    path = write_jsonl(tmp_path / "n.jsonl", [{"q": "Double", "x": 21, "y": 42}, {"q": "Half", "x": [4], "y": 2}])
    spec = {"source": "file", "path": str(path), "prompt_template": "{q} {x}", "completion_template": "{y}"}
    loaded = load_records(spec, strict=False)
    assert [(r["prompt"], r["completion"]) for r in loaded.records] == [("Double 21", "42")]
    assert loaded.report.dropped == {"field 'x' is not text or a number": 1}


def test_format_detection(tmp_path):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    loaded = load_records(str(write_jsonl(tmp_path / "m.jsonl", [{"id": "c1", "messages": messages}])))
    assert loaded.meta["format"] == "messages" and loaded.records == [{"messages": messages, "id": "c1"}]
    race_row = {
        "id": "r",
        "article": "Ann is ten.",
        "question": "Age?",
        "options": ["8", "9", "10", "11"],
        "answer": "C",
    }
    loaded = load_records(str(write_jsonl(tmp_path / "r.jsonl", [race_row])))
    assert loaded.meta["format"] == "race" and loaded.answer_choices == ["A", "B", "C", "D"]
    assert loaded.records[0]["completion"] == "C"
    with pytest.raises(RecordError, match=r"cannot tell the record format from the fields \['a', 'q'\]"):
        load_records(str(write_jsonl(tmp_path / "x.jsonl", [{"q": 1, "a": 2}])))
    bad_turns = [
        {"messages": [{"role": "user", "content": "Hi"}]},
        {"messages": "text"},
        {"id": "ok", "messages": messages},
    ]
    loaded = load_records(str(write_jsonl(tmp_path / "m2.jsonl", bad_turns)), strict=False)
    assert loaded.names == ["ok"]
    assert loaded.report.dropped == {"no assistant turn": 1, "messages is not a non-empty list": 1}


def test_reading_is_lazy(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", GOOD + ["{broken"])
    stream = open_records({"source": "file", "path": str(path), "strict": True})
    assert stream.report.read == 0
    assert next(stream.pairs)[0] == "a" and stream.report.read == 1
    assert next(stream.pairs)[0] == "b"
    with pytest.raises(RecordError, match=r"d\.jsonl:3"):
        next(stream.pairs)


def test_hf_source_through_datasets(tmp_path):
    """Real ``datasets`` code paths that need no network: a local builder and a save_to_disk folder."""
    import datasets

    path = write_jsonl(tmp_path / "d.jsonl", GOOD)
    loaded = load_records({"source": "hf", "name": "json", "data_files": str(path), "split": "train"})
    assert [(r["prompt"], r["completion"]) for r in loaded.records] == [(r["prompt"], r["completion"]) for r in GOOD]
    assert loaded.records[1]["system"] == "Be brief." and "system" not in loaded.records[0]  # null -> absent
    datasets.Dataset.from_list(ALPACA).save_to_disk(str(tmp_path / "saved"))
    for spec in (str(tmp_path / "saved"), {"source": "hf", "path": str(tmp_path / "saved")}):
        assert [r["completion"] for r in load_records(spec).records] == ["Bonjour", "7"]


def test_hf_hub_source_mocked(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None, **kwargs):
        calls.append((name, config, split, kwargs))
        return datasets.Dataset.from_list([{"question": "Q1", "answer": "A1"}, {"question": "Q2", "answer": None}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    spec = {"source": "hf", "name": "org/qa", "config": "main", "split": "test", "revision": "v1"}
    loaded = load_records(spec | {"prompt_field": "question", "completion_field": "answer"}, strict=False)
    assert calls == [("org/qa", "main", "test", {"revision": "v1"})]
    assert [(r["prompt"], r["completion"]) for r in loaded.records] == [("Q1", "A1")]
    assert loaded.report.dropped == {"missing field 'answer'": 1}
    assert loaded.report.examples["missing field 'answer'"] == ["org/qa (main) [test][1]"]


def test_spec_errors(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", GOOD)
    with pytest.raises(ValueError, match="unknown data source 'ftp'"):
        load_records({"source": "ftp"})
    with pytest.raises(ValueError, match=r"does not take \['colour'\]"):
        load_records({"source": "file", "path": str(path), "colour": "red"})
    with pytest.raises(ValueError, match="format must be one of"):
        load_records({"source": "file", "path": str(path), "format": "tsv"})
    with pytest.raises(RecordError, match="no records"):
        load_records(str(write_jsonl(tmp_path / "e.jsonl", [{"prompt": "p", "completion": ""}])), strict=False)


def test_synthetic_spec_still_works():
    loaded = load_records({"source": "synthetic", "rows": 8, "seed": 3})
    assert len(loaded.records) == 8 and loaded.answer_choices == ["A", "B", "C", "D"]
    assert loaded.report.kept == 8 and loaded.names[0] == "synthetic[seed=3]:0"
