"""The weighted loss from the final hidden states, without ever holding the ``B x N x V`` logits.

The stock causal-LM loss projects every position to the vocabulary, keeps the float32 logits for the backward pass
and only then applies the weights. Here the loss starts one step earlier, from the hidden states that enter the
output projection (``lm_head``):

1. targets whose weight is 0 (padding, row starts of packed rows and, at ``plw=0``, every prompt target) are
   dropped *before* the projection: at ``plw=0`` on RACE that is about 99% of the positions;
2. the remaining targets are projected ``chunk_tokens`` at a time, so at most ``chunk_tokens x V`` logits exist at
   once, whatever ``B x N``.

The gradient is computed in one of three ways (:func:`loss_backend` picks; all give ``sum(w * nll)``):

* ``"fused"``, a plain ``nn.Linear`` head (tied or untied, frozen or trained): a custom autograd function computes
  each chunk's gradient right after its loss (``softmax - one_hot``, two matrix products) and keeps only the
  gradients of the hidden states and of the weight. Nothing is recomputed, so the work is the plain path's three
  matrix products, and peak memory no longer grows with ``N x V``;
* ``"checkpoint"``, any other head module (LoRA on ``lm_head``, a sharded wrapper): each chunk runs under
  ``torch.utils.checkpoint`` and its logits are recomputed in the backward pass (one more matrix product);
* ``"cce"``, on CUDA when Apple's ``cut-cross-entropy`` is installed, a plain head and half-precision
  (autocast) matrices: ``linear_cross_entropy(..., reduction="none")`` then the weights. Untested here (no GPU).

Getting the hidden states: :class:`FinalHiddenCapture` puts a forward pre-hook on the model's output embedding
(``get_output_embeddings()``, which every transformers causal LM and PEFT wrapper provides). The hook records the
hidden states the head receives, exactly the ones the model would project, and hands the head only the last
position, so the model itself computes just ``B x 1 x V`` logits. The forward still goes through the outer
(DDP/FSDP/DeepSpeed/PEFT) module, so the wrappers' hooks run as usual. Models that transform the logits after the
head (soft-capping, scaling) are detected by :func:`check_head_output` on the first batch.

The loss math is float32 (logits are cast before the log-softmax), also under bf16 autocast, like the plain path.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .loss import target_weights

DEFAULT_CHUNK_TOKENS = 512
BACKENDS = ("auto", "fused", "checkpoint", "cce")
# How PLWTrainer computes the loss: from hidden states here ("chunked"), or from the full logits (plw.loss, "plain").
LOSS_IMPLS = ("chunked", "plain")


# ---- the hidden states -------------------------------------------------------------------------------------------


def output_head(model: nn.Module) -> nn.Module:
    """The output projection of a (possibly DDP-, DeepSpeed- or PEFT-wrapped) causal LM.

    DDP and DeepSpeed engines keep the model in ``.module``; PEFT models forward ``get_output_embeddings`` to the
    base model, and return the LoRA wrapper when ``lm_head`` carries an adapter.
    """
    inner = model
    while not hasattr(inner, "get_output_embeddings") and isinstance(getattr(inner, "module", None), nn.Module):
        inner = inner.module
    getter = getattr(inner, "get_output_embeddings", None)
    head = getter() if getter is not None else None
    if not isinstance(head, nn.Module):
        raise ValueError(
            f"{type(model).__name__} has no output embedding module (get_output_embeddings() returned {head!r}); "
            "use loss_impl='plain'"
        )
    return head


class FinalHiddenCapture:
    """Context manager: record the hidden states entering ``head`` and let the model project only the last one.

    >>> head = output_head(model)                                  # doctest: +SKIP
    >>> with FinalHiddenCapture(head) as cap:                      # doctest: +SKIP
    ...     outputs = model(input_ids=ids, attention_mask=mask)    # outputs.logits is [B, 1, V]
    >>> cap.hidden.shape                                           # doctest: +SKIP
    torch.Size([B, N, H])

    A forward pre-hook may replace a module's input (documented ``nn.Module`` behaviour), which is how the head
    gets ``hidden[:, -1:]``. The captured tensor stays in the autograd graph, so the loss computed from it
    back-propagates into the model.
    """

    def __init__(self, head: nn.Module):
        self.head = head
        self.hidden: torch.Tensor | None = None
        self.head_output: torch.Tensor | None = None
        self._handle: Any = None
        self._out_handle: Any = None

    def _hook(self, module: nn.Module, args: tuple) -> tuple | None:
        if not args or not torch.is_tensor(args[0]) or args[0].dim() != 3:
            return None  # not the [B, N, H] call we expect; leave it alone (the capture then reports failure)
        self.hidden = args[0]
        return (args[0][:, -1:, :], *args[1:])

    def __enter__(self) -> FinalHiddenCapture:
        self.hidden = None
        self.head_output = None
        # First among the head's pre-hooks: an engine's hooks (ZeRO-3 wraps a module's inputs in functions that
        # expect the module's own backward to run first) then see only the last position, and the captured states
        # stay outside them, so the loss's gradient flows back into the model without passing the head's hooks.
        self._handle = self.head.register_forward_pre_hook(self._hook, prepend=True)
        self._out_handle = self.head.register_forward_hook(self._record_output)
        return self

    def _record_output(self, module: nn.Module, args: tuple, output: Any) -> None:
        if torch.is_tensor(output):
            self.head_output = output.detach()

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()
        self._out_handle.remove()
        self._handle = self._out_handle = None
        if exc[0] is None and self.hidden is None:
            raise RuntimeError(
                "the model never called its output embedding with [batch, tokens, hidden] states, so the chunked "
                "loss cannot see them; use loss_impl='plain'"
            )


def _has_active_dropout(module: nn.Module) -> bool:
    return module.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules())


@torch.no_grad()
def check_head_output(
    model_logits: torch.Tensor, hidden: torch.Tensor, head: nn.Module, head_output: torch.Tensor | None = None
) -> bool:
    """Raise if the model's logits are not ``head(hidden)`` (soft-capping or scaling after the projection).

    ``model_logits`` are the ``[B, 1, V]`` logits the model returned under :class:`FinalHiddenCapture`;
    ``head_output`` (the capture's record of what the head returned in that forward) is compared with them when
    given, so a forward under autocast is checked in its own precision; otherwise the head is called again. Returns
    False without checking when the head has active dropout (LoRA dropout in training), where two calls
    legitimately differ; True once checked.
    """
    if _has_active_dropout(head):
        return False
    if head_output is not None:
        # The head's own output inside the model's forward: same precision (autocast) as the logits it returned.
        ours = head_output[:, -1:, :].float()
    else:
        ours = head(hidden[:, -1:, :]).float()
    theirs = model_logits[:, -1:, :].float()
    if ours.shape != theirs.shape or not torch.allclose(ours, theirs, rtol=1e-2, atol=1e-2):
        raise RuntimeError(
            "this model changes the logits after its output projection (e.g. final logit soft-capping or "
            "scaling), which the chunked loss does not reproduce; use loss_impl='plain'"
        )
    return True


# ---- choosing how to compute -------------------------------------------------------------------------------------


def _is_plain_linear(head: nn.Module) -> bool:
    """A bare ``nn.Linear`` whose full weight is present (not sharded, no hooks that might gather it)."""
    return (
        type(head) is nn.Linear
        and not head._forward_hooks
        and not head._forward_pre_hooks
        and tuple(head.weight.shape) == (head.out_features, head.in_features)
    )


def cce_available() -> bool:
    """True when Apple's ``cut-cross-entropy`` can be imported."""
    try:
        import cut_cross_entropy  # noqa: F401
    except Exception:  # ImportError, or a broken triton install
        return False
    return True


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def loss_backend(
    head: nn.Module, device: torch.device | str, backend: str = "auto", half_precision: bool = True
) -> str:
    """Which implementation computes the loss: ``"cce"``, ``"fused"`` or ``"checkpoint"`` (see the module doc).

    ``"auto"`` takes cut-cross-entropy on CUDA when it is installed, the head is a plain linear layer and the
    matrices are half precision (``half_precision``: bf16/fp16 autocast or weights), else ``"fused"`` for a plain
    linear layer, else ``"checkpoint"``. Asking for ``"fused"`` or ``"cce"`` where they cannot run falls back the
    same way.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "checkpoint" or not _is_plain_linear(head):
        return "checkpoint"
    if backend in ("auto", "cce") and half_precision and torch.device(device).type == "cuda" and cce_available():
        return "cce"
    return "fused"


def describe_backend(backend: str, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> str:
    """One line for logs: which loss path a run uses."""
    return {
        "cce": "chunked loss via cut-cross-entropy (CUDA kernel), zero-weight targets skipped",
        "fused": f"chunked loss, fused linear+NLL gradient, {chunk_tokens} targets per chunk, zero-weight targets "
        "skipped",
        "checkpoint": f"chunked loss, output projection recomputed in backward (checkpointed), {chunk_tokens} "
        "targets per chunk, zero-weight targets skipped",
    }[backend]


# ---- the loss ----------------------------------------------------------------------------------------------------


def _chunk_nll(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 ``(nll, logsumexp)`` of one chunk of logits ``[C, V]``."""
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1)
    return lse - logits.gather(1, targets[:, None]).squeeze(1), lse


def _softmax_nll_(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """NLL of float32 ``logits [C, V]``, turning ``logits`` into the softmax in place (no other ``[C, V]`` buffer).

    ``torch.logsumexp`` and ``F.cross_entropy`` each allocate ``[C, V]`` temporaries; doing the shift, exp and
    normalisation in place keeps the chunk to one buffer, which is what bounds the fused path's peak memory.
    """
    top = logits.amax(dim=-1, keepdim=True)
    shifted_target = logits.gather(1, targets[:, None]).squeeze(1) - top.squeeze(1)
    sumexp = logits.sub_(top).exp_().sum(dim=-1)
    logits.div_(sumexp[:, None])
    return sumexp.log() - shifted_target


class _FusedLinearWeightedNLL(torch.autograd.Function):
    """``sum(w * nll(h @ W.T + b, t))`` with the gradient computed chunk by chunk in the forward pass.

    Per chunk: logits ``[C, V]``, their float32 softmax minus the one-hot target, times ``w``; then
    ``grad_h = g @ W`` and ``grad_W += g.T @ h``. Only ``grad_h`` (``[T, H]``) and ``grad_W`` (``[V, H]``, float32)
    outlive the chunk; the backward pass only scales them by the incoming gradient. Under autocast the matrix
    products run in the autocast dtype, as they would in the plain path.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, weights, chunk_tokens):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need_b else None
        # The matrix products run in the autocast dtype when autocast is on, as in the plain path; cast once.
        mm_dtype = _autocast_dtype(hidden.device.type) or weight.dtype
        weight = weight.to(mm_dtype)
        bias = None if bias is None else bias.to(mm_dtype)
        for s in range(0, hidden.shape[0], chunk_tokens):
            h, t, w = hidden[s : s + chunk_tokens], targets[s : s + chunk_tokens], weights[s : s + chunk_tokens]
            h = h.to(mm_dtype)
            logits = F.linear(h, weight, bias)
            g = logits.float()
            del logits
            nll = _softmax_nll_(g, t)  # g now holds the softmax
            total += (w * nll).sum()
            if not (need_h or need_w or need_b):
                del g
                continue
            g[torch.arange(t.numel(), device=g.device), t] -= 1.0
            g.mul_(w[:, None])
            if need_b:
                grad_b += g.sum(0)
            g = g.to(mm_dtype)
            if need_h:
                grad_h[s : s + chunk_tokens] = (g @ weight).to(hidden.dtype)
            if need_w and mm_dtype == torch.float32:
                grad_w.addmm_(g.t(), h)  # in place: no [V, H] temporary per chunk
            elif need_w:
                grad_w += (g.t() @ h).float()
            del g  # before the next chunk's logits are allocated
        # Gradients, not inputs or outputs: kept on ctx (not save_for_backward) so that backward can scale them in
        # place and hand them over without a second [V, H] copy.
        ctx.grads = (grad_h, grad_w, grad_b)
        ctx.dtypes = dtypes
        return total

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.grads is None:
            raise RuntimeError("the fused chunked loss supports one backward pass (no retain_graph)")
        grads, ctx.grads = ctx.grads, None
        out = [None if g is None else g.mul_(grad_out).to(dtype) for g, dtype in zip(grads, ctx.dtypes, strict=True)]
        return (*out, None, None, None)


def _module_chunk_nll_sum(head: nn.Module, h: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    nll, _ = _chunk_nll(head(h), t)
    return (w * nll).sum()


def _cce_nll_sum(head: nn.Linear, hidden: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """cut-cross-entropy's per-target NLL (half-precision matrices), then the weights in float32."""
    from cut_cross_entropy import linear_cross_entropy

    dtype = _autocast_dtype("cuda") or hidden.dtype
    bias = None if head.bias is None else head.bias.to(dtype)
    nll = linear_cross_entropy(hidden.to(dtype), head.weight.to(dtype), targets, bias=bias, reduction="none")
    return (weights * nll.float()).sum()


def linear_weighted_nll(
    hidden: torch.Tensor,
    head: nn.Module,
    targets: torch.Tensor,
    weights: torch.Tensor,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    backend: str = "auto",
) -> torch.Tensor:
    """``sum(weights * nll(head(hidden), targets))`` in float32, never more than ``chunk_tokens x V`` logits.

    Args:
        hidden: ``[T, H]`` hidden states of the positions to score (already selected).
        head: the output projection (``nn.Linear``, a LoRA-wrapped linear, ...).
        targets: ``[T]`` target token ids; weights: ``[T]`` float weights.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    targets = targets.to(hidden.device)
    weights = weights.to(hidden.device, torch.float32)
    if hidden.shape[0] == 0:
        return hidden.float().sum() * 0.0  # keeps the graph connected for a batch without targets
    half = (_autocast_dtype(hidden.device.type) or hidden.dtype) in (torch.float16, torch.bfloat16)
    which = loss_backend(head, hidden.device, backend, half_precision=half)
    if not torch.is_grad_enabled():
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for s in range(0, hidden.shape[0], chunk_tokens):
            sl = slice(s, s + chunk_tokens)
            logits = head(hidden[sl]).float()
            total += (weights[sl] * _softmax_nll_(logits, targets[sl])).sum()
            del logits
        return total
    if which == "cce":
        return _cce_nll_sum(head, hidden, targets, weights)
    if which == "fused":
        return _FusedLinearWeightedNLL.apply(hidden, head.weight, head.bias, targets, weights, chunk_tokens)
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    fn = functools.partial(_module_chunk_nll_sum, head)
    for s in range(0, hidden.shape[0], chunk_tokens):
        sl = slice(s, s + chunk_tokens)
        total = total + checkpoint(fn, hidden[sl], targets[sl], weights[sl], use_reentrant=False)
    return total


def chunked_weighted_nll_sum(
    hidden: torch.Tensor,
    head: nn.Module,
    input_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    plw: float | torch.Tensor,
    position_ids: torch.Tensor | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    backend: str = "auto",
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum(w * nll), sum(w))`` of one micro-batch from the final hidden states ``[B, N, H]``.

    The same values as :func:`plw.loss.weighted_nll_sum` applied to ``head(hidden)``: hidden state ``n`` predicts
    ``input_ids[:, n + 1]`` with the weight of :func:`plw.loss.target_weights` (or ``weights``, ``[B, N-1]``, when
    given); targets of weight 0 are never projected, so prompt targets dropped by subsampling cost no LM head.
    """
    if weights is None:
        weights = target_weights(prompt_mask, completion_mask, plw, position_ids)
    w = weights.to(hidden.device)
    keep = w > 0
    selected = hidden[:, :-1][keep]
    targets = input_ids[:, 1:].to(hidden.device)[keep]
    total = linear_weighted_nll(selected, head, targets, w[keep], chunk_tokens, backend)
    return total, w.sum()
