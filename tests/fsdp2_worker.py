"""One process of the FSDP2 check in ``test_engines.py``: plw's loss and evaluation on a ``fully_shard``-ed model.

Launched as ``python -m torch.distributed.run --nproc_per_node 2 tests/fsdp2_worker.py JOB_DIR`` (gloo on CPU:
accelerate turns FSDP into plain multi-CPU there, so the Trainer cannot run it). ``JOB_DIR/job.json`` holds the tiny
model's config, the rows and which rows each process holds. Every decoder layer and the root are sharded with
torch's ``fully_shard``; each process computes its part of the weighted loss through plw's path (final hidden
states, :func:`plw.sharded_head.full_head`, :func:`plw.chunked_loss.chunked_weighted_nll_sum`) over the step
normaliser summed across processes, back-propagates, and streams the evaluation metrics of its evaluation batches
(:class:`plw.metrics.StreamingMetrics`, one all-reduce). Rank 0 writes the loss, the full gradients and the metrics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def batch(rows: list[dict], zero: bool = False) -> dict[str, torch.Tensor]:
    from plw.data.collate import PaddingCollator

    out = PaddingCollator(pad_token_id=0)(
        [{k: r[k] for k in ("input_ids", "attention_mask", "prompt_mask", "completion_mask")} for r in rows]
    )
    if zero:  # a batch that is run through the model but holds no target (a repeated row, masked)
        out["prompt_mask"] = torch.zeros_like(out["prompt_mask"])
        out["completion_mask"] = torch.zeros_like(out["completion_mask"])
    return out


def main(job_dir: Path) -> None:
    from torch.distributed.fsdp import fully_shard
    from transformers import LlamaConfig, LlamaForCausalLM

    from plw.chunked_loss import FinalHiddenCapture, chunked_weighted_nll_sum, output_head
    from plw.loss import target_weights
    from plw.metrics import StreamingMetrics
    from plw.sharded_head import full_head

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    job = json.loads((job_dir / "job.json").read_text())
    torch.manual_seed(job["seed"])
    model = LlamaForCausalLM(LlamaConfig(**job["model"])).float()
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    plw = job["plw"]

    # training: this process's micro-batch, over the normaliser of the whole step
    train = batch([job["train_rows"][i] for i in job["train_split"][rank]], zero=job["train_zero"][rank])
    weights = target_weights(train["prompt_mask"], train["completion_mask"], plw)
    step_weight = weights.sum().double()
    dist.all_reduce(step_weight)
    model.train()
    head = output_head(model)
    with FinalHiddenCapture(head) as capture:
        model(input_ids=train["input_ids"], attention_mask=train["attention_mask"], use_cache=False)
    head_kind = type(head.weight).__name__
    with full_head(head) as full:
        total, _ = chunked_weighted_nll_sum(
            capture.hidden,
            full,
            train["input_ids"],
            train["prompt_mask"],
            train["completion_mask"],
            plw,
            chunk_tokens=7,
        )
    # FSDP2 averages gradients over processes; the normaliser already covers them all, so undo the average
    loss = total / step_weight.float() * dist.get_world_size()
    loss.backward()
    step_loss = loss.detach() / dist.get_world_size()
    dist.all_reduce(step_loss)
    grads = {n: p.grad.full_tensor() for n, p in model.named_parameters()}

    # evaluation: uneven batches (one process's last batch holds no target)
    model.eval()
    metrics = StreamingMetrics(plw, job["choice_ids"], chunk_tokens=5)
    eval_kinds: list[str] = []
    with torch.no_grad():
        for rows, zero in zip(job["eval_split"][rank], job["eval_zero"][rank], strict=True):
            b = batch([job["eval_rows"][i] for i in rows], zero=zero)
            with FinalHiddenCapture(head) as capture:
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False)
            model.reshard()  # as after a resharding forward: the head's weight is a sharded DTensor again
            eval_kinds.append(type(head.weight).__name__)
            with full_head(head) as full:
                metrics.update_from_hidden(
                    capture.hidden, full, b["input_ids"], b["prompt_mask"], b["completion_mask"]
                )
    metrics.reduce(lambda t: (dist.all_reduce(t), t)[1])
    values = metrics.compute()
    if rank == 0:
        torch.save(
            {"loss": float(step_loss), "grads": grads, "eval": values, "head": [head_kind, *eval_kinds]},
            job_dir / "out.pt",
        )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
