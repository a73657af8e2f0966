"""The prompt-loss-weighted causal-LM loss, as plain functions.

Every target token ``t`` (predicted from the tokens before it) carries the weight
``w_t = (plw * role_weight_t * prompt_mask_t + completion_loss_weight * completion_mask_t) * data_weight_t``
(role weights: :mod:`plw.roles`; ``data_weight`` is the record's weight times the message's, :mod:`plw.data.weights`;
each factor defaults to 1). The loss of an optimizer step is ``sum(w * nll) / D`` where both sums run over every
micro-batch of gradient accumulation and every data-parallel rank, and ``D`` is ``sum(w)``
(``loss_normalization="weight"``) or the count of targets with ``w > 0`` (``"tokens"``). So the functions here return
*sums*; the division by the step-level normaliser happens once (``PLWTrainer`` passes it as ``num_items_in_batch``).

``plw=1`` is the ordinary causal-LM loss, ``plw=0`` completion-only training.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
NORMALIZATIONS = ("weight", "tokens")


def check_plw(plw: Any, name: str = "prompt_loss_weight") -> float:
    """Return ``plw`` as a float, or raise ``ValueError`` if it is not a number in [0, 1]."""
    if isinstance(plw, bool) or not isinstance(plw, (int, float)):
        raise ValueError(f"{name} must be a number in [0, 1], got {plw!r}")
    if math.isnan(plw) or not 0.0 <= plw <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {plw!r}")
    return float(plw)


def target_weights(
    prompt_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    plw: float | torch.Tensor,
    position_ids: torch.Tensor | None = None,
    completion_weight: float = 1.0,
    data_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weights of the *targets* ``input_ids[:, 1:]``: shape ``[B, N-1]``, float32.

    ``plw`` is a number, or a ``[B, N]`` tensor of per-token prompt weights (``plw`` times a role weight, see
    :mod:`plw.roles`) aligned with the tokens. Completion tokens weigh ``completion_weight``. ``data_weight``
    (``[B, N]``, aligned with the tokens) multiplies every weight: the record's and the message's weight of each
    token. With ``position_ids`` (packed rows), a token that starts a row (position 0) is never a target: it would be
    predicted from the previous row's last token.
    """
    if torch.is_tensor(plw):
        prompt = plw[:, 1:].to(prompt_mask.device, torch.float32) * prompt_mask[:, 1:].float()
    else:
        prompt = plw * prompt_mask[:, 1:].float()
    w = prompt + completion_weight * completion_mask[:, 1:].float()
    if data_weight is not None:
        w = w * data_weight[:, 1:].to(w.device, torch.float32)
    if position_ids is not None:
        w = w * (position_ids[:, 1:] != 0).to(w.device).float()
    return w


def check_normalization(value: Any) -> str:
    """Return ``value`` if it is a loss normalisation (``weight`` or ``tokens``), else raise ``ValueError``."""
    if value not in NORMALIZATIONS:
        raise ValueError(f"loss_normalization must be one of {', '.join(NORMALIZATIONS)}, got {value!r}")
    return value


def denominator(weights: torch.Tensor, normalization: str = "weight") -> torch.Tensor:
    """The part of the loss's ``D`` that ``weights`` contribute: their sum, or (``"tokens"``) how many are > 0."""
    if normalization == "tokens":
        return (weights > 0).sum().to(torch.float32)
    return weights.sum()


def prompt_weights(plw: float, role_weight: torch.Tensor | None = None) -> float | torch.Tensor:
    """The weight of prompt tokens for :func:`target_weights`: ``plw``, or ``plw * role_weight`` per token for rows
    that carry role weights (:mod:`plw.roles`)."""
    return plw if role_weight is None else plw * role_weight.float()


def token_nll(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-target negative log-likelihood in float32, shape ``[B, N-1]`` (``logits`` are ``[B, N, V]``)."""
    shift_logits = logits[:, :-1, :].float()
    targets = input_ids[:, 1:].to(shift_logits.device)
    nll = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), targets.reshape(-1), reduction="none")
    return nll.view(targets.shape)


def weighted_nll_sum(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    plw: float | torch.Tensor,
    position_ids: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(sum(w * nll), sum(w))`` over the targets of one micro-batch.

    ``weights`` (``[B, N-1]``) replaces the weights of :func:`target_weights` when given (with a completion weight,
    data weights or a subsampled prompt).
    """
    if weights is None:
        weights = target_weights(prompt_mask, completion_mask, plw, position_ids)
    w = weights.to(logits.device)
    nll = token_nll(logits, input_ids)
    return (w * nll).sum(), w.sum()


def plw_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    plw: float,
    normalizer: torch.Tensor | float | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted mean NLL ``sum(w * nll) / normalizer`` (``normalizer`` defaults to this batch's ``sum(w)``).

    Pass the sum of weights of the whole optimizer step as ``normalizer`` so that gradient accumulation and the
    number of processes do not change the gradient.
    """
    total, weight = weighted_nll_sum(logits, input_ids, prompt_mask, completion_mask, plw, position_ids)
    denom = weight if normalizer is None else normalizer
    if torch.is_tensor(denom):
        denom = denom.to(total.device, total.dtype)
    return total / denom


# ---- for users of the stock transformers.Trainer / TRL (the loss function: plw.weight_policy.make_compute_loss_func) ------------------------------------------------------------
#
# A stock Trainer hands `compute_loss_func(outputs, labels, num_items_in_batch)` only the labels, so the prompt and
# completion masks travel inside them: completion targets keep their id, prompt targets are stored as
# `-(id) - 101` (always < -100), padding is -100. The Trainer counts every label != -100 for `num_items_in_batch`.


def signed_labels(input_ids: torch.Tensor, prompt_mask: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Labels for :func:`plw.weight_policy.make_compute_loss_func`: completion ids as is, prompt ids as
    ``-id-101``, others -100."""
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels = torch.where(completion_mask.bool(), input_ids, labels)
    return torch.where(prompt_mask.bool(), -input_ids - 101, labels)
