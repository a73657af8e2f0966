"""Generation-ratio statistics and `plw stats`, against hand-computed values and against the encoder's own counts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from plw.cli import main
from plw.data.encode import RecordError, encode
from plw.data.messages import encode_messages
from plw.stats import STATS_KEYS, compute_stats, dataset_label, dataset_spec, summarize

# Prompt/completion word counts 10/1, 10/5, 4/4, 20/40, 5/50: Rg = 0.1, 0.5, 1, 2, 10.
FIVE = [
    {"prompt": " ".join(["p"] * 10), "completion": "c"},
    {"prompt": " ".join(["p"] * 10), "completion": " ".join(["c"] * 5)},
    {"prompt": "a b c d", "completion": "w x y z"},
    {"prompt": " ".join(["p"] * 20), "completion": " ".join(["c"] * 40)},
    {"prompt": " ".join(["p"] * 5), "completion": " ".join(["c"] * 50)},
]
# By hand: mean(Rg) = 13.6 / 5; geomean = (0.1 * 0.5 * 1 * 2 * 10) ** (1/5) = 1; sorted Rg, linear interpolation:
# p5 at position 0.2 -> 0.1 + 0.2 * 0.4; p95 at position 3.8 -> 2 + 0.8 * 8.
HAND = {
    "rows": 5,
    "prompt_tokens_mean": 49 / 5,
    "completion_tokens_mean": 100 / 5,
    "rg_mean": 2.72,
    "rg_geomean": 1.0,
    "rg_median": 1.0,
    "rg_p5": 0.18,
    "rg_p95": 8.4,
    "rg_lt1_share": 0.4,
}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_plw_stats_on_five_rows_matches_hand_computed_values(tmp_path, capsys):
    data = write_jsonl(tmp_path / "five.jsonl", FIVE)
    assert main(["stats", str(data), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "whitespace words" in printed and "five" in printed
    (row,) = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert list(row)[: len(STATS_KEYS)] == list(STATS_KEYS)
    assert row["dataset"] == "five"
    for key, value in HAND.items():
        assert row[key] == pytest.approx(value, rel=1e-12), key
    assert row["prompt_tokens_median"] == 10 and row["completion_tokens_median"] == 5
    # The arithmetic mean is pulled up by the one long completion; the geometric mean is the typical ratio.
    assert row["rg_mean"] > 2.5 * row["rg_geomean"]
    with (tmp_path / "out" / "stats.csv").open() as fh:
        (csv_row,) = list(csv.DictReader(fh))
    assert float(csv_row["rg_geomean"]) == pytest.approx(1.0) and csv_row["rows"] == "5"
    assert (tmp_path / "out" / "rg_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_and_bad_rows_are_reported_not_averaged(tmp_path, capsys):
    rows = FIVE + [{"id": "ep", "prompt": "  ", "completion": "x"}, {"id": "ec", "prompt": "q", "completion": ""}]
    rows += ["{oops", {"id": "nc", "prompt": "q"}]
    data = write_jsonl(tmp_path / "mixed.jsonl", rows)
    (row,), _ = compute_stats([str(data)], progress=False)
    for key, value in HAND.items():
        assert row[key] == pytest.approx(value, rel=1e-12), key
    counts = {k: row[k] for k in ("rows_read", "rows_empty_prompt", "rows_empty_completion", "rows_dropped")}
    assert counts == {"rows_read": 9, "rows_empty_prompt": 1, "rows_empty_completion": 1, "rows_dropped": 2}
    assert row["dropped"] == {"malformed JSON": 1, "missing field 'completion'": 1}
    assert row["dropped_examples"]["malformed JSON"] == [f"{data}:8"]
    assert main(["stats", str(data), "--no-progress"]) == 0
    assert "1 empty prompt; 1 empty completion" in capsys.readouterr().out
    assert main(["stats", str(data), "--strict", "--no-progress"]) == 2
    assert "mixed.jsonl:7 (id ec): empty completion" in capsys.readouterr().err


def test_summarize_edge_cases():
    assert summarize([4], [2])["rg_geomean"] == pytest.approx(0.5)
    assert summarize([], [])["rows"] == 0 and np.isnan(summarize([], [])["rg_mean"])
    with pytest.raises(ValueError, match="positive"):
        summarize([3, 0], [1, 1])


def test_token_counts_equal_the_encoder(tokenizer, tmp_path):
    """With a tokenizer, each row's counts are exactly the prompt/completion masks of ``encode`` (chat and plain)
    and of ``encode_messages``; both templates are rendered by the library, not re-derived here."""
    records = [
        {"id": "1", "prompt": "What is the capital of France?", "completion": "Paris."},
        {"id": "2", "prompt": "Say hi.", "completion": "Hi!\nHow are you?", "system": "Be friendly."},
    ]
    conversation = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue"},
    ]
    pc = write_jsonl(tmp_path / "pc.jsonl", records)
    chat_data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": conversation}])
    for template in ("chat", "plain"):
        (row,), rgs = compute_stats([str(pc)], tokenizer, template, progress=False)
        expected = []
        for r in records:
            enc = encode(tokenizer, r, template=template)
            expected.append((sum(enc["prompt_mask"]), sum(enc["completion_mask"])))
        assert row["prompt_tokens_mean"] == pytest.approx(np.mean([p for p, _ in expected]))
        assert row["completion_tokens_mean"] == pytest.approx(np.mean([c for _, c in expected]))
        assert sorted(rgs["pc"]) == pytest.approx(sorted(c / p for p, c in expected))
    (row,), _ = compute_stats([str(chat_data)], tokenizer, progress=False)
    enc = encode_messages(tokenizer, conversation)
    assert row["format"] == "messages"
    assert row["prompt_tokens_mean"] == sum(enc["prompt_mask"])
    assert row["completion_tokens_mean"] == sum(enc["completion_mask"])
    with pytest.raises(RecordError, match="chat template"):
        compute_stats([str(chat_data)], tokenizer, "plain", progress=False)


def test_num_proc_gives_the_same_counts(tmp_path):
    rows = [
        {"prompt": " ".join(["w"] * (1 + i % 17)), "completion": " ".join(["c"] * (1 + i % 5))} for i in range(600)
    ]
    data = write_jsonl(tmp_path / "many.jsonl", rows)
    (one,), rg1 = compute_stats([str(data)], progress=False)
    (two,), rg2 = compute_stats([str(data)], num_proc=2, progress=False)
    assert np.array_equal(rg1["many"], rg2["many"])
    assert one == two


def test_race_rows_are_detected(tmp_path):
    row = {
        "id": "r",
        "article": "Ann is ten years old.",
        "question": "Age?",
        "options": ["8", "9", "10", "11"],
        "answer": "C",
    }
    (stats,), _ = compute_stats([str(write_jsonl(tmp_path / "r.jsonl", [row]))], progress=False)
    assert stats["format"] == "race" and stats["completion_tokens_mean"] == 1  # the letter is one word


def test_dataset_arguments(tmp_path):
    (tmp_path / "race").mkdir()
    data = write_jsonl(tmp_path / "race" / "validation.jsonl", FIVE)
    assert dataset_label(str(data)) == "race/validation"
    assert dataset_spec(str(data))["source"] == "file"
    assert dataset_spec("ehovy/race:middle", split="validation") == {
        "source": "hf",
        "name": "ehovy/race",
        "config": "middle",
        "split": "validation",
    }
    with pytest.raises(FileNotFoundError):
        dataset_spec(str(tmp_path / "missing.jsonl"))
    two, _ = compute_stats([str(data), str(data)], progress=False)
    assert [r["dataset"] for r in two] == ["race/validation", "race/validation#2"]


# What the Rg spectrum study measured: "letters" at Rg 0.01, "worked" at Rg 1. A dataset at Rg 0.3 is nearer
# "letters" by difference (0.29 vs 0.7) but nearer "worked" by ratio (30x vs 3.3x): the lookup is on a log scale.
FINDINGS = {
    "report": "docs/results/spectrum/report.md",
    "datasets": [
        {"name": "letters", "rg": 0.01, "finding": "PLW 0 had lower completion loss than PLW 1 in 3 of 3 seeds"},
        {
            "name": "worked",
            "rg": 1.0,
            "finding": "PLW 0 had higher completion loss than PLW 1 in 2 of 3 seeds",
            "scope": "m, LoRA r16, 96 training rows, 32 steps, 30 evaluation rows, seeds 1,2",
        },
    ],
}
RG_03 = [{"prompt": " ".join(["p"] * 10), "completion": "a b c"}] * 2  # 3 / 10 words


def test_stats_prints_the_spectrum_finding_nearest_on_a_log_scale(tmp_path, capsys, monkeypatch):
    import plw.stats

    path = tmp_path / "findings.json"
    path.write_text(json.dumps(FINDINGS))
    monkeypatch.setattr(plw.stats, "SPECTRUM_FINDINGS", path)
    data = write_jsonl(tmp_path / "rg03.jsonl", RG_03)
    assert main(["stats", str(data), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert (
        "Nearest measured Rg to rg03 (Rg mean 0.3): worked (Rg 1) in the spectrum study "
        "(docs/results/spectrum/report.md):\n  PLW 0 had higher completion loss than PLW 1 in 2 of 3 seeds.\n"
        "  Measured with m, LoRA r16, 96 training rows, 32 steps, 30 evaluation rows, seeds 1,2: a small study; "
        "read its intervals before acting on it.\n"
    ) in printed
    assert "letters" not in printed
    assert "these counts are whitespace words" in printed  # the study's Rg counts tokens
    assert plw.stats.nearest_finding(0.05, FINDINGS)["name"] == "letters"  # 5x vs 20x
    assert plw.stats.nearest_finding(0.0, FINDINGS) is None
    unmeasured = [{"name": "x", "rg": None, "finding": "f"}, {"name": "y", "rg": 0.0, "finding": "f"}]
    assert plw.stats.nearest_finding(0.3, {"datasets": unmeasured}) is None
    path.write_text("{not json")
    assert main(["stats", str(data), "--no-progress"]) == 2
    assert f"{path}: not a findings file" in capsys.readouterr().err


@pytest.mark.parametrize("content", [None, "", '{"report": "r.md", "datasets": []}'])
def test_stats_without_findings_prints_no_guidance(tmp_path, capsys, monkeypatch, content):
    import plw.stats

    path = tmp_path / "findings.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setattr(plw.stats, "SPECTRUM_FINDINGS", path)
    data = write_jsonl(tmp_path / "rg03.jsonl", RG_03)
    assert main(["stats", str(data), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "rg03" in printed and "Nearest measured Rg" not in printed and "spectrum" not in printed


def test_packaged_spectrum_findings_are_readable():
    from plw.stats import SPECTRUM_FINDINGS, read_spectrum_findings

    assert SPECTRUM_FINDINGS.exists()
    findings = read_spectrum_findings()
    assert isinstance(findings.get("datasets"), list)
    for d in findings["datasets"]:
        assert {"name", "rg", "finding"} <= set(d)
