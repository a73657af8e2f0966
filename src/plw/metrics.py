"""Streamed validation metrics: running sums on the device, one division at the end.

For every batch, :meth:`StreamingMetrics.update` adds to a handful of scalar sums kept on the model's device
(losses and counts per segment, correct answers); nothing per token or per row is kept, so host memory does not
grow with the size of the validation set and the logits never leave the device. :meth:`StreamingMetrics.reduce`
sums the totals across processes (pass ``accelerator.reduce``) before :meth:`StreamingMetrics.compute` divides.

Metrics (names without the ``eval_`` prefix the Trainer adds):

* ``prompt_loss``, ``completion_loss``: mean NLL over prompt / completion targets;
* ``full_loss``: mean NLL over all targets with weight 1 (the ordinary causal-LM validation loss);
* ``weighted_loss``: the training objective ``sum(w * nll) / D`` at the current plw and completion weight, with
  the rows' data weights; ``D = sum(w)``, or the count of targets with ``w > 0`` under ``normalization="tokens"``
  (always exact: evaluation never subsamples);
* ``completion_token_accuracy``: share of completion targets that are the arg-max over the vocabulary;
* ``exact_match``: share of rows whose every completion target is the arg-max over the vocabulary under teacher
  forcing (the accuracy of tasks whose answers are words rather than letters);
* ``accuracy`` / ``choice_accuracy`` (when answer choice token ids are given): over the rows whose first
  completion token is one of the choices, the share where the gold token is the arg-max over the whole
  vocabulary / over the choice tokens only;
* ``prompt_tokens``, ``completion_tokens``, ``rows``, ``answer_rows``: the counts behind them;
* for conversations (batches with ``role_ids``): ``system_loss``, ``user_loss``, ``assistant_loss``, ``tool_loss``,
  the mean NLL over the targets of each role's turns (the completion counts as ``assistant``), and
  ``{role}_tokens``. With ``role_weight``, ``weighted_loss`` uses ``plw * role_weight`` on prompt tokens.

With ``row_ids`` (a per-token column naming each token's row), the outcome of every row is also kept (with its
completion loss) — a few bytes a row, see :attr:`StreamingMetrics.row_outcomes` — so that two runs can be compared paired on the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .data.messages import ROLES
from .loss import check_normalization
from .weight_policy import StepWeights

_SUMS = (
    "prompt_nll",
    "prompt_tokens",
    "completion_nll",
    "completion_tokens",
    "weighted_nll",
    "weight",
    "weighted_targets",
    "completion_correct",
    "rows",
    "answer_rows",
    "answer_correct",
    "choice_correct",
    "exact_correct",
    *(f"{role}_{part}" for role in ROLES for part in ("nll", "tokens")),
)


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
        completion_weight: weight of completion tokens in ``weighted_loss``.
        normalization: ``"weight"`` or ``"tokens"``, the denominator of ``weighted_loss`` (see the module doc).
        weights: the :class:`~plw.weight_policy.StepWeights` to evaluate with, instead of the three above.
    """

    def __init__(
        self,
        plw: float = 1.0,
        choice_token_ids: Sequence[int] | None = None,
        chunk_tokens: int = 2048,
        completion_weight: float = 1.0,
        normalization: str = "weight",
        weights: StepWeights | None = None,
    ):
        if weights is None:
            weights = StepWeights(float(plw), float(completion_weight), check_normalization(normalization))
        self.weights = weights
        self.plw, self.completion_weight, self.normalization = weights.plw, weights.completion, weights.normalization
        self.choice_token_ids = list(choice_token_ids) if choice_token_ids else None
        self.chunk_tokens = chunk_tokens
        self.sums: dict[str, torch.Tensor] | None = None
        self._outcomes: list[torch.Tensor] = []
        self._losses: list[torch.Tensor] = []  # per row, aligned with _outcomes: mean NLL of its completion targets

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
        data_weight: torch.Tensor | None = None,
        row_ids: torch.Tensor | None = None,
    ) -> None:
        """Add one batch; ``logits`` is ``[B, N, V]`` aligned with ``input_ids`` ``[B, N]``."""
        self._update(
            lambda b, t: logits[b, t],
            logits.device,
            input_ids,
            prompt_mask,
            completion_mask,
            position_ids,
            role_ids,
            role_weight,
            data_weight,
            row_ids,
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
        data_weight: torch.Tensor | None = None,
        row_ids: torch.Tensor | None = None,
    ) -> None:
        """Add one batch from the final hidden states ``[B, N, H]`` and the output projection ``head``.

        Only the target positions are projected, ``chunk_tokens`` at a time, so at most ``chunk_tokens x V``
        float32 logits exist at once (see :class:`plw.chunked_loss.FinalHiddenCapture` for getting ``hidden``).
        """
        self._update(
            lambda b, t: head(hidden[b, t]),
            hidden.device,
            input_ids,
            prompt_mask,
            completion_mask,
            position_ids,
            role_ids,
            role_weight,
            data_weight,
            row_ids,
        )

    def _update(
        self,
        logits_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        device: torch.device,
        input_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        completion_mask: torch.Tensor,
        position_ids: torch.Tensor | None,
        role_ids: torch.Tensor | None = None,
        role_weight: torch.Tensor | None = None,
        data_weight: torch.Tensor | None = None,
        row_ids: torch.Tensor | None = None,
    ) -> None:
        """Shared body: ``logits_at(b_idx, t_idx)`` gives the ``[C, V]`` logits that predict ``input_ids[b, t+1]``."""
        self._init(device)
        input_ids, prompt_mask, completion_mask = (t.to(device) for t in (input_ids, prompt_mask, completion_mask))
        if position_ids is not None:
            position_ids = position_ids.to(device)
        starts = (position_ids[:, 1:] != 0) if position_ids is not None else torch.ones_like(input_ids[:, 1:]).bool()
        p_mask = prompt_mask[:, 1:].bool() & starts
        c_mask = completion_mask[:, 1:].bool() & starts
        if role_weight is not None:
            role_weight = role_weight.to(device)
        weights = self.weights.target_weights(prompt_mask, completion_mask, position_ids, role_weight, data_weight)
        # Only the positions that are targets of some kind are turned into log-probabilities, in chunks.
        b_idx, t_idx = torch.nonzero(p_mask | c_mask, as_tuple=True)
        targets = input_ids[:, 1:][b_idx, t_idx]
        nll = torch.empty(targets.shape, dtype=torch.float32, device=device)
        pred = torch.empty(targets.shape, dtype=torch.long, device=device)
        choices = torch.tensor(self.choice_token_ids, device=device) if self.choice_token_ids else None
        choice_pred = torch.empty(targets.shape, dtype=torch.long, device=device) if choices is not None else None
        for s in range(0, targets.numel(), self.chunk_tokens):
            e = s + self.chunk_tokens
            chunk = logits_at(b_idx[s:e], t_idx[s:e]).float()
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
        s["weighted_targets"] += (w > 0).sum()
        s["completion_correct"] += ((pred == targets) & is_c).sum()
        if role_ids is not None:
            target_roles = role_ids.to(device)[:, 1:][b_idx, t_idx]
            for r, role in enumerate(ROLES):
                of_role = target_roles == r
                s[f"{role}_nll"] += nll[of_role].sum().double()
                s[f"{role}_tokens"] += of_role.sum()
        first = answer_positions(completion_mask)[:, 1:] & starts
        s["rows"] += first.sum()
        # Answer positions are completion targets, so they are among the scored positions.
        at_answer = first[b_idx, t_idx]
        exact = exact_rows(at_answer, is_c, pred == targets)
        s["exact_correct"] += exact.sum()
        answer_ok = choice_index = None
        if choices is not None:
            gold = targets[at_answer]
            is_choice = (gold[:, None] == choices[None, :]).any(-1)
            answer_ok = pred[at_answer] == gold
            s["answer_rows"] += is_choice.sum()
            s["answer_correct"] += (answer_ok & is_choice).sum()
            s["choice_correct"] += ((choices[choice_pred[at_answer]] == gold) & is_choice).sum()
            # The predicted choice (index into the choices) where the arg-max is one, else -1.
            choice_index = torch.where(pred[at_answer][:, None] == choices[None, :])
            choice_index = torch.full_like(gold, -1).index_put_((choice_index[0],), choice_index[1])
        if row_ids is not None:
            ids = row_ids.to(device)[:, 1:][b_idx, t_idx][at_answer]
            self._outcomes.append(row_outcomes(ids, exact, answer_ok, choice_index).cpu())
            self._losses.append(row_completion_loss(at_answer, is_c, nll).cpu())

    def reduce(self, reduce_fn: Callable[[torch.Tensor], torch.Tensor], device: torch.device | str = "cpu") -> None:
        """Sum the totals across processes, e.g. ``metrics.reduce(lambda t: accelerator.reduce(t, "sum"))``.

        Every process makes the same collective calls whatever it saw: a process without batches reduces zeros
        (kept on ``device``), and the per-row outcomes are gathered whenever a process group is up.
        """
        self._init(device)
        stacked = reduce_fn(torch.stack([self.sums[k] for k in _SUMS]))
        self.sums = dict(zip(_SUMS, stacked.unbind(0), strict=True))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (self._outcomes, self._losses))
            self._outcomes = [t for part in gathered for t in part[0]]
            self._losses = [t for part in gathered for t in part[1]]

    @property
    def row_outcomes(self) -> dict[str, list]:
        """Per row seen with ``row_ids``, sorted by row id: ``id``; ``exact`` (1 when every completion target was the
        arg-max); ``correct`` (1 when the answer token was; -1 without answer choices); ``choice`` (the index of
        the predicted choice, -1 when the arg-max is none of them or there are no choices); ``completion_loss`` (the
        mean NLL over the row's completion targets, a float)."""
        if not self._outcomes:
            return {"id": [], "exact": [], "correct": [], "choice": [], "completion_loss": []}
        table = torch.cat(self._outcomes)
        order = table[:, 0].argsort()
        out = dict(
            zip(("id", "exact", "correct", "choice"), (c.tolist() for c in table[order].unbind(1)), strict=True)
        )
        out["completion_loss"] = torch.cat(self._losses)[order].tolist()
        return out

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
        den = s["weighted_targets"] if self.normalization == "tokens" else s["weight"]
        ratio("weighted_loss", s["weighted_nll"], den)
        ratio("completion_token_accuracy", s["completion_correct"], s["completion_tokens"])
        ratio("exact_match", s["exact_correct"], s["rows"])
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


def exact_rows(at_answer: torch.Tensor, is_completion: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Per row (in order of its answer position), whether every completion target is correct.

    The three arguments are aligned over the scored targets in row-major order, where each row's completion is one
    contiguous run that starts at its answer position, so a running count of answer positions names each target's row.
    """
    row_of = torch.cumsum(at_answer.long(), 0) - 1
    wrong = torch.zeros(int(at_answer.sum()), dtype=torch.long, device=at_answer.device)
    wrong.scatter_add_(0, row_of[is_completion], (~correct[is_completion]).long())
    return wrong == 0


def row_completion_loss(at_answer: torch.Tensor, is_completion: torch.Tensor, nll: torch.Tensor) -> torch.Tensor:
    """Per row (in order of its answer position, as :func:`exact_rows`), the mean NLL of its completion targets,
    float64; the arguments are aligned over the scored targets in row-major order."""
    row_of = torch.cumsum(at_answer.long(), 0) - 1
    rows = int(at_answer.sum())
    total = torch.zeros(rows, dtype=torch.float64, device=nll.device)
    count = torch.zeros(rows, dtype=torch.float64, device=nll.device)
    total.scatter_add_(0, row_of[is_completion], nll[is_completion].double())
    count.scatter_add_(0, row_of[is_completion], torch.ones_like(total[row_of[is_completion]]))
    return total / count.clamp(min=1)


def row_outcomes(
    ids: torch.Tensor, exact: torch.Tensor, answer_ok: torch.Tensor | None, choice: torch.Tensor | None
) -> torch.Tensor:
    """``[R, 4]`` long: row id, exact (0/1), answer correct (0/1, or -1 without choices), predicted choice or -1."""
    missing = torch.full_like(ids, -1)
    correct = answer_ok.long() if answer_ok is not None else missing
    return torch.stack([ids, exact.long(), correct, choice if choice is not None else missing], dim=1)
