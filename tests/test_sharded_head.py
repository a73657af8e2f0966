"""plw.sharded_head and the capture it relies on, without an engine (the engines run in test_engines.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from plw.chunked_loss import FinalHiddenCapture, linear_weighted_nll, loss_backend
from plw.metrics import StreamingMetrics
from plw.sharded_head import _linear_like, full_head, is_sharded


def test_an_unsharded_head_is_used_as_it_is():
    head = nn.Linear(8, 11)
    assert not is_sharded(head)
    with full_head(head) as full:
        assert full is head


def test_the_stand_in_shares_the_parameters_and_has_no_hooks():
    """The chunks project through a bare nn.Linear holding the head's own Parameters: the fused path runs and the
    weight's gradient reaches the head (what ZeRO-3 reduces), equal to projecting through the head itself."""
    torch.manual_seed(0)
    head = nn.Linear(8, 11)
    head.register_forward_hook(lambda *a: None)  # an engine's hook: the head itself is no plain linear layer
    stand_in = _linear_like(head, head.weight, head.bias)
    assert stand_in.weight is head.weight and stand_in.bias is head.bias
    assert loss_backend(head, "cpu") == "checkpoint" and loss_backend(stand_in, "cpu") == "fused"
    hidden, targets, w = torch.randn(13, 8), torch.randint(0, 11, (13,)), torch.rand(13)
    linear_weighted_nll(hidden, stand_in, targets, w, chunk_tokens=4).backward()
    grad, head.weight.grad = head.weight.grad.clone(), None
    reference = (w * nn.functional.cross_entropy(head(hidden), targets, reduction="none")).sum()
    reference.backward()
    torch.testing.assert_close(grad, head.weight.grad)


def test_a_sharded_head_that_is_not_linear_is_refused_in_one_line():
    class Adapter(nn.Module):  # e.g. LoRA on lm_head: a wrapper, not an nn.Linear
        def __init__(self):
            super().__init__()
            self.base = nn.Linear(4, 5)

    head = Adapter()
    head.base.weight.ds_id = 0  # what a ZeRO-3 partitioned parameter carries
    assert is_sharded(head)
    with pytest.raises(ValueError, match="not a linear layer.*loss_impl: plain"), full_head(head):
        pass


def test_the_capture_hook_runs_before_the_heads_other_hooks():
    """An engine's pre-hook (ZeRO-3 wraps the head's inputs) sees only the last position, and the captured states
    are the ones before any such hook touched them."""
    head = nn.Linear(6, 9)
    seen = []
    head.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape) or None)
    hidden = torch.randn(2, 5, 6)
    with FinalHiddenCapture(head) as capture:
        head(hidden)
    assert seen == [torch.Size([2, 1, 6])]
    assert capture.hidden is hidden


def test_reduce_is_one_collective_even_without_batches():
    """A process that saw no batch still takes part in the reduce, with zeros (else the others would wait)."""
    calls = []
    metrics = StreamingMetrics(0.5)
    metrics.reduce(lambda t: calls.append(t.clone()) or t * 0 + 2)
    assert len(calls) == 1 and float(calls[0].abs().sum()) == 0
    assert metrics.compute()["rows"] == 2
