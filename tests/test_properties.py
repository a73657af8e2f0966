"""Property tests (hypothesis) of the invariants the rest builds on: packing keeps every row once, the loss of a
packed batch is the sum of its rows' losses, and encoding splits a record's text exactly into prompt and completion.

Example counts come from the hypothesis profile in ``tests/conftest.py`` ("fast" here, "thorough" in
``make test-slow``).
"""

from __future__ import annotations

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

import plw
from plw.data.packing import PackedCollator, PackedDataset, pack_bins
from plw.loss import weighted_nll_sum
from tests.conftest import make_tiny_model


@st.composite
def lengths_and_capacity(draw):
    max_length = draw(st.integers(1, 64))
    longest = draw(st.sampled_from([max_length, max(1, max_length // 4)]))  # often many rows per bin
    lengths = draw(st.lists(st.integers(1, longest), min_size=1, max_size=40))
    return lengths, max_length


@given(lengths_and_capacity(), st.integers(0, 3), st.sampled_from([None, 0, 5]))
def test_packing_keeps_every_row_exactly_once_within_max_length(case, seed, improve_steps):
    lengths, max_length = case
    bins = pack_bins(lengths, max_length, seed=seed, improve_steps=improve_steps)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= max_length for b in bins)
    assert len(bins) >= math.ceil(sum(lengths) / max_length)
    # The dataset lays each bin's rows end to end, unchanged, each with positions from 0.
    rows = [
        {"input_ids": [1000 * i + j for j in range(n)], "prompt_mask": [1] * n, "completion_mask": [0] * n}
        for i, n in enumerate(lengths)
    ]
    ds = PackedDataset(rows, max_length, seed=seed, improve_steps=improve_steps)
    seen = []
    for k in range(len(ds)):
        item = ds[k]
        assert len(item["input_ids"]) <= max_length
        members = sorted({t // 1000 for t in item["input_ids"]}, key=lambda i: item["input_ids"].index(1000 * i))
        assert item["input_ids"] == [t for i in members for t in rows[i]["input_ids"]]
        assert item["position_ids"] == [j for i in members for j in range(lengths[i])]
        seen += members
    assert sorted(seen) == list(range(len(lengths)))


VOCAB = 97
_MODEL: list = []


def tiny_model():
    if not _MODEL:
        _MODEL.append(make_tiny_model(VOCAB, seed=3, layers=1).eval())
    return _MODEL[0]


@st.composite
def encoded_rows(draw):
    rows = []
    for _ in range(draw(st.integers(1, 4))):
        p, c = draw(st.integers(1, 8)), draw(st.integers(1, 8))
        ids = draw(st.lists(st.integers(1, VOCAB - 1), min_size=p + c, max_size=p + c))
        rows.append({"input_ids": ids, "prompt_mask": [1] * p + [0] * c, "completion_mask": [0] * p + [1] * c})
    return rows


@given(encoded_rows(), st.floats(0.0, 1.0))
def test_weighted_loss_of_a_packed_batch_is_the_sum_over_its_rows(rows, plw_value):
    model = tiny_model()
    packed = PackedCollator()(rows)  # one flat sequence, positions restarting at every row
    with torch.no_grad():
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits
        total, weight = weighted_nll_sum(
            logits, packed["input_ids"], packed["prompt_mask"], packed["completion_mask"], plw_value,
            packed["position_ids"],
        )  # fmt: skip
        want_total = want_weight = 0.0
        for row in rows:
            ids = torch.tensor([row["input_ids"]])
            logp = torch.log_softmax(model(input_ids=ids, use_cache=False).logits[0].double(), -1)
            for t in range(1, ids.shape[1]):
                w = plw_value * row["prompt_mask"][t] + row["completion_mask"][t]
                want_total += w * -logp[t - 1, ids[0, t]].item()
                want_weight += w
    assert weight.item() == pytest_approx(want_weight)
    assert total.item() == pytest_approx(want_total, rel=1e-4)


def pytest_approx(value, rel=1e-6):
    import pytest

    return pytest.approx(value, rel=rel, abs=1e-6)


TEXT = st.text(
    # Assigned characters only: the tokenizer cannot give back unassigned or private-use code points, whatever plw does.
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn", "Co"), exclude_characters="<|>"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() == s and s != "")


@given(TEXT, TEXT)
def test_encode_splits_the_rendered_text_exactly(tokenizer, prompt, completion):
    def decode(row, mask):
        ids = [t for t, m in zip(row["input_ids"], row[mask], strict=True) if m]
        return tokenizer.decode(ids, clean_up_tokenization_spaces=False)

    record = {"prompt": prompt, "completion": completion}
    chat = plw.encode(tokenizer, record, template="chat")
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}], tokenize=False
    )
    assert decode(chat, "prompt_mask") + decode(chat, "completion_mask") == rendered
    assert decode(chat, "completion_mask") == completion + "<|im_end|>\n"
    plain = plw.encode(tokenizer, record, template="plain")
    assert decode(plain, "prompt_mask") == prompt + "\n"
    assert decode(plain, "completion_mask") == completion + tokenizer.eos_token
