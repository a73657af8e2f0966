"""One process of the data-parallel check in ``test_distributed.py``; also imported there for the 1-process run.

Launched as ``accelerate launch --multi_gpu --num_processes 2 tests/dist_worker.py JOB_DIR`` (on a machine without
GPUs accelerate starts the processes on the CPU and the Trainer joins them with gloo). ``JOB_DIR/job.json`` holds
the encoded rows, the tiny model's config and the training settings. Every process builds the same model from the
seed, evaluates it, then takes one plain SGD step (no momentum, no clipping, constant learning rate, so the update
is exactly ``-lr * gradient``) and writes ``JOB_DIR/rank{R}.json``; the main process also saves the averaged
gradients and the updated parameters.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback, TrainingArguments

from plw.data.collate import PaddingCollator


def build_model(model_config: dict[str, Any], seed: int) -> LlamaForCausalLM:
    """The tiny model, initialised from ``seed`` so that every process (and the test) starts from the same weights."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**model_config)).float()


def param_checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().abs().sum() for p in model.parameters()))


class RecordingCollator(PaddingCollator):
    """Pads like ``PaddingCollator`` and records the ``source_row`` of every row it batches (which rank saw what)."""

    def __init__(self, pad_token_id: int):
        super().__init__(pad_token_id=pad_token_id)
        self.seen: list[list[int]] = []

    def __call__(self, rows):
        self.seen.append([int(r["source_row"]) for r in rows])
        return super().__call__(rows)


class GradientCapture(TrainerCallback):
    """Keeps a copy of every gradient right before the optimizer step (after the data-parallel all-reduce)."""

    def __init__(self):
        self.grads: dict[str, torch.Tensor] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        # FSDP2 shards gradients as DTensors: full_tensor() gathers them (a collective: every rank runs this hook)
        self.grads = {n: _full(p.grad).detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def run(job: dict[str, Any], out_dir: Path, per_device_batch: int) -> dict[str, Any]:
    """Evaluate, then take one optimizer step; return this process's report (and save tensors on the main one)."""
    from plw.trainer import PLWTrainer

    model = build_model(job["model"], job["seed"])
    init_checksum = param_checksum(model)
    collator = RecordingCollator(job["pad_token_id"])
    capture = GradientCapture()
    args = TrainingArguments(
        output_dir=str(out_dir / "trainer"),
        use_cpu=job.get("use_cpu", True),
        per_device_train_batch_size=per_device_batch,
        per_device_eval_batch_size=job["eval_batch_size"],
        gradient_accumulation_steps=1,
        max_steps=1,
        learning_rate=job["learning_rate"],
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        train_sampling_strategy="sequential",
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=job["seed"],
        dataloader_num_workers=0,
    )
    trainer = PLWTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=job["train_rows"],
        eval_dataset=job["eval_rows"],
        prompt_loss_weight=job["plw"],
        answer_choices=job["choice_ids"],
        callbacks=[capture],
        **job.get("trainer_kwargs", {}),  # completion weight, loss normalisation, ...
    )
    metrics = trainer.evaluate()
    eval_seen, collator.seen = collator.seen, []
    trainer.train()
    train_seen, collator.seen = collator.seen, []
    metrics_after = trainer.evaluate()  # after one SGD step at lr 1: compares the update on any backend
    rank = trainer.args.process_index
    report = {
        "rank": rank,
        "world_size": trainer.args.world_size,
        "distributed_type": str(getattr(trainer.accelerator.distributed_type, "value", "")),
        "init_checksum": init_checksum,
        "grad_checksum": float(sum(g.double().abs().sum() for g in capture.grads.values())),
        "eval": metrics,
        "eval_after": metrics_after,
        "eval_rows_seen": eval_seen,
        "train_rows_seen": train_seen,
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report))
    params = {n: _full(p).detach().clone() for n, p in trainer.model.named_parameters()}  # every rank (FSDP)
    if trainer.is_world_process_zero():
        torch.save({"grads": capture.grads, "params": params}, out_dir / "tensors.pt")
    return report


def main(job_dir: str) -> int:
    out_dir = Path(job_dir)
    job = json.loads((out_dir / "job.json").read_text())
    run(job, out_dir, job["per_device_batch"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
