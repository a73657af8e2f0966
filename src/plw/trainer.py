"""PLWTrainer: a ``transformers.Trainer`` whose loss weights prompt tokens by ``prompt_loss_weight``.

Thin wiring around :mod:`plw.weight_policy` (which weight each target carries at each step), :mod:`plw.loss`,
:mod:`plw.chunked_loss` and :mod:`plw.metrics`:

* ``get_batch_samples`` computes the optimizer step's normaliser, the sum of target weights over every
  micro-batch of the step, summed across processes, and hands it to ``compute_loss`` as ``num_items_in_batch``;
* ``compute_loss`` returns ``sum(w * nll) / step_weight`` (times the number of processes, since data-parallel
  backends average gradients), so the gradient does not depend on gradient accumulation or world size. By default
  (``loss_impl="chunked"``) it is computed from the final hidden states by :mod:`plw.chunked_loss`, never holding
  the ``B x N x V`` logits; ``loss_impl="plain"`` takes the model's full logits instead;
* ``evaluation_loop`` streams the split validation metrics (device-resident sums, all-reduced once) instead of
  gathering logits; ``evaluate()`` returns and logs them with the ``eval_`` prefix, so any of them can be
  ``metric_for_best_model``. ``eval_loss`` is the weighted loss (the training objective).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_utils import EvalLoopOutput
from transformers.utils import logging

from .chunked_loss import (
    DEFAULT_CHUNK_TOKENS,
    LOSS_IMPLS,
    FinalHiddenCapture,
    check_head_output,
    chunked_weighted_nll_sum,
    describe_backend,
    loss_backend,
    output_head,
)
from .config import NONFINITE_POLICIES
from .data.collate import PaddingCollator
from .data.packing import PackedCollator, PackedDataset, PackingStats, check_packing_isolation, pack_datasets
from .distributed import real_rows_of_last_batch
from .generation import GeneratedAccuracy, merge_row_tables
from .loss import weighted_nll_sum
from .metrics import StreamingMetrics
from .schedule import PLWSchedule
from .sharded_head import full_head
from .subsample import with_row_index
from .weight_policy import StepWeights, WeightPolicy

MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "position_ids")
logger = logging.get_logger(__name__)


def choice_token_ids(tokenizer: Any, choices: Sequence[str], template: str = "auto") -> list[int]:
    """Token id that starts each answer choice when it is the completion (e.g. ``"A"`` or ``" A"``).

    Found by encoding each choice as a completion with the same template as the data, so that the id is the one
    the model must produce at the answer position.
    """
    from .data.encode import encode

    ids = []
    for choice in choices:
        row = encode(tokenizer, {"prompt": "?", "completion": choice}, template=template)
        first = row["completion_mask"].index(1)
        ids.append(row["input_ids"][first])
    if len(set(ids)) != len(ids):
        raise ValueError(f"answer choices {list(choices)} do not start with distinct tokens: {ids}")
    return ids


VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3")


def _varlen_attention(model: Any) -> bool:
    """True when the model's attention has variable-length kernels (flash-attention), which want one flat row."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) in VARLEN_ATTENTION


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the optimizer step."""


class PLWTrainer(Trainer):
    """``transformers.Trainer`` with the prompt-loss-weighted loss and streamed split metrics.

    Args:
        prompt_loss_weight: weight of prompt tokens in [0, 1]; completion tokens weigh 1. The default 1.0 is the
            ordinary causal-LM loss, as with ``Trainer``. A schedule (``"1->0:linear"``, a mapping or a
            :class:`~plw.schedule.PLWSchedule`) is evaluated at every optimizer step; ``self.prompt_loss_weight``
            holds the current value and is logged as ``plw``. Rows with a ``role_weight`` column (conversations
            with role weights, :mod:`plw.roles`) weigh their prompt tokens ``plw * role_weight``.
        answer_choices: for multiple-choice data, the answer strings (``["A", "B", "C", "D"]``; needs
            ``processing_class``) or their token ids; enables ``eval_accuracy`` and ``eval_choice_accuracy``.
        template: the template the rows were encoded with (to find the choice tokens).
        loss_impl: ``"chunked"`` (default): loss and eval metrics from the final hidden states, zero-weight targets
            skipped, ``loss_chunk_tokens`` targets projected at a time (:mod:`plw.chunked_loss`); ``"plain"``: from
            the model's full ``B x N x V`` logits, for comparison and debugging.
        loss_chunk_tokens: targets per chunk on the chunked path.
        packing: pack the train and eval rows into bins of at most ``max_length`` tokens (:mod:`plw.data.packing`),
            fed without an attention mask (one flat sequence per micro-batch for flash-attention, one bin per row
            for SDPA/eager attention); the batch sizes of ``args`` then count bins,
            not rows. Refuses models that do not isolate packed rows. Datasets given as
            :class:`~plw.data.packing.PackedDataset` are used as they are.
        max_length: tokens per bin (required with ``packing``); rows must already fit (see :func:`plw.encode`).
        nonfinite: ``"stop"`` (default) raises :class:`NonFiniteLossError` naming the step when the training loss is
            NaN or infinite; ``"skip"`` drops that micro-batch's gradient and goes on (counted in ``skipped_nonfinite_batches``, which
            ``plw train`` prints and writes to ``state.json``).
        completion_loss_weight: weight of completion tokens in [0, 1] (default 1), a constant or a schedule like
            ``prompt_loss_weight``; ``self.completion_loss_weight`` holds the current value.
        loss_normalization: ``"weight"`` (default): the step's loss is ``sum(w * nll) / sum(w)``; ``"tokens"``:
            ``sum(w * nll) / count(w > 0)``, where the absolute weights matter, not only their ratio.
        prompt_sample_rate: ``q`` in (0, 1]: each training step scores a random share ``q`` of the prompt targets
            with weight ``w / q`` and skips the rest (:mod:`plw.subsample`); evaluation stays exact. Training rows
            get a ``row_index`` column (the key of the draw) unless they carry one or come already packed.
        generated_accuracy: a :class:`plw.generation.GeneratedAccuracy`: every evaluation also generates greedy
            answers from the validation prompts and reports ``eval_generated_accuracy`` (off when None).

    Rows may carry a per-token ``data_weight`` column (record and message weights, :mod:`plw.data.weights`) that
    multiplies every weight of the row, in training and in ``eval_weighted_loss``.

    Datasets are rows as :func:`plw.encode` returns them (a ``datasets.Dataset`` or a list). Stock
    ``TrainingArguments`` work: the mask columns are kept (``remove_unused_columns`` is turned off) and a padding
    collator that carries the masks is used unless ``data_collator`` is given.
    """

    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: Any = None,
        args: Any = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        *,
        prompt_loss_weight: float | str | dict | PLWSchedule = 1.0,
        answer_choices: Sequence[str] | Sequence[int] | None = None,
        template: str = "auto",
        loss_impl: str = "chunked",
        loss_chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        packing: bool = False,
        max_length: int | None = None,
        nonfinite: str = "stop",
        completion_loss_weight: float | str | dict | PLWSchedule = 1.0,
        loss_normalization: str = "weight",
        prompt_sample_rate: float = 1.0,
        generated_accuracy: GeneratedAccuracy | None = None,
        **kwargs: Any,
    ):
        self.generated_accuracy = generated_accuracy
        self.weight_policy = WeightPolicy(
            prompt_loss_weight, completion_loss_weight, loss_normalization, prompt_sample_rate
        )
        self.step_weights = self.weight_policy.start  # the weights of the current step (logged, evaluated)
        if (
            self.weight_policy.sample_rate < 1
            and train_dataset is not None
            and not isinstance(train_dataset, PackedDataset)
        ):
            train_dataset = with_row_index(train_dataset)
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {', '.join(NONFINITE_POLICIES)}, got {nonfinite!r}")
        self.nonfinite = nonfinite
        self.skipped_nonfinite_batches = 0
        if loss_impl not in LOSS_IMPLS:
            raise ValueError(f"loss_impl must be one of {', '.join(LOSS_IMPLS)}, got {loss_impl!r}")
        if isinstance(loss_chunk_tokens, bool) or not isinstance(loss_chunk_tokens, int) or loss_chunk_tokens < 1:
            raise ValueError(f"loss_chunk_tokens must be a positive integer, got {loss_chunk_tokens!r}")
        self.loss_impl = loss_impl
        self.loss_chunk_tokens = loss_chunk_tokens
        self._head_checked = False
        if args is not None and args.remove_unused_columns:
            args.remove_unused_columns = False  # the masks are not model inputs but the loss needs them
        self.packing = bool(packing)
        self.packing_stats: dict[str, PackingStats] = {}
        if self.packing:
            seed = 42 if args is None else (args.data_seed if args.data_seed is not None else args.seed)
            train_dataset, eval_dataset, self.packing_stats = pack_datasets(
                train_dataset, eval_dataset, max_length, seed=seed
            )
            for name, stats in self.packing_stats.items():
                logger.info(f"packing {name}: {stats.summary()}")
            if data_collator is not None and not isinstance(data_collator, PackedCollator):
                raise ValueError("packing=True brings its own collator (PackedCollator); do not pass data_collator")
            data_collator = PackedCollator(
                one_row_per_bin=not _varlen_attention(model),
                pad_token_id=getattr(processing_class, "pad_token_id", None) or 0,
            )
        if data_collator is None:
            pad_id = getattr(processing_class, "pad_token_id", None)
            data_collator = PaddingCollator(pad_token_id=pad_id if pad_id is not None else 0)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        if self.args.n_gpu > 1:
            raise ValueError(
                "PLWTrainer does not support torch.nn.DataParallel (several GPUs in one process); "
                "launch one process per GPU with `accelerate launch` instead"
            )
        self.args.remove_unused_columns = False
        self.choice_token_ids = self._resolve_choices(answer_choices, processing_class, template)
        # Per-row outcomes of the last evaluation (rows that carry ``row_id``), see StreamingMetrics.row_outcomes.
        self.last_row_outcomes: dict[str, list[int]] | None = None
        if self.packing:
            check_packing_isolation(self.model)

    @staticmethod
    def _resolve_choices(choices: Any, tokenizer: Any, template: str) -> list[int] | None:
        if not choices:
            return None
        if all(isinstance(c, int) for c in choices):
            return list(choices)
        if tokenizer is None:
            raise ValueError("answer_choices given as strings need processing_class=tokenizer")
        return choice_token_ids(tokenizer, choices, template)

    # ---- training ------------------------------------------------------------------------------------------------

    # The weight rules live in plw.weight_policy; these read them for the Trainer's state.
    prompt_loss_weight = property(lambda self: self.step_weights.plw, doc="The PLW of the current step.")
    completion_loss_weight = property(lambda self: self.step_weights.completion, doc="Its completion weight.")
    loss_normalization = property(lambda self: self.weight_policy.normalization)
    prompt_sample_rate = property(lambda self: self.weight_policy.sample_rate)

    def weights_at(self, step: int, epoch: float) -> StepWeights:
        """The policy's weights of optimizer step ``step`` (0-based) starting at fractional epoch ``epoch``."""
        # With max_steps set, the Trainer's epoch count (rounded up) stands in for the length of training in epochs.
        epochs = self.args.num_train_epochs if self.args.max_steps <= 0 else self.state.num_train_epochs
        return self.weight_policy.at(step, epoch, total_steps=self.state.max_steps, total_epochs=float(epochs))

    def current_weights(self) -> StepWeights:
        """The weights of the objective at this point of training: those of the next optimizer step (what
        evaluations report and ``metrics.jsonl`` records); the last ones used outside training."""
        if not self.state.max_steps:
            return self.step_weights
        return self.weights_at(self.state.global_step, float(self.state.epoch or 0.0))

    def current_plw(self) -> float:
        """The PLW of :meth:`current_weights`."""
        return self.current_weights().plw

    def prompt_weights(self, inputs: dict[str, torch.Tensor]) -> float | torch.Tensor:
        """The weight of each prompt token of a batch: the current PLW, times ``role_weight`` when the rows have it."""
        return self.step_weights.prompt_weights(inputs.get("role_weight"))

    def batch_weights(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The exact target weights ``[B, N-1]`` of a batch at the current step's weights."""
        return self.step_weights.batch_weights(inputs)

    def step_weight(self, batches: Sequence[dict[str, torch.Tensor]]) -> torch.Tensor:
        """This process's part of the step normaliser ``D`` over ``batches``."""
        return self.step_weights.step_denominator(batches)

    def training_weights(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weights the training loss uses (exact, or with the prompt subsampled; see the weight policy)."""
        return self.weight_policy.training_weights(self.step_weights, inputs, self.args.seed, self.state.global_step)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Log the current PLW as ``plw`` next to the training loss (console, TensorBoard, W&B, ...)."""
        if "loss" in logs:
            logs = {**logs, "plw": self.prompt_loss_weight}
            completion = self.weight_policy.completion
            if not (completion.is_constant and completion.start == 1.0):
                logs["completion_loss_weight"] = self.completion_loss_weight
        super().log(logs, *args, **kwargs)

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: torch.device) -> tuple[list, Any]:
        """Collect the micro-batches of one optimizer step and their summed weight across all processes."""
        batch_samples = []
        for _ in range(num_batches):
            try:
                batch_samples.append(next(epoch_iterator))
            except StopIteration:
                break
        if not batch_samples:
            return batch_samples, None
        # The weights of this optimizer step: set before the normaliser and the loss of its micro-batches use them.
        self.step_weights = self.weights_at(self.state.global_step, float(self.state.epoch or 0.0))
        total = self.step_weight(batch_samples).to(device)
        if self.args.world_size > 1:
            total = self.accelerator.reduce(total, reduction="sum")
        return batch_samples, total.float()

    def _forward(self, model: Any, inputs: dict[str, torch.Tensor]) -> Any:
        model_inputs = {k: inputs[k] for k in MODEL_INPUT_KEYS if k in inputs}
        return model(**model_inputs, use_cache=False)

    def _forward_hidden(self, model: Any, inputs: dict[str, torch.Tensor]) -> tuple[Any, torch.Tensor, Any]:
        """Forward through the (wrapped) model, capturing the final hidden states; the model projects one position.

        Returns ``(outputs, hidden [B, N, H], head)``. On the first call, checks that the model's logits are the
        head's output (no soft-capping or scaling after it), so the chunked loss equals the plain one.
        """
        head = output_head(self.accelerator.unwrap_model(model))
        with FinalHiddenCapture(head) as capture:
            outputs = self._forward(model, inputs)
        if not self._head_checked:
            self._head_checked = check_head_output(outputs.logits, capture.hidden, head, capture.head_output)
        return outputs, capture.hidden, head

    def loss_path(self) -> str:
        """One line naming the loss implementation this trainer uses on its model and device (for logs)."""
        if self.loss_impl == "plain":
            return "plain loss from the full B x N x V logits (loss_impl: plain)"
        head = output_head(self.accelerator.unwrap_model(self.model))
        weight = getattr(head, "weight", None)
        half = self.args.bf16 or self.args.fp16 or getattr(weight, "dtype", None) in (torch.bfloat16, torch.float16)
        return describe_backend(loss_backend(head, self.args.device, half_precision=half), self.loss_chunk_tokens)

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """``sum(w * nll)`` of this micro-batch over the step's normaliser ``D`` (or this batch's, outside training).

        In training, ``w`` may have its prompt subsampled (:meth:`training_weights`); ``D`` is always exact. A step
        whose ``D`` is 0 (every weight 0) has loss 0. On the chunked path ``outputs.logits`` holds only the last
        position's logits.
        """
        masks = (inputs["input_ids"], inputs["prompt_mask"], inputs["completion_mask"], self.prompt_weights(inputs))
        weights = self.training_weights(inputs) if model.training else self.batch_weights(inputs)
        if self.loss_impl == "chunked":
            outputs, hidden, head = self._forward_hidden(model, inputs)
            with full_head(head) as full:  # ZeRO-3 / FSDP2: the head's weight gathered once per micro-batch
                total, _ = chunked_weighted_nll_sum(
                    hidden,
                    full,
                    *masks,
                    inputs.get("position_ids"),
                    chunk_tokens=self.loss_chunk_tokens,
                    weights=weights,
                )
        else:
            outputs = self._forward(model, inputs)
            total, _ = weighted_nll_sum(outputs.logits, *masks, inputs.get("position_ids"), weights=weights)
        if num_items_in_batch is None:
            denom = self.step_weights.denominator(self.batch_weights(inputs)).to(total.device)
            scale = 1
        else:
            # Data-parallel backends average gradients over processes; the normaliser already covers all of
            # them, so undo the average.
            denom, scale = num_items_in_batch.to(total.device), self.accelerator.num_processes
        loss = total / torch.where(denom > 0, denom, torch.ones_like(denom)) * scale
        if model.training:
            loss = self._guard_nonfinite(loss)
        return (loss, outputs) if return_outputs else loss

    def _guard_nonfinite(self, loss: torch.Tensor) -> torch.Tensor:
        """Stop on a NaN/inf training loss, naming the step; or, with ``nonfinite="skip"``, drop the micro-batch.

        A skipped micro-batch contributes no gradient (its weight still counts in the step's normaliser).
        """
        if bool(torch.isfinite(loss.detach()).all()):
            return loss
        step = self.state.global_step + 1
        if self.nonfinite == "skip":
            self.skipped_nonfinite_batches += 1
            logger.warning(f"non-finite training loss at optimizer step {step}: micro-batch skipped")
            return torch.zeros((), device=loss.device, dtype=loss.dtype, requires_grad=True)
        raise NonFiniteLossError(
            f"non-finite training loss ({loss.detach().float().item()}) at optimizer step {step} "
            f"(epoch {self.state.epoch or 0:.3f}); the last checkpoint before it is kept. Lower the learning rate, "
            "check the data, or set nonfinite: skip"
        )

    # ---- evaluation ----------------------------------------------------------------------------------------------

    def _eval_model(self) -> Any:
        """The model as ``Trainer.evaluation_loop`` prepares it (wrapped/prepared once when called outside train)."""
        model = self._wrap_model(self.model, training=False)
        if len(self.accelerator._models) == 0 and model is self.model:
            if self.is_deepspeed_enabled or self.is_fsdp_enabled:
                model = self.accelerator.prepare(model)
            elif self.args.world_size > 1:
                # Prepare for training already: accelerate marks a model prepared in evaluation mode as prepared,
                # and a later train() would then skip the DistributedDataParallel wrapper and never all-reduce
                # the gradients (evaluate() before train(), transformers 5.24 + accelerate 1.15). Evaluate on the
                # bare module (autocast applies to it too), so no buffers are broadcast per batch.
                self.model_wrapped = self.accelerator.prepare_model(model)
                return self.model
            else:
                model = self.accelerator.prepare_model(model, evaluation_mode=True)
            if self.is_fsdp_enabled:
                self.model = model
            if model is not self.model:
                self.model_wrapped = model
        return model

    def _drop_repeated_rows(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Zero the segment masks of the rows accelerate repeated to even out the last batch across processes.

        Such rows are run through the model like the others (every process must take part in each forward) but
        add nothing to the metric sums, which are all-reduced, so no row counts twice.
        """
        state = self.accelerator.gradient_state
        if self.args.world_size <= 1 or not self.accelerator.even_batches or not state.end_of_dataloader:
            return inputs
        bins = inputs.get("bin_index")  # a packed batch: which dataset item (bin) each token belongs to
        items = len(inputs["input_ids"]) if bins is None else int(bins.max()) + 1
        keep = real_rows_of_last_batch(items, self.accelerator.process_index, state.remainder)
        if bool(keep.all()):
            return inputs
        keep = keep.to(inputs["prompt_mask"].device)
        keep = keep[:, None] if bins is None else keep[bins]
        return {
            **inputs,
            "prompt_mask": inputs["prompt_mask"] * keep,
            "completion_mask": inputs["completion_mask"] * keep,
        }

    def new_eval_metrics(self) -> StreamingMetrics:
        """The accumulator of one evaluation, at the current PLW and completion weight (a hook: ``plw eval`` scores
        several weights from one forward pass)."""
        return StreamingMetrics(choice_token_ids=self.choice_token_ids, weights=self.current_weights())

    def evaluation_loop(
        self,
        dataloader: Any,
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        """Stream the split metrics over ``dataloader``; no logits, predictions or per-token arrays are kept."""
        # Iterating a DataLoader draws its base seed from torch's global CPU RNG: restored at the end, so training
        # (e.g. its dropout) draws the same numbers whether or not, and however often, it was evaluated.
        rng = torch.random.get_rng_state()
        model = self._eval_model()
        model.eval()
        self.callback_handler.eval_dataloader = dataloader
        metrics = self.new_eval_metrics()
        for inputs in dataloader:
            inputs = self._drop_repeated_rows(self._prepare_inputs(inputs))
            batch = (inputs["input_ids"], inputs["prompt_mask"], inputs["completion_mask"], inputs.get("position_ids"))
            roles = {k: inputs.get(k) for k in ("role_ids", "role_weight", "data_weight")}
            roles["row_ids"] = inputs.get("row_id")
            with torch.no_grad(), self.compute_loss_context_manager():
                if self.loss_impl == "chunked":
                    # Projected chunk by chunk under the same autocast as the forward, as the plain logits are.
                    outputs, hidden, head = self._forward_hidden(model, inputs)
                    with full_head(head) as full:  # gathered once per batch on every process, not per chunk
                        metrics.update_from_hidden(hidden, full, *batch, **roles)
                    del hidden
                else:
                    outputs = self._forward(model, inputs)
            if self.loss_impl == "plain":
                metrics.update(outputs.logits, *batch, **roles)
            del outputs
            self.control = self.callback_handler.on_prediction_step(self.args, self.state, self.control)
        metrics.reduce(lambda t: self.accelerator.reduce(t, reduction="sum"), device=self.args.device)
        values = metrics.compute()
        self.last_row_outcomes = metrics.row_outcomes
        if self.generated_accuracy is not None:  # greedy answers from each row's prompt (plw.generation)
            with torch.no_grad(), self.compute_loss_context_manager():
                unwrapped = self.accelerator.unwrap_model(model)
                acc = self.accelerator
                values.update(self.generated_accuracy.evaluate(unwrapped, acc.process_index, acc.num_processes))
            self.last_row_outcomes = merge_row_tables(self.last_row_outcomes, self.generated_accuracy.last)
        torch.random.set_rng_state(rng)
        out = {f"{metric_key_prefix}_{k}": v for k, v in values.items()}
        if "weighted_loss" in values:
            out[f"{metric_key_prefix}_loss"] = values["weighted_loss"]
        num_samples = int(values.get("rows", 0))
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=out, num_samples=num_samples)
