"""The output projection with its full weight, once per batch, under engines that shard parameters.

DeepSpeed ZeRO-3 keeps only a slice of every parameter on each process between module calls (an empty tensor in
``lm_head.weight`` outside the head's own forward), and FSDP2 (``fully_shard``) holds parameters as sharded
``DTensor``\\ s. The chunked loss and the streamed evaluation project many chunks of hidden states through the head,
outside the model's forward: calling the head module once per chunk would gather its weight once per chunk, a
collective whose count depends on how many targets the process holds (the hang of issue 23), and a checkpointed
chunk would recompute against the empty slice.

:func:`full_head` gathers the head's parameters once, the same number of times on every process (callers use it
once per micro-batch or evaluation batch, whatever the batch holds), and yields a hook-free ``nn.Linear`` that
shares them, so every chunk inside projects with the full weight and no further collective:

* ZeRO-3 (parameters with ``ds_id``): ``deepspeed.zero.GatheredParameters`` puts the full tensors into the
  parameters for the duration of the block; the stand-in holds the same ``Parameter`` objects, so a gradient of the
  weight (full fine-tuning) reaches DeepSpeed's own reduction;
* FSDP2 (``DTensor`` weights): ``full_tensor()``, an all-gather; used where no gradient of the weight is needed
  (evaluation, a frozen head). A head that FSDP2 has unsharded for the model's forward is a plain tensor already;
* anything else (one process, DDP, ZeRO-1/2): the head itself, no collective.

A sharded head that is not a plain linear layer (an adapter on ``lm_head``) is refused with a one-line error: its
forward cannot be replayed chunk by chunk without gathering per chunk; ``loss_impl: plain`` works there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def _is_zero3(param: torch.Tensor) -> bool:
    return hasattr(param, "ds_id")


def _is_dtensor(param: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch build without distributed support
        return False
    return isinstance(param, DTensor)


def is_sharded(head: nn.Module) -> bool:
    """True when any parameter of ``head`` is a ZeRO-3 partition or an FSDP2 ``DTensor``."""
    return any(_is_zero3(p) or _is_dtensor(p) for p in head.parameters())


def _linear_like(head: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A bare ``nn.Linear`` (no hooks) whose weight and bias are the given tensors (shared, not copied)."""
    stand_in = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(stand_in)
    stand_in.in_features, stand_in.out_features = weight.shape[1], weight.shape[0]
    for name, value in (("weight", weight), ("bias", bias)):
        if isinstance(value, nn.Parameter) or value is None:
            stand_in.register_parameter(name, value)
        else:
            object.__setattr__(stand_in, name, value)  # a gathered plain tensor: an attribute, not a parameter
    return stand_in


def _check_linear(head: nn.Module) -> None:
    if not isinstance(head, nn.Linear):
        raise ValueError(
            f"the output projection is a sharded {type(head).__name__}, not a linear layer (an adapter on lm_head?): "
            "the chunked loss cannot gather it once per batch; use loss_impl: plain or leave lm_head without adapter"
        )


@contextlib.contextmanager
def full_head(head: nn.Module) -> Iterator[nn.Module]:
    """Within the block, a module that projects like ``head`` with its full weight, gathered once on entry.

    Every process must enter the block the same number of times (it may be a collective); see the module doc.
    """
    params = list(head.parameters())
    if any(_is_zero3(p) for p in params):
        _check_linear(head)
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield _linear_like(head, head.weight, head.bias)
        return
    if any(_is_dtensor(p) for p in params):
        _check_linear(head)

        def full(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None or not _is_dtensor(t):
                return t
            if t.requires_grad and torch.is_grad_enabled():
                raise ValueError(
                    "a trainable lm_head sharded by FSDP2 outside the model's forward is not supported by the chunked "
                    "loss; shard the head with its parent module (the root) or use loss_impl: plain"
                )
            return t.full_tensor()

        yield _linear_like(head, full(head.weight), full(head.bias))
        return
    yield head
