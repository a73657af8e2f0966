"""Prompt subsampling: training throughput at PLW 0.1 with q in {1, 0.25, 0.1} against PLW 0, and how close the
subsampled gradient is to the exact one.

One process, one model, one batch; every configuration is a full training micro-step as ``PLWTrainer`` runs it on
the chunked path (forward with the final hidden states captured, target weights, prompt targets drawn by
:func:`plw.subsample.subsample_prompt`, chunked loss over the kept targets only, backward). Timings are interleaved
(each repetition runs every configuration once, in turn) so that drifting load on a shared machine hits all alike;
the median is reported as tokens/s (real tokens of the batch per second) and as a ratio to q = 1, both per
wall-clock second and per CPU second of this process (``time.process_time``, all its threads): on a shared machine
the wall clock mostly measures the other jobs, the process's CPU time much less so.

The gradient part takes the exact gradient at PLW 0.1 and the gradients of ``--draws`` subsampled estimates (draws
for optimizer steps 0, 1, ...; the same exact denominator), and prints the cosine of each draw's gradient to the
exact one (mean and minimum) and the cosine of their average (which tends to 1 as draws accumulate: the estimate
is unbiased).

Model: the built-in SmolLM2-135M-Instruct (real weights, full fine-tuning, bf16 autocast where the CPU has bf16, as
``bf16: auto`` does). Data: RACE train rows from ``../shared/data/race/train.jsonl`` when present (prompts of about
500 tokens, 3 completion tokens), else the synthetic reading task.

    python benchmarks/prompt_subsampling.py                       # batch of 2 rows, 3 repetitions, 6 draws
    python benchmarks/prompt_subsampling.py --rows 4 --reps 5 --draws 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

RACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "race" / "train.jsonl"
PLW = 0.1
CONFIGS = [
    ("PLW 0.1, q=1", PLW, 1.0),
    ("PLW 0.1, q=0.25", PLW, 0.25),
    ("PLW 0.1, q=0.1", PLW, 0.1),
    ("PLW 0", 0.0, 1.0),
]


def load_batch(tokenizer, rows: int, max_length: int) -> tuple[dict, str]:
    from plw.data.collate import PaddingCollator
    from plw.data.encode import encode_records
    from plw.subsample import with_row_index

    if RACE.exists():
        from plw.data.sources import load_records

        records = load_records({"source": "race", "path": str(RACE)}).records[: 4 * rows]
        what = "RACE train rows"
    else:
        from plw.data.synthetic import make_synthetic_mcqa

        records = make_synthetic_mcqa(rows, seed=0)
        what = "synthetic reading-task rows"
    encoded, _ = encode_records(tokenizer, records, max_length)
    batch = PaddingCollator(pad_token_id=tokenizer.pad_token_id or 0)(with_row_index(encoded[:rows]))
    return batch, what


def step_loss(model, head, batch: dict, plw_value: float, rate: float, draw: int, denom: torch.Tensor):
    """The loss of one micro-step as PLWTrainer computes it (chunked path), before ``backward``."""
    from plw.chunked_loss import FinalHiddenCapture, chunked_weighted_nll_sum
    from plw.loss import target_weights
    from plw.subsample import subsample_prompt, token_positions

    with FinalHiddenCapture(head) as cap:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    w = target_weights(batch["prompt_mask"], batch["completion_mask"], plw_value)
    positions = token_positions(batch["input_ids"], None)
    w = subsample_prompt(w, batch["prompt_mask"], batch["row_index"], positions, rate, seed=42, step=draw)
    masks = (batch["input_ids"], batch["prompt_mask"], batch["completion_mask"], plw_value)
    total, _ = chunked_weighted_nll_sum(cap.hidden, head, *masks, weights=w)
    return total / denom


def gradient(model, head, batch, plw_value, rate, draw, denom, autocast) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    with autocast():
        loss = step_loss(model, head, batch, plw_value, rate, draw, denom)
    loss.backward()
    return torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2, help="rows in the batch")
    parser.add_argument("--max-length", type=int, default=768)
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions of every configuration")
    parser.add_argument("--draws", type=int, default=6, help="subsampled gradients per q for the cosine")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import plw
    from plw.chunked_loss import output_head
    from plw.loss import target_weights
    from plw.runner import cpu_supports_bf16

    tokenizer = plw.load_tokenizer("smollm2-135m-instruct")
    model = plw.load_model("smollm2-135m-instruct").float()
    model.train()
    head = output_head(model)
    bf16 = cpu_supports_bf16()

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    batch, what = load_batch(tokenizer, args.rows, args.max_length)
    tokens = int(batch["attention_mask"].sum())
    prompt_targets = int(batch["prompt_mask"][:, 1:].sum())
    print(
        f"SmolLM2-135M-Instruct, full fine-tuning, {'bf16 autocast' if bf16 else 'fp32'}, {torch.get_num_threads()} "
        f"threads; batch: {args.rows} {what}, {tokens} tokens ({prompt_targets} prompt targets)"
    )

    def denom_of(plw_value: float) -> torch.Tensor:
        return target_weights(batch["prompt_mask"], batch["completion_mask"], plw_value).sum()

    gradient(model, head, batch, PLW, 1.0, 0, denom_of(PLW), autocast)  # warm-up
    times: dict[str, list[float]] = {name: [] for name, _, _ in CONFIGS}
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in CONFIGS}
    for rep in range(args.reps):
        for name, plw_value, rate in CONFIGS:
            start, start_cpu = time.perf_counter(), time.process_time()
            gradient(model, head, batch, plw_value, rate, rep, denom_of(plw_value), autocast)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    base = statistics.median(times[CONFIGS[0][0]])
    base_cpu = statistics.median(cpu[CONFIGS[0][0]])
    print(
        f"\n{'configuration':<18} {'s/step':>8} {'tokens/s':>9} {'vs q=1':>7} {'CPU s/step':>11} "
        f"{'tokens/CPU-s':>13} {'vs q=1':>7} {'LM-head targets':>16}"
    )
    results = {}
    for name, plw_value, rate in CONFIGS:
        t, c = statistics.median(times[name]), statistics.median(cpu[name])
        scored = prompt_targets * rate if plw_value > 0 else 0
        scored += int(batch["completion_mask"][:, 1:].sum())
        results[name] = {
            "s_per_step": t,
            "tokens_per_s": tokens / t,
            "speedup": base / t,
            "cpu_s_per_step": c,
            "tokens_per_cpu_s": tokens / c,
            "cpu_speedup": base_cpu / c,
        }
        print(
            f"{name:<18} {t:8.2f} {tokens / t:9.0f} {base / t:6.2f}x {c:11.2f} {tokens / c:13.0f} "
            f"{base_cpu / c:6.2f}x {scored:16.0f}"
        )

    exact = gradient(model, head, batch, PLW, 1.0, 0, denom_of(PLW), autocast)
    print(f"\ncosine of the subsampled gradient to the exact one at PLW {PLW} ({args.draws} draws per q)")
    print(f"{'q':>6} {'mean':>8} {'min':>8} {'of the average':>15}")
    for rate in (0.25, 0.1):
        grads = [gradient(model, head, batch, PLW, rate, d, denom_of(PLW), autocast) for d in range(args.draws)]
        cos = [float(torch.nn.functional.cosine_similarity(g, exact, dim=0)) for g in grads]
        avg = float(torch.nn.functional.cosine_similarity(torch.stack(grads).mean(0), exact, dim=0))
        results[f"cosine q={rate}"] = {"mean": statistics.mean(cos), "min": min(cos), "of_average": avg}
        print(f"{rate:>6} {statistics.mean(cos):8.4f} {min(cos):8.4f} {avg:15.4f}")
    print("\n" + json.dumps(results))


if __name__ == "__main__":
    main()
