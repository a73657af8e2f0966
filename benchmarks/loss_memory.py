"""Peak memory and time: the plain loss (full logits) vs plw's chunked loss, side by side, on the CPU.

Two parts, every configuration in a fresh subprocess (so each peak is its own), repetitions interleaved
(plain, chunked, plain, chunked, ...) because the machine is shared and timings drift; medians are reported.

1. The loss alone, forward + backward: final hidden states ``[1, N, H]`` and an untied output projection
   ``[V, H]`` (both trained), ``N=4096, V=49152, H=576`` (SmolLM2-135M's sizes), fp32. The batch is RACE-shaped:
   packed rows of 512 tokens whose last 3 tokens are the completion. "plain" is ``lm_head`` on every position then
   :func:`plw.loss.weighted_nll_sum` (what ``loss_impl: plain`` runs); "chunked" is
   :func:`plw.chunked_loss.chunked_weighted_nll_sum`. Peak memory is the high-water mark of the process
   (``ru_maxrss``) minus its resident size just before the loss: the extra memory the loss needs, including the
   weight gradient (113 MB) both paths produce.
2. A full SmolLM2-135M-Instruct training step (forward, backward, AdamW step; full fine-tuning, bf16 autocast as
   ``bf16: auto`` gives on this CPU) through ``PLWTrainer.training_step``, on a batch of RACE train rows
   (``../shared/data/race/train.jsonl``) with ``loss_impl`` plain vs chunked. Peak memory is the process's whole
   high-water mark (model, optimizer states, activations).

    python benchmarks/loss_memory.py                 # both parts, 3 repetitions each
    python benchmarks/loss_memory.py --part loss --reps 5 --chunk 512
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

N, V, H = 4096, 49152, 576
ROW, COMPLETION = 512, 3
RACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "race" / "train.jsonl"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


# ---- part 1: the loss alone ----------------------------------------------------------------------------------------


def loss_child(impl: str, plw_value: float, chunk: int, steps: int) -> dict:
    import torch
    from torch import nn

    from plw.chunked_loss import chunked_weighted_nll_sum
    from plw.loss import weighted_nll_sum

    torch.manual_seed(0)
    hidden = torch.randn(1, N, H).requires_grad_()
    head = nn.Linear(H, V, bias=False)
    nn.init.normal_(head.weight, std=0.02)
    input_ids = torch.randint(0, V, (1, N))
    position_ids = (torch.arange(N) % ROW)[None]
    completion = (position_ids >= ROW - COMPLETION).long()
    prompt = 1 - completion
    base = rss_mb()
    times = []
    for _ in range(steps):
        hidden.grad = head.weight.grad = None
        start = time.perf_counter()
        if impl == "plain":
            total, _ = weighted_nll_sum(head(hidden), input_ids, prompt, completion, plw_value, position_ids)
        else:
            total, _ = chunked_weighted_nll_sum(
                hidden, head, input_ids, prompt, completion, plw_value, position_ids, chunk_tokens=chunk
            )
        total.backward()
        times.append(time.perf_counter() - start)
        del total
    return {"peak_mb": peak_mb() - base, "time_s": statistics.median(times[1:] or times)}


# ---- part 2: a full training step --------------------------------------------------------------------------------


def race_records(n: int) -> list[dict]:
    """The first ``n`` RACE train rows as prompt/completion records (plw's RACE template when available)."""
    try:
        from plw.data.race import format_prompt
    except ImportError:  # a simple stand-in: passage, question, lettered options

        def format_prompt(article, question, options):
            lettered = "\n".join(f"{'ABCD'[i]}. {o}" for i, o in enumerate(options))
            return f"{article}\n\nQuestion: {question}\n\n{lettered}\n\nAnswer with A, B, C or D."

    out = []
    with open(RACE, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            out.append(
                {"prompt": format_prompt(row["article"], row["question"], row["options"]), "completion": row["answer"]}
            )
            if len(out) == n:
                break
    return out


def step_child(impl: str, plw_value: float, rows: int, max_length: int, steps: int) -> dict:
    import tempfile

    import torch
    from transformers import TrainingArguments

    import plw
    from plw.data.encode import encode_records
    from plw.runner import cpu_supports_bf16

    tokenizer = plw.load_tokenizer("smollm2-135m-instruct")
    encoded, _ = encode_records(tokenizer, race_records(rows * 3), max_length, "drop")
    batch_rows = encoded[:rows]
    model = plw.load_model("smollm2-135m-instruct")
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        use_cpu=True,
        bf16=cpu_supports_bf16(),
        report_to=[],
        learning_rate=1e-5,
        disable_tqdm=True,
    )
    trainer = plw.PLWTrainer(
        model=model, args=args, processing_class=tokenizer, prompt_loss_weight=plw_value, loss_impl=impl
    )
    batch = trainer.data_collator(batch_rows)
    normaliser = trainer.step_weight([batch]).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.training_step(model, dict(batch), normaliser)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    tokens = int(batch["attention_mask"].sum())
    return {
        "peak_mb": peak_mb(),
        "time_s": statistics.median(times[1:] or times),  # the first step also allocates AdamW's states
        "tokens": tokens,
        "shape": list(batch["input_ids"].shape),
        "path": trainer.loss_path(),
    }


# ---- the driver --------------------------------------------------------------------------------------------------


def run_child(spec: dict, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, __file__, "--child", json.dumps(spec), "--threads", str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def interleaved(specs: list[dict], reps: int, threads: int) -> list[list[dict]]:
    results: list[list[dict]] = [[] for _ in specs]
    for rep in range(reps):
        for i, spec in enumerate(specs):
            results[i].append(run_child(spec, threads))
            r = results[i][-1]
            print(f"  rep {rep + 1}/{reps} {spec}: {r['time_s']:.2f} s, {r['peak_mb']:.0f} MB", file=sys.stderr)
    return results


def med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def part_loss(args: argparse.Namespace) -> None:
    specs = [
        {"part": "loss", "impl": impl, "plw": p, "chunk": args.chunk, "steps": args.loss_steps}
        for p in (1.0, 0.0)
        for impl in ("plain", "chunked")
    ]
    res = interleaved(specs, args.reps, args.threads)
    print(f"\n## Loss forward+backward alone: N={N}, V={V}, H={H}, fp32, {args.threads} threads, chunk {args.chunk}")
    print(f"(median of {args.reps} fresh processes; peak = extra resident memory during the loss)\n")
    print("| plw | plain time | chunked time | time ratio | plain peak | chunked peak | peak ratio |")
    print("|---|---|---|---|---|---|---|")
    for i in range(0, len(specs), 2):
        plain, chunked = res[i], res[i + 1]
        tp, tc, mp, mc = med(plain, "time_s"), med(chunked, "time_s"), med(plain, "peak_mb"), med(chunked, "peak_mb")
        ratios = statistics.median(c["time_s"] / p["time_s"] for p, c in zip(plain, chunked, strict=True))
        print(
            f"| {specs[i]['plw']:g} | {tp:.2f} s | {tc:.3f} s | {ratios:.2f}x | {mp:,.0f} MB | {mc:,.0f} MB | "
            f"1/{mp / max(mc, 1e-9):.1f} |"
        )


def part_step(args: argparse.Namespace) -> None:
    if not RACE.exists():
        print(f"\n(full training step skipped: {RACE} not present)")
        return
    specs = [
        {"part": "step", "impl": impl, "plw": p, "rows": args.rows, "max_length": args.max_length, "steps": args.steps}
        for p in (1.0, 0.0)
        for impl in ("plain", "chunked")
    ]
    res = interleaved(specs, args.reps, args.threads)
    first = res[0][0]
    print(
        f"\n## Full training step: SmolLM2-135M-Instruct, full fine-tuning, AdamW, bf16 autocast, {args.threads} "
        f"threads; batch {first['shape']} of RACE train rows ({first['tokens']} real tokens)"
    )
    print(f"(median of {args.reps} fresh processes x {args.steps - 1} timed steps; peak = whole-process RSS)\n")
    print("| plw | plain s/step | chunked s/step | speed-up | plain peak | chunked peak |")
    print("|---|---|---|---|---|---|")
    for i in range(0, len(specs), 2):
        plain, chunked = res[i], res[i + 1]
        tp, tc = med(plain, "time_s"), med(chunked, "time_s")
        speedup = statistics.median(1 - c["time_s"] / p["time_s"] for p, c in zip(plain, chunked, strict=True))
        print(
            f"| {specs[i]['plw']:g} | {tp:.2f} | {tc:.2f} | {100 * speedup:.0f}% faster | "
            f"{med(plain, 'peak_mb'):,.0f} MB | {med(chunked, 'peak_mb'):,.0f} MB |"
        )
    print(f"\nchunked path: {res[1][0]['path']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("loss", "step", "both"), default="both")
    parser.add_argument("--reps", type=int, default=3, help="fresh processes per configuration")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per process")
    parser.add_argument("--chunk", type=int, default=None, help="targets per chunk (default: plw's default)")
    parser.add_argument("--loss-steps", type=int, default=3, help="loss forward+backward passes per process")
    parser.add_argument("--rows", type=int, default=4, help="RACE rows per training batch")
    parser.add_argument("--max-length", type=int, default=1024, help="rows longer than this are skipped")
    parser.add_argument("--steps", type=int, default=3, help="training steps per process (the first is warm-up)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        spec = json.loads(args.child)
        if spec["part"] == "loss":
            out = loss_child(spec["impl"], spec["plw"], spec["chunk"], spec["steps"])
        else:
            out = step_child(spec["impl"], spec["plw"], spec["rows"], spec["max_length"], spec["steps"])
        print(json.dumps(out))
        return
    if args.chunk is None:
        from plw.chunked_loss import DEFAULT_CHUNK_TOKENS

        args.chunk = DEFAULT_CHUNK_TOKENS
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    if args.part in ("loss", "both"):
        part_loss(args)
    if args.part in ("step", "both"):
        part_step(args)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end (other work on the machine slows every number)")


if __name__ == "__main__":
    main()
