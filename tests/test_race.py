"""RACE loaders: JSONL rows, the original release folder and the hub (mocked), all giving the same records."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from plw.data import race
from plw.data.encode import RecordError, encode
from plw.data.sources import load_records

SHARED_RACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "race"

# A loader counts no encoding: the counters the encoder fills stay 0.
NO_ENCODING = {"truncated": 0, "eos_appended": 0, "tail_cut": 0, "history_rewritten": 0}


def requires_shared_data(*parts: str) -> pytest.MarkDecorator:
    path = SHARED_RACE.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"reference data not present at {path} (../shared/data)")


PASSAGE = "Tom has a red bike. His sister Ann has a blue one."
ROWS = [
    {"id": "t/0", "article": PASSAGE, "question": "What colour is Tom's bike?", "options": ["blue", "red", "green", "black"], "answer": "B", "level": "middle"},
    {"id": "t/1", "article": PASSAGE, "question": "Who has a blue bike?", "options": ["Tom", "Tom's mother", "Ann", "Nobody"], "answer": "C", "level": "high"},
]  # fmt: skip


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_prompt_template_letters_options_and_completion():
    prompt = race.format_prompt(PASSAGE, " What colour is Tom's bike? ", ["blue", "red", "green", "black"])
    assert prompt == (
        "Read the passage, then answer the question with the letter of the correct option (A, B, C or D).\n\n"
        f"Passage:\n{PASSAGE}\n\nQuestion: What colour is Tom's bike?\n\n"
        "Options:\nA. blue\nB. red\nC. green\nD. black\n\nAnswer:"
    )


def test_jsonl_loader_records_and_answer_choices(tmp_path):
    loaded = load_records({"source": "race", "path": str(write_jsonl(tmp_path / "r.jsonl", ROWS))})
    assert loaded.answer_choices == ["A", "B", "C", "D"]
    assert loaded.names == ["t/0", "t/1"]
    assert [r["completion"] for r in loaded.records] == ["B", "C"]
    assert "B. red" in loaded.records[0]["prompt"] and PASSAGE in loaded.records[0]["prompt"]
    assert loaded.report.as_dict() == {"read": 2, "kept": 2, "skipped": 0, "dropped": {}, "examples": {}} | NO_ENCODING
    high = load_records({"source": "race", "path": str(tmp_path / "r.jsonl"), "config": "high"})
    assert high.names == ["t/1"] and high.report.skipped == 1


def test_jsonl_bad_rows_counted_by_reason_and_strict(tmp_path):
    bad = [
        ROWS[0],
        "{not json",
        {k: v for k, v in ROWS[1].items() if k != "answer"} | {"id": "no-answer"},
        ROWS[1] | {"id": "three", "options": ["a", "b", "c"]},
        ROWS[1] | {"id": "e", "answer": "E"},
        ROWS[1] | {"id": "int-answer", "answer": 2},
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", bad)
    loaded = load_records({"source": "race", "path": str(path)}, strict=False)
    assert loaded.names == ["t/0", "int-answer"]
    assert loaded.records[1]["completion"] == "C"  # an integer answer is an option index
    rep = loaded.report
    assert (rep.read, rep.kept) == (6, 2)
    assert rep.dropped == {
        "malformed JSON": 1,
        "missing field 'answer'": 1,
        "not 4 options": 1,
        "answer not one of A-D": 1,
    }
    assert rep.examples["malformed JSON"] == [f"{path}:2"]
    assert rep.examples["missing field 'answer'"] == ["no-answer"]
    with pytest.raises(RecordError, match=r"bad\.jsonl:2: malformed JSON"):
        load_records({"source": "race", "path": str(path), "strict": True})


def test_no_records_left_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [ROWS[0] | {"options": []}])
    with pytest.raises(RecordError, match="no records.*not 4 options"):
        load_records({"source": "race", "path": str(path)}, strict=False)
    with pytest.raises(RecordError, match=r"r\.jsonl:1 \(id t/0\): not 4 options \(got 0\)"):
        load_records({"source": "race", "path": str(path)})


def write_release(root: Path) -> None:
    """A two-passage release folder: train/high/2.txt (2 questions) and train/middle/10.txt (1 question)."""
    for sub, name, passage in [
        ("train/high", "2.txt", {"id": "high2.txt", "article": PASSAGE, "questions": [r["question"] for r in ROWS],
                                 "options": [r["options"] for r in ROWS], "answers": ["B", "C"]}),
        ("train/middle", "10.txt", {"id": "middle10.txt", "article": "Ann is ten.", "questions": ["How old is Ann?"],
                                    "options": [["8", "9", "10", "11"]], "answers": ["C"]}),
    ]:  # fmt: skip
        (root / sub).mkdir(parents=True)
        (root / sub / name).write_text(json.dumps(passage))
    (root / "dev" / "high").mkdir(parents=True)


def test_release_folder_loader(tmp_path):
    write_release(tmp_path)
    loaded = load_records({"source": "race", "path": str(tmp_path), "split": "train"})
    assert loaded.names == ["train/high2.txt/0", "train/high2.txt/1", "train/middle10.txt/0"]
    assert [r["completion"] for r in loaded.records] == ["B", "C", "C"]
    assert [r["level"] for r in loaded.records] == ["high", "high", "middle"]
    jsonl = load_records({"source": "race", "path": str(write_jsonl(tmp_path / "r.jsonl", ROWS))})
    assert [r["prompt"] for r in loaded.records[:2]] == [r["prompt"] for r in jsonl.records]
    middle = load_records({"source": "race", "path": str(tmp_path / "train"), "config": "middle"})
    assert middle.names == ["train/middle10.txt/0"]
    with pytest.raises(ValueError, match="give split"):
        load_records({"source": "race", "path": str(tmp_path)})
    with pytest.raises(ValueError, match="config must be one of"):
        load_records({"source": "race", "path": str(tmp_path), "split": "train", "config": "elementary"})


def test_release_folder_mismatched_lists_are_dropped(tmp_path):
    (tmp_path / "high").mkdir()
    passage = {"id": "high5.txt", "article": PASSAGE, "questions": ["q1", "q2"], "options": [["a", "b", "c", "d"]],
               "answers": ["A", "B"]}  # fmt: skip
    (tmp_path / "high" / "5.txt").write_text(json.dumps(passage))
    (tmp_path / "high" / "6.txt").write_text("{broken")
    loaded = load_records({"source": "race", "path": str(tmp_path), "strict": False})
    assert loaded.names == [f"{tmp_path.name}/high5.txt/0"]
    assert loaded.report.dropped == {"missing field 'options'": 1, "malformed JSON": 1}


@requires_shared_data("raw")
@requires_shared_data("validation.jsonl")
def test_shared_release_folder_matches_shared_jsonl():
    """The 21 dev questions of the 6 raw passages are the same records as those rows of validation.jsonl."""
    folder = load_records({"source": "race", "path": str(SHARED_RACE / "raw"), "split": "validation"})
    jsonl = load_records({"source": "race", "path": str(SHARED_RACE / "validation.jsonl")})
    assert len(folder.records) == 21 and len(jsonl.records) == 4887
    by_id = dict(zip(jsonl.names, jsonl.records, strict=True))
    for name, record in zip(folder.names, folder.records, strict=True):
        assert record["prompt"] == by_id[name]["prompt"], name
        assert record["completion"] == by_id[name]["completion"], name
    for split, n in [("train", 26), ("test", 25), ("dev", 21)]:
        assert len(load_records({"source": "race", "path": str(SHARED_RACE / "raw"), "split": split}).records) == n


@requires_shared_data("validation.jsonl")
def test_shared_jsonl_answers_and_levels():
    rows = [json.loads(line) for line in (SHARED_RACE / "validation.jsonl").open()]
    loaded = load_records({"source": "race", "path": str(SHARED_RACE / "validation.jsonl"), "config": "middle"})
    assert len(loaded.records) == sum(r["level"] == "middle" for r in rows)
    gold = {r["id"]: r["answer"] for r in rows}
    assert all(rec["completion"] == gold[name] for name, rec in zip(loaded.names, loaded.records, strict=True))


def test_completion_is_the_letter_and_end_of_turn(tokenizer, tmp_path):
    record = load_records({"source": "race", "path": str(write_jsonl(tmp_path / "r.jsonl", ROWS))}).records[0]
    row = encode(tokenizer, record)
    completion = [t for t, c in zip(row["input_ids"], row["completion_mask"], strict=True) if c]
    assert tokenizer.decode(completion) == "B<|im_end|>\n"
    assert len(completion) == 3


HUB_ROWS = [
    {"example_id": "high7.txt", "article": PASSAGE, "answer": r["answer"], "question": r["question"], "options": r["options"]}
    for r in ROWS
] + [{"example_id": "high9.txt", "article": "Ann is ten.", "answer": "C", "question": "How old?", "options": ["8", "9", "10", "11"]}]  # fmt: skip


def test_hub_loader_mocked(monkeypatch):
    """The hub path with ``datasets.load_dataset`` replaced: checks the call and the row -> record mapping."""
    import datasets

    calls = []

    def fake_load_dataset(name, config, split=None, **kwargs):
        calls.append((name, config, split))
        return datasets.Dataset.from_list(HUB_ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = load_records({"source": "race", "hub": True, "config": "high", "split": "dev"})
    assert calls == [("ehovy/race", "high", "validation")]
    assert loaded.names == ["validation/high7.txt/0", "validation/high7.txt/1", "validation/high9.txt/0"]
    assert [r["completion"] for r in loaded.records] == ["B", "C", "C"]
    assert loaded.answer_choices == ["A", "B", "C", "D"]


def test_hub_failure_names_the_dataset(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RecordError, match=r"could not load 'ehovy/race' \(config 'all', split 'train'\): no network"):
        load_records({"source": "race", "hub": True})


@pytest.mark.skipif(os.environ.get("PLW_ONLINE") != "1", reason="needs the Hugging Face hub; set PLW_ONLINE=1")
def test_hub_loader_online():
    loaded = load_records({"source": "race", "hub": True, "config": "middle", "split": "validation"})
    assert len(loaded.records) == 1436  # the dataset card: middle validation has 1,436 questions
    assert loaded.report.n_dropped == 0
