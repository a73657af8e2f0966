"""StreamingMetrics bookkeeping that the brute-force comparisons do not reach: process reduction, empty segments."""

from __future__ import annotations

import pytest
import torch

from plw.metrics import StreamingMetrics


def one_batch():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 7)
    ids = torch.tensor([[1, 2, 3, 4]])
    return logits, ids, torch.tensor([[1, 1, 0, 0]]), torch.tensor([[0, 0, 1, 1]])


def test_reduce_sums_the_totals_of_all_processes():
    logits, ids, pm, cm = one_batch()
    m = StreamingMetrics(0.5)
    m.update(logits, ids, pm, cm)
    alone = m.compute()
    m.reduce(lambda t: 3 * t)  # three processes with the same batch
    tripled = m.compute()
    assert tripled["completion_tokens"] == 3 * alone["completion_tokens"] == 6
    assert tripled["prompt_tokens"] == 3 and tripled["rows"] == 3
    assert tripled["completion_loss"] == pytest.approx(alone["completion_loss"])
    assert all(v.dtype == torch.float64 for v in m.sums.values())


def test_a_segment_without_tokens_is_left_out_and_one_token_is_enough():
    logits, ids, _, _ = one_batch()
    m = StreamingMetrics(0.5)
    m.update(logits, ids, torch.tensor([[0, 0, 0, 0]]), torch.tensor([[0, 0, 0, 1]]))
    out = m.compute()
    assert "prompt_loss" not in out and out["prompt_tokens"] == 0
    want = -torch.log_softmax(logits[0, 2].double(), -1)[4].item()
    assert out["completion_loss"] == pytest.approx(want, rel=1e-6)
    assert out["weighted_loss"] == pytest.approx(want, rel=1e-6)
    assert StreamingMetrics(0.5).compute() == {}
