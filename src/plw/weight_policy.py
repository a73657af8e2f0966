"""The weight policy: which weight every target carries at a point of training, and what the loss divides by.

One place for the rules that :class:`~plw.trainer.PLWTrainer`, the streamed evaluation (:mod:`plw.metrics`) and
:func:`make_compute_loss_func` share, so none of them re-derives them:

* :class:`WeightPolicy`: the prompt and completion weight schedules, the loss normalisation and the prompt
  subsampling rate of a run; :meth:`WeightPolicy.at` gives the weights of one optimizer step;
* :class:`StepWeights`: the weights in force for one step or evaluation: ``plw`` (times a row's ``role_weight`` on
  prompt tokens), the completion weight, the rows' ``data_weight``, and the normaliser ``D``
  (:func:`plw.loss.denominator`);
* :meth:`WeightPolicy.training_weights`: the exact weights, or with the prompt subsampled by the draw keyed on
  (seed, step, row, position) (:mod:`plw.subsample`).

Engines and processes are not its business: the trainer sums the normaliser across processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .loss import IGNORE_INDEX, check_normalization, check_plw, denominator, prompt_weights, target_weights
from .loss import weighted_nll_sum as _weighted_nll_sum
from .schedule import PLWSchedule, parse_plw
from .subsample import check_sample_rate, subsample_prompt, token_positions

Batch = Mapping[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class StepWeights:
    """The weights in force for one optimizer step or one evaluation."""

    plw: float = 1.0
    completion: float = 1.0
    normalization: str = "weight"

    def prompt_weights(self, role_weight: torch.Tensor | None = None) -> float | torch.Tensor:
        """The weight of each prompt token: ``plw``, times ``role_weight`` for rows that carry role weights."""
        return prompt_weights(self.plw, role_weight)

    def target_weights(
        self,
        prompt_mask: torch.Tensor,
        completion_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        role_weight: torch.Tensor | None = None,
        data_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The exact weights ``[B, N-1]`` of the targets of a batch given as tensors."""
        return target_weights(
            prompt_mask,
            completion_mask,
            self.prompt_weights(role_weight),
            position_ids,
            completion_weight=self.completion,
            data_weight=data_weight,
        )

    def batch_weights(self, inputs: Batch) -> torch.Tensor:
        """The exact weights ``[B, N-1]`` of a collated batch (its optional columns included)."""
        return self.target_weights(
            inputs["prompt_mask"],
            inputs["completion_mask"],
            inputs.get("position_ids"),
            inputs.get("role_weight"),
            inputs.get("data_weight"),
        )

    def denominator(self, weights: torch.Tensor) -> torch.Tensor:
        """What ``weights`` add to the normaliser ``D``: their sum, or (``tokens``) how many are > 0."""
        return denominator(weights, self.normalization)

    def step_denominator(self, batches: Sequence[Batch]) -> torch.Tensor:
        """This process's part of ``D`` over the micro-batches of one step (float64 on the CPU)."""
        total = torch.zeros((), dtype=torch.float64)
        for b in batches:
            total += self.denominator(self.batch_weights(b)).double().cpu()
        return total


class WeightPolicy:
    """The weight rules of a run: schedules, normalisation and prompt subsampling (see the module doc).

    Args:
        prompt_loss_weight: a number in [0, 1] or a schedule (:func:`plw.schedule.parse_plw`).
        completion_loss_weight: likewise, for completion tokens (default 1).
        normalization: ``"weight"`` (``D = sum(w)``) or ``"tokens"`` (``D = count(w > 0)``).
        prompt_sample_rate: ``q`` in (0, 1]; below 1 training keeps a share ``q`` of prompt targets at ``w / q``.
    """

    def __init__(
        self,
        prompt_loss_weight: float | str | dict | PLWSchedule = 1.0,
        completion_loss_weight: float | str | dict | PLWSchedule = 1.0,
        normalization: str = "weight",
        prompt_sample_rate: float = 1.0,
    ):
        self.prompt = parse_plw(prompt_loss_weight)  # a ScheduleError (ValueError) names what is wrong
        self.completion = parse_plw(completion_loss_weight, "completion_loss_weight")
        self.normalization = check_normalization(normalization)
        self.sample_rate = check_sample_rate(prompt_sample_rate)

    @property
    def start(self) -> StepWeights:
        """The weights before the first step (every schedule starts at its start value)."""
        return StepWeights(self.prompt.start, self.completion.start, self.normalization)

    def at(self, step: int, epoch: float, total_steps: int, total_epochs: float) -> StepWeights:
        """The weights of optimizer step ``step`` (0-based), which starts at fractional epoch ``epoch``."""

        def value(schedule: PLWSchedule) -> float:
            if schedule.is_constant:
                return schedule.start
            return schedule.value(step, epoch, total_steps=total_steps, total_epochs=total_epochs)

        return StepWeights(value(self.prompt), value(self.completion), self.normalization)

    def training_weights(self, weights: StepWeights, inputs: Batch, seed: int, step: int) -> torch.Tensor:
        """The weights the training loss uses at ``step``: exact, or with the prompt subsampled (rate < 1) by the
        draw keyed on (``seed``, ``step``, the row's ``row_index``, the position in the row)."""
        exact = weights.batch_weights(inputs)
        if self.sample_rate >= 1:
            return exact
        if "row_index" not in inputs:
            raise ValueError(
                "prompt_sample_rate < 1 needs a row_index column in the training rows (plw.subsample.with_row_index, "
                "applied before packing)"
            )
        positions = token_positions(inputs["input_ids"], inputs.get("position_ids"))
        return subsample_prompt(
            exact, inputs["prompt_mask"], inputs["row_index"], positions, self.sample_rate, seed, step
        )


# ---- for users of the stock transformers.Trainer / TRL ------------------------------------------------------------


def make_compute_loss_func(prompt_loss_weight: float):
    """A ``compute_loss_func`` for ``transformers.Trainer`` (or TRL) that applies the prompt-loss-weight.

    The collator must put :func:`plw.loss.signed_labels` in ``labels`` (prompt targets stored as ``-id-101``).
    Within a micro-batch the loss is the exact weighted mean. Across micro-batches of one step the stock Trainer
    only knows the count of labels, so micro-batches are combined in proportion to their target counts: exact with
    one micro-batch per step, an approximation with gradient accumulation. ``PLWTrainer`` normalises by the step's
    sum of weights instead and is exact everywhere.
    """
    weights = StepWeights(check_plw(prompt_loss_weight))

    def compute_loss_func(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        completion_mask = labels >= 0
        prompt_mask = labels < IGNORE_INDEX
        input_ids = torch.where(prompt_mask, -labels - 101, labels.clamp(min=0))
        w = weights.target_weights(prompt_mask, completion_mask)
        total, weight = _weighted_nll_sum(logits, input_ids, prompt_mask, completion_mask, weights.plw, weights=w)
        mean = total / weight.clamp(min=1e-12)
        if num_items_in_batch is None:
            return mean
        count = (labels[:, 1:] != IGNORE_INDEX).sum().to(mean.device)
        return mean * count / torch.as_tensor(num_items_in_batch, device=mean.device, dtype=mean.dtype)

    return compute_loss_func
