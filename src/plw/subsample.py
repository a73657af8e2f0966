"""Prompt-position subsampling: score a random share ``q`` of the prompt targets, with weight ``w / q``.

With ``prompt_sample_rate: q < 1`` each training step keeps every prompt target with probability ``q`` and scales
its weight by ``1 / q``; the other prompt targets get weight 0, so the chunked loss never projects them to the
vocabulary. ``E[sum(w' * nll)] = sum(w * nll)``: an unbiased estimate of the numerator of the exact loss, whose
denominator ``D`` stays the exact one of the step. Completion targets are always kept.

The draw is a pure function of ``(seed, step, row, position)``: ``row`` is the index of the record in the training
set (the ``row_index`` column, see :func:`with_row_index`) and ``position`` the target token's position inside its
record. Packing, batch composition, gradient accumulation, the number of processes and a resume from a checkpoint
therefore leave the draw unchanged. The uniform numbers come from a 32-bit integer hash chained over the four
inputs, computed with tensor operations on the batch's device (no generator state to save or restore).
"""

from __future__ import annotations

import math
from typing import Any

import torch

_MASK32 = 0xFFFFFFFF


def check_sample_rate(value: Any, name: str = "prompt_sample_rate") -> float:
    """Return ``value`` as a float in (0, 1], or raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit avalanche hash (xorshift-multiply rounds) of int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _MASK32
    return x ^ (x >> 15)


def uniforms(seed: int, step: int, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Uniform numbers in [0, 1), float64, one per element of ``rows`` / ``positions`` (same shape, integers).

    A pure function of ``(seed, step, row, position)``: the same inputs always give the same number.
    """
    h = _mix32(torch.full_like(rows, int(seed) & _MASK32, dtype=torch.int64) ^ 0x9E3779B9)
    h = _mix32(h ^ (int(step) & _MASK32))
    h = _mix32(h ^ (rows.to(torch.int64) & _MASK32))
    h = _mix32(h ^ (positions.to(torch.int64) & _MASK32))
    return h.double() / 2.0**32


def token_positions(input_ids: torch.Tensor, position_ids: torch.Tensor | None) -> torch.Tensor:
    """Each token's position inside its record: ``position_ids`` for packed rows, else the column index."""
    if position_ids is not None:
        return position_ids
    return torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)


def subsample_prompt(
    weights: torch.Tensor,
    prompt_mask: torch.Tensor,
    row_index: torch.Tensor,
    positions: torch.Tensor,
    rate: float,
    seed: int,
    step: int,
) -> torch.Tensor:
    """Target weights ``[B, N-1]`` with each prompt target kept with probability ``rate`` (weight ``w / rate``) or
    dropped (weight 0); completion targets unchanged. ``prompt_mask``, ``row_index`` and ``positions`` are ``[B, N]``
    and aligned with the tokens (target ``t`` is token ``t + 1``). ``rate == 1`` returns ``weights`` itself."""
    if rate >= 1.0:
        return weights
    u = uniforms(seed, step, row_index[:, 1:].to(weights.device), positions[:, 1:].to(weights.device))
    prompt = prompt_mask[:, 1:].to(weights.device).bool()
    factor = torch.where(u < rate, 1.0 / rate, 0.0).to(weights.dtype)
    return torch.where(prompt, weights * factor, weights)


def with_row_index(rows: Any) -> Any:
    """The rows with a per-token ``row_index`` column (the row's index in ``rows``), the key of the subsampling draw.

    ``rows`` is a list of dicts (new dicts are returned; the input is left as it is) or a ``datasets.Dataset``.
    Rows that already carry ``row_index`` are returned unchanged.
    """
    if hasattr(rows, "column_names"):
        if "row_index" in rows.column_names:
            return rows
        return rows.add_column("row_index", [[i] * len(ids) for i, ids in enumerate(rows["input_ids"])])
    rows = list(rows)
    if rows and all("row_index" in r for r in rows):
        return rows
    return [{**r, "row_index": [i] * len(r["input_ids"])} for i, r in enumerate(rows)]
