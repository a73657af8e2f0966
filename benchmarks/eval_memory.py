"""Peak host memory of one evaluation pass: plw's streamed metrics vs gathering per-token arrays to the host.

The "gather" approach is the seed article's: a stock ``transformers.Trainer`` whose
``preprocess_logits_for_metrics`` turns each batch's logits into per-token losses and arg-max predictions, which
the Trainer concatenates on the host for the whole validation set (with the labels) before ``compute_metrics``
splits them into prompt and completion losses. plw keeps a dozen device-resident sums instead.

Each (approach, rows) pair runs in a fresh subprocess; a sampling thread records the peak RSS above the RSS just
before ``evaluate()``. Tiny random LLaMA (hidden 64, vocabulary 8,192), rows of 512 tokens, batch 8, CPU.

    python benchmarks/eval_memory.py            # 200 vs 2,000 rows
    python benchmarks/eval_memory.py --rows 200 2000 6000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

SEQ, VOCAB, PROMPT = 512, 8192, 480


def _rows(n: int) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (n, SEQ), generator=g).tolist()
    pm = [1] * PROMPT + [0] * (SEQ - PROMPT)
    cm = [0] * PROMPT + [1] * (SEQ - PROMPT)
    return [{"input_ids": r, "attention_mask": [1] * SEQ, "prompt_mask": pm, "completion_mask": cm} for r in ids]


def _model():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=SEQ,
        use_cache=False,
    )
    return LlamaForCausalLM(cfg)


def _gather_trainer(model, rows, args):
    """The seed article's way: per-token losses and predictions for the whole set, gathered on the host."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import Trainer

    def collate(batch):
        out = {k: torch.tensor([r[k] for r in batch]) for k in ("input_ids", "attention_mask")}
        out["labels"] = out["input_ids"].clone()
        # The masks travel inside the labels' shape here, as extra rows would: keep them as a second label array.
        out["prompt_mask"] = torch.tensor([r["prompt_mask"] for r in batch])
        return out

    class GatherTrainer(Trainer):
        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            mask = inputs.pop("prompt_mask")
            with torch.no_grad():
                logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
            shift = logits[:, :-1].float()
            labels = inputs["labels"][:, 1:]
            losses = F.cross_entropy(shift.transpose(1, 2), labels, reduction="none")
            preds = shift.argmax(-1)
            return None, torch.stack([losses, preds.float()], -1), torch.stack([labels, mask[:, 1:]], -1)

    def compute_metrics(p):
        losses, preds = p.predictions[..., 0], p.predictions[..., 1]
        labels, prompt = p.label_ids[..., 0], p.label_ids[..., 1].astype(bool)
        return {
            "prompt_loss": float(losses[prompt].mean()),
            "completion_loss": float(losses[~prompt].mean()),
            "completion_token_accuracy": float((preds[~prompt] == labels[~prompt]).mean()),
            "n": int(np.prod(labels.shape)),
        }

    return GatherTrainer(
        model=model, args=args, eval_dataset=rows, data_collator=collate, compute_metrics=compute_metrics
    )


def child(approach: str, n: int) -> None:
    import psutil
    import torch
    from transformers import TrainingArguments

    import plw

    torch.set_num_threads(2)
    rows = _rows(n)
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="plw-eval-memory-"),
        per_device_eval_batch_size=8,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    model = _model()
    if approach == "plw":
        trainer = plw.PLWTrainer(model=model, args=args, eval_dataset=rows, prompt_loss_weight=0.1)
    else:
        trainer = _gather_trainer(model, rows, args)
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    metrics = trainer.evaluate()
    elapsed = time.perf_counter() - start
    done.set()
    thread.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    loss = metrics.get("eval_completion_loss")
    print(
        json.dumps(
            {
                "approach": approach,
                "rows": n,
                "peak_mib": (peak[0] - base) / 2**20,
                "seconds": elapsed,
                "completion_loss": loss,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--child", nargs=2, metavar=("APPROACH", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    results = {}
    for n in args.rows:
        for approach in ("plw", "gather"):
            # One malloc arena: freed batch buffers are reused instead of parked in per-thread arenas, so the
            # peak reflects what is live rather than allocator history.
            env = {**os.environ, "MALLOC_ARENA_MAX": "1"}
            out = subprocess.run(
                [sys.executable, __file__, "--child", approach, str(n)],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            results[(approach, n)] = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"Evaluation peak host memory above the pre-evaluation RSS (tiny LLaMA, V={VOCAB}, {SEQ} tokens/row, "
        "batch 8, CPU)"
    )
    print(
        f"{'rows':>7} | {'plw streamed':>14} | {'gather to host':>15} | {'gather / plw':>12} | completion loss "
        "(plw, gather)"
    )
    for n in args.rows:
        p, g = results[("plw", n)], results[("gather", n)]
        print(
            f"{n:>7} | {p['peak_mib']:>10.1f} MiB | {g['peak_mib']:>11.1f} MiB | {g['peak_mib'] / p['peak_mib']:>11.1f}x"
            f" | {p['completion_loss']:.5f}, {g['completion_loss']:.5f}"
        )
    first, last = args.rows[0], args.rows[-1]
    for approach in ("plw", "gather"):
        grow = results[(approach, last)]["peak_mib"] - results[(approach, first)]["peak_mib"]
        print(f"{approach}: peak grows by {grow:+.1f} MiB from {first} to {last} rows")


if __name__ == "__main__":
    main()
