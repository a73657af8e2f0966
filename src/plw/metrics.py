"""Streamed validation metrics: running sums on the device, one division at the end.

For every batch, :meth:`StreamingMetrics.update` adds to a handful of scalar sums kept on the model's device
(losses and counts per segment, correct answers); nothing per token or per row is kept, so host memory does not
grow with the size of the validation set and the logits never leave the device. :meth:`StreamingMetrics.reduce`
sums the totals across processes (pass ``accelerator.reduce``) before :meth:`StreamingMetrics.compute` divides.

Metrics (names without the ``eval_`` prefix the Trainer adds):

* ``prompt_loss``, ``completion_loss``: mean NLL over prompt / completion targets;
* ``full_loss``: mean NLL over all targets with weight 1 (the ordinary causal-LM validation loss);
* ``weighted_loss``: the training objective ``sum(w * nll) / sum(w)`` at the current plw;
* ``completion_token_accuracy``: share of completion targets that are the arg-max over the vocabulary;
* ``accuracy`` / ``choice_accuracy`` (when answer choice token ids are given): over the rows whose first
  completion token is one of the choices, the share where the gold token is the arg-max over the whole
  vocabulary / over the choice tokens only;
* ``prompt_tokens``, ``completion_tokens``, ``rows``, ``answer_rows``: the counts behind them;
* for conversations (batches with ``role_ids``): ``system_loss``, ``user_loss``, ``assistant_loss``, ``tool_loss``,
  the mean NLL over the targets of each role's turns (the completion counts as ``assistant``), and
  ``{role}_tokens``. With ``role_weight``, ``weighted_loss`` uses ``plw * role_weight`` on prompt tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .data.messages import ROLES
from .loss import prompt_weights, target_weights

_SUMS = (
    "prompt_nll",
    "prompt_tokens",
    "completion_nll",
    "completion_tokens",
    "weighted_nll",
    "weight",
    "completion_correct",
    "rows",
    "answer_rows",
    "answer_correct",
    "choice_correct",
    *(f"{role}_{part}" for role in ROLES for part in ("nll", "tokens")),
)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def answer_positions(completion_mask: torch.Tensor) -> torch.Tensor:
    """Boolean ``[B, N]``: the first token of every completion (also of each packed row in a flat sequence)."""
    prev = F.pad(completion_mask[:, :-1], (1, 0), value=0)
    return (completion_mask == 1) & (prev == 0)


class StreamingMetrics:
    """Accumulate the validation metrics of many batches as device-resident sums.

    Args:
        plw: prompt-loss-weight used for ``weighted_loss``.
        choice_token_ids: token ids of the answer choices (e.g. of ``A``, ``B``, ``C``, ``D``), or ``None``.
        chunk_tokens: how many target positions are turned into float32 log-probabilities at a time; bounds the
            extra memory of a batch to ``chunk_tokens x V`` floats.
    """

    def __init__(self, plw: float, choice_token_ids: Sequence[int] | None = None, chunk_tokens: int = 2048):
        self.plw = float(plw)
        self.choice_token_ids = list(choice_token_ids) if choice_token_ids else None
        self.chunk_tokens = chunk_tokens
        self.sums: dict[str, torch.Tensor] | None = None

    def _init(self, device: torch.device) -> None:
        if self.sums is None:
            self.sums = {k: torch.zeros((), dtype=torch.float64, device=device) for k in _SUMS}

    @torch.no_grad()
    def update(
        self,
        logits: torch.Tensor,
        input_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        role_ids: torch.Tensor | None = None,
        role_weight: torch.Tensor | None = None,
    ) -> None:
        """Add one batch; ``logits`` is ``[B, N, V]`` aligned with ``input_ids`` ``[B, N]``.

        The logits are the "hidden states" of :meth:`update_from_hidden` with an identity head: one reduction.
        """
        self.update_from_hidden(
            logits, _identity, input_ids, prompt_mask, completion_mask, position_ids, role_ids, role_weight
        )

    @torch.no_grad()
    def update_from_hidden(
        self,
        hidden: torch.Tensor,
        head: Callable[[torch.Tensor], torch.Tensor],
        input_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        role_ids: torch.Tensor | None = None,
        role_weight: torch.Tensor | None = None,
    ) -> None:
        """Add one batch from the final hidden states ``[B, N, H]`` and the output projection ``head``.

        Only the target positions are projected, ``chunk_tokens`` at a time, so at most ``chunk_tokens x V``
        float32 logits exist at once (see :class:`plw.chunked_loss.FinalHiddenCapture` for getting ``hidden``).
        """
        device = hidden.device
        self._init(device)
        input_ids, prompt_mask, completion_mask = (t.to(device) for t in (input_ids, prompt_mask, completion_mask))
        if position_ids is not None:
            position_ids = position_ids.to(device)
        starts = (position_ids[:, 1:] != 0) if position_ids is not None else torch.ones_like(input_ids[:, 1:]).bool()
        p_mask = prompt_mask[:, 1:].bool() & starts
        c_mask = completion_mask[:, 1:].bool() & starts
        if role_weight is not None:
            role_weight = role_weight.to(device)
        weights = target_weights(prompt_mask, completion_mask, prompt_weights(self.plw, role_weight), position_ids)
        # Only the positions that are targets of some kind are turned into log-probabilities, in chunks.
        b_idx, t_idx = torch.nonzero(p_mask | c_mask, as_tuple=True)
        targets = input_ids[:, 1:][b_idx, t_idx]
        nll = torch.empty(targets.shape, dtype=torch.float32, device=device)
        pred = torch.empty(targets.shape, dtype=torch.long, device=device)
        choices = torch.tensor(self.choice_token_ids, device=device) if self.choice_token_ids else None
        choice_pred = torch.empty(targets.shape, dtype=torch.long, device=device) if choices is not None else None
        for s in range(0, targets.numel(), self.chunk_tokens):
            e = s + self.chunk_tokens
            chunk = head(hidden[b_idx[s:e], t_idx[s:e]]).float()
            nll[s:e] = F.cross_entropy(chunk, targets[s:e], reduction="none")
            pred[s:e] = chunk.argmax(-1)
            if choice_pred is not None:
                choice_pred[s:e] = chunk[:, choices].argmax(-1)
        is_p = p_mask[b_idx, t_idx]
        is_c = c_mask[b_idx, t_idx]
        w = weights[b_idx, t_idx]
        s = self.sums
        s["prompt_nll"] += nll[is_p].sum().double()
        s["prompt_tokens"] += is_p.sum()
        s["completion_nll"] += nll[is_c].sum().double()
        s["completion_tokens"] += is_c.sum()
        s["weighted_nll"] += (w * nll).sum().double()
        s["weight"] += w.sum().double()
        s["completion_correct"] += ((pred == targets) & is_c).sum()
        if role_ids is not None:
            target_roles = role_ids.to(device)[:, 1:][b_idx, t_idx]
            for r, role in enumerate(ROLES):
                of_role = target_roles == r
                s[f"{role}_nll"] += nll[of_role].sum().double()
                s[f"{role}_tokens"] += of_role.sum()
        first = answer_positions(completion_mask)[:, 1:] & starts
        s["rows"] += first.sum()
        if choices is not None:
            # Answer positions are completion targets, so they are among the scored positions.
            at_answer = first[b_idx, t_idx]
            gold = targets[at_answer]
            is_choice = (gold[:, None] == choices[None, :]).any(-1)
            gold = gold[is_choice]
            s["answer_rows"] += gold.numel()
            s["answer_correct"] += (pred[at_answer][is_choice] == gold).sum()
            s["choice_correct"] += (choices[choice_pred[at_answer][is_choice]] == gold).sum()

    def reduce(self, reduce_fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sum the totals across processes, e.g. ``metrics.reduce(lambda t: accelerator.reduce(t, "sum"))``."""
        if self.sums is not None:
            stacked = reduce_fn(torch.stack([self.sums[k] for k in _SUMS]))
            self.sums = dict(zip(_SUMS, stacked.unbind(0), strict=True))

    def compute(self) -> dict[str, float]:
        """Divide the sums; a metric whose count is zero is left out rather than reported as 0 or NaN."""
        if self.sums is None:
            return {}
        s = {k: float(v) for k, v in self.sums.items()}
        out: dict[str, float] = {}

        def ratio(name: str, num: float, den: float) -> None:
            if den > 0:
                out[name] = num / den

        ratio("prompt_loss", s["prompt_nll"], s["prompt_tokens"])
        ratio("completion_loss", s["completion_nll"], s["completion_tokens"])
        ratio("full_loss", s["prompt_nll"] + s["completion_nll"], s["prompt_tokens"] + s["completion_tokens"])
        ratio("weighted_loss", s["weighted_nll"], s["weight"])
        ratio("completion_token_accuracy", s["completion_correct"], s["completion_tokens"])
        if self.choice_token_ids:
            ratio("accuracy", s["answer_correct"], s["answer_rows"])
            ratio("choice_accuracy", s["choice_correct"], s["answer_rows"])
            out["answer_rows"] = s["answer_rows"]
        for role in ROLES:
            if s[f"{role}_tokens"] > 0:
                out[f"{role}_loss"] = s[f"{role}_nll"] / s[f"{role}_tokens"]
                out[f"{role}_tokens"] = s[f"{role}_tokens"]
        out["prompt_tokens"] = s["prompt_tokens"]
        out["completion_tokens"] = s["completion_tokens"]
        out["rows"] = s["rows"]
        return out
