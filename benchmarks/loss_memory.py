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
2. A full SmolLM2-135M-Instruct training step (forward, backward, AdamW step; full fine-tuning, or LoRA with
   ``--lora``; bf16 autocast as ``bf16: auto`` gives on this CPU) through ``PLWTrainer.training_step``, on a batch
   of RACE train rows (``../shared/data/race/train.jsonl``) with ``loss_impl`` plain vs chunked. Timing: one
   process per plw runs both paths on the same model, alternating step by step, so drifting machine load hits both
   alike. Peak memory: a separate process per path, its whole high-water mark (model, optimizer, activations).

    python benchmarks/loss_memory.py                 # both parts (about 30 minutes on a busy 2-core machine)
    python benchmarks/loss_memory.py --part loss --reps 5 --chunk 512
    python benchmarks/loss_memory.py --part step --lora
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


def step_child(
    mode: str, impls: list[str], plw_value: float, rows: int, max_length: int, steps: int, lora: bool
) -> dict:
    """Build one model and one PLWTrainer per loss path; time ``steps`` training steps per path.

    ``mode="time"``: the paths alternate step by step in this process (warm-up one step each, then pairs in
    alternating order), so both see the same machine load. ``mode="memory"``: one path only, so the process's
    high-water mark is that path's.
    """
    import tempfile

    import torch
    from transformers import TrainingArguments

    import plw
    from plw.data.encode import encode_records
    from plw.runner import cpu_supports_bf16

    tokenizer = plw.load_tokenizer("smollm2-135m-instruct")
    encoded, _ = encode_records(tokenizer, race_records(rows * 3), max_length, "drop")
    model = plw.load_model("smollm2-135m-instruct")
    if lora:
        from plw.runner import apply_lora

        model = apply_lora(model, {"r": 16, "alpha": 32, "target_modules": "all-linear"})
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=cpu_supports_bf16(), report_to=[], disable_tqdm=True
    )
    trainers = {
        impl: plw.PLWTrainer(
            model=model, args=args, processing_class=tokenizer, prompt_loss_weight=plw_value, loss_impl=impl
        )
        for impl in impls
    }
    batch = trainers[impls[0]].data_collator(encoded[:rows])
    normaliser = trainers[impls[0]].step_weight([batch]).float()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step(impl: str) -> float:
        start = time.perf_counter()
        trainers[impl].training_step(model, dict(batch), normaliser)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    # Warm-up: the first steps of a process are several times slower (oneDNN builds its bf16 kernels for each new
    # shape, AdamW allocates its states, fresh memory is paged in), so they are not timed.
    for _ in range(2 if mode == "time" else 1):
        for impl in impls:
            step(impl)
    times: dict[str, list[float]] = {impl: [] for impl in impls}
    for i in range(steps):
        for impl in impls if i % 2 == 0 else impls[::-1]:
            times[impl].append(step(impl))
    return {
        "peak_mb": peak_mb(),
        "times": times,
        "tokens": int(batch["attention_mask"].sum()),
        "shape": list(batch["input_ids"].shape),
        "paths": {impl: t.loss_path() for impl, t in trainers.items()},
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
    base = {"part": "step", "rows": args.rows, "max_length": args.max_length, "lora": args.lora}
    rows = []
    for p in (1.0, 0.0):
        timed = run_child(
            {**base, "mode": "time", "impls": ["plain", "chunked"], "plw": p, "steps": args.steps}, args.threads
        )
        peaks = {
            impl: run_child({**base, "mode": "memory", "impls": [impl], "plw": p, "steps": 1}, args.threads)["peak_mb"]
            for impl in ("plain", "chunked")
        }
        print(f"  plw {p:g}: {timed['times']}, peaks {peaks}", file=sys.stderr)
        rows.append((p, timed, peaks))
    first = rows[0][1]
    what = "LoRA r=16 on all linear layers" if args.lora else "full fine-tuning"
    print(
        f"\n## Full training step: SmolLM2-135M-Instruct, {what}, AdamW, bf16 autocast, {args.threads} threads; "
        f"batch {first['shape']} of RACE train rows ({first['tokens']} real tokens)"
    )
    print(
        f"(one process per plw alternates the two paths step by step, {args.steps} timed steps each after 2 warm-up "
        "steps each; "
        "peak = whole-process RSS of a separate process per path)\n"
    )
    print(
        "| plw | plain s/step | chunked s/step | chunked vs plain (median of step pairs) | plain peak | chunked peak |"
    )
    print("|---|---|---|---|---|---|")
    for p, timed, peaks in rows:
        tp, tc = timed["times"]["plain"], timed["times"]["chunked"]
        saving = statistics.median(1 - c / q for q, c in zip(tp, tc, strict=True))
        verdict = f"{100 * saving:.0f}% faster" if saving >= 0 else f"{-100 * saving:.0f}% slower"
        print(
            f"| {p:g} | {statistics.median(tp):.2f} | {statistics.median(tc):.2f} | {verdict} | "
            f"{peaks['plain']:,.0f} MB | {peaks['chunked']:,.0f} MB |"
        )
    print(f"\nchunked path: {first['paths']['chunked']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("loss", "step", "both"), default="both")
    parser.add_argument("--reps", type=int, default=3, help="fresh processes per configuration (loss part)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per process")
    parser.add_argument("--chunk", type=int, default=None, help="targets per chunk (default: plw's default)")
    parser.add_argument("--loss-steps", type=int, default=3, help="loss forward+backward passes per process")
    parser.add_argument("--rows", type=int, default=4, help="RACE rows per training batch")
    parser.add_argument("--max-length", type=int, default=1024, help="rows longer than this are skipped")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per path (after one warm-up)")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter (r=16, all linear layers) instead")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        spec = json.loads(args.child)
        if spec["part"] == "loss":
            out = loss_child(spec["impl"], spec["plw"], spec["chunk"], spec["steps"])
        else:
            keys = ("mode", "impls", "plw", "rows", "max_length", "steps", "lora")
            out = step_child(*(spec[k] for k in keys))
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
