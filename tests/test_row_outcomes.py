"""Exact match and per-row outcomes of the streamed metrics, against outcomes fixed by construction.

The logits are built by hand: a row meant to be right puts a large logit on every true next token; a row meant to
be wrong does so everywhere except at one chosen completion target (its answer or a later token). So which rows
are exact, which answers are correct and which choice was predicted are known without the code under test.
"""

from __future__ import annotations

import pytest
import torch

import plw
from plw.data.collate import PaddingCollator
from plw.data.encode import encode
from plw.data.packing import PackedCollator, PackedDataset
from plw.metrics import StreamingMetrics

LETTERS = ["A", "B", "C", "D"]
# (completion, where the row goes wrong: None, "answer" or "later", the wrong token's text when at the answer)
CASES = [
    ("B", None, None),
    ("C", "answer", "D"),
    ("Lisbon is the city", "later", None),
    ("A", None, None),
    ("D because", "later", None),
    ("Oslo", None, None),
    ("B", "answer", "Porto"),
]


def rows_with_ids(tokenizer):
    rows = []
    for i, (completion, _, _) in enumerate(CASES):
        row = encode(tokenizer, {"prompt": f"Question number {i}: which one?", "completion": completion})
        row["row_id"] = [100 + i] * len(row["input_ids"])
        rows.append(row)
    return rows


def forced_logits(batch, tokenizer, vocab: int) -> torch.Tensor:
    """Logits whose arg-max is the true next token, except at each wrong row's chosen completion target."""
    ids, comp, rid = batch["input_ids"], batch["completion_mask"], batch["row_id"]
    logits = torch.zeros(*ids.shape, vocab)
    logits[:, :-1].scatter_(-1, ids[:, 1:, None], 10.0)
    for b in range(ids.shape[0]):
        for i, (_, wrong, token) in enumerate(CASES):
            if wrong is None:
                continue
            positions = [t for t in range(1, ids.shape[1]) if comp[b, t] and rid[b, t] == 100 + i]
            if not positions:
                continue
            t = positions[0] if wrong == "answer" else positions[-2]  # the answer, or a later completion token
            bad = tokenizer.convert_tokens_to_ids(token) if token else (int(ids[b, t]) + 1) % vocab
            logits[b, t - 1] = 0.0
            logits[b, t - 1, bad] = 10.0
    return logits


def expected(tokenizer):
    choice_ids = plw.choice_token_ids(tokenizer, LETTERS)
    out = {"id": [], "exact": [], "correct": [], "choice": []}
    for i, (completion, wrong, token) in enumerate(CASES):
        out["id"].append(100 + i)
        out["exact"].append(int(wrong is None))
        out["correct"].append(int(wrong != "answer"))
        first = encode(tokenizer, {"prompt": "x", "completion": completion})
        gold = [t for t, c in zip(first["input_ids"], first["completion_mask"], strict=True) if c][0]
        predicted = tokenizer.convert_tokens_to_ids(token) if wrong == "answer" else gold
        out["choice"].append(choice_ids.index(predicted) if predicted in choice_ids else -1)
    return out, choice_ids


@pytest.mark.parametrize("layout", ["padded", "packed_flat", "packed_rows"])
def test_exact_match_and_row_outcomes(tokenizer, layout):
    rows = rows_with_ids(tokenizer)
    want, choice_ids = expected(tokenizer)
    if layout == "padded":
        batches = [PaddingCollator(pad_token_id=tokenizer.pad_token_id)(rows[:4]), PaddingCollator()(rows[4:])]
    else:
        packed = PackedDataset(rows, max_length=160, seed=0)
        assert len(packed) < len(rows)  # several rows share a bin
        collate = PackedCollator(one_row_per_bin=layout == "packed_rows")
        batches = [collate([packed[i] for i in range(len(packed))])]
    metrics = StreamingMetrics(0.0, choice_ids)
    nll_of_row: dict[int, list[float]] = {}
    for batch in batches:
        logits = forced_logits(batch, tokenizer, len(tokenizer))
        for b, t in (batch["completion_mask"][:, 1:] == 1).nonzero().tolist():  # brute force, target by target
            loss = torch.nn.functional.cross_entropy(logits[b, t], batch["input_ids"][b, t + 1])
            nll_of_row.setdefault(int(batch["row_id"][b, t + 1]), []).append(float(loss))
        metrics.update(
            logits,
            batch["input_ids"],
            batch["prompt_mask"],
            batch["completion_mask"],
            batch.get("position_ids"),
            row_ids=batch["row_id"],
        )
    values = metrics.compute()
    got = metrics.row_outcomes
    assert got["completion_loss"] == pytest.approx([sum(v) / len(v) for _, v in sorted(nll_of_row.items())])
    assert {k: v for k, v in got.items() if k != "completion_loss"} == want
    assert values["exact_match"] == pytest.approx(sum(want["exact"]) / len(CASES))
    letter_rows = [i for i, (c, _, _) in enumerate(CASES) if c.split()[0] in LETTERS]
    assert values["answer_rows"] == len(letter_rows)
    assert values["accuracy"] == pytest.approx(sum(want["correct"][i] for i in letter_rows) / len(letter_rows))


def test_no_row_ids_keeps_no_outcomes(tokenizer):
    rows = rows_with_ids(tokenizer)
    batch = PaddingCollator()(rows)
    metrics = StreamingMetrics(0.0)
    logits = forced_logits(batch, tokenizer, len(tokenizer))
    metrics.update(logits, batch["input_ids"], batch["prompt_mask"], batch["completion_mask"])
    assert metrics.row_outcomes == {"id": [], "exact": [], "correct": [], "choice": [], "completion_loss": []}
    assert metrics.compute()["exact_match"] == pytest.approx(3 / 7)
