"""Sample packing: how full the batches are, and CPU training throughput of plw packed vs padded vs TRL packed.

Part 1 (seconds): RACE validation rows (``plw.data.race`` prompt, SmolLM2 chat template, rows over ``max_length``
dropped) and the share of non-pad tokens of padded batches of 8 in data order and after sorting by length, next to
the bin fill of TRL's best-fit decreasing (as ``SFTTrainer`` runs it, in chunks of 1,000 rows, and over the whole
set) and of plw's packer (best-fit decreasing alone, and with its local search).

Part 2 (minutes): full fine-tuning of SmolLM2-135M-Instruct on the CPU with bf16 autocast, the same first RACE train
rows and the same number of optimizer steps for every trainer: plw packed (one bin of <= max_length tokens per
step) at each ``--plw``, plw padded (``--padded-batch`` rows per step) and TRL ``SFTTrainer(packing=True,
completion_only_loss=True)`` (one bin per step). Each runs in its own process so that its peak memory (max RSS) is
its own. Real tokens/s counts the tokens of the rows (no padding) over the steps after the first (the first step
pays one-off set-up). The first-step loss check feeds TRL's first packed batch to plw's loss at plw=0 with the
untrained model and compares it with the loss TRL logs for that step.

Part 3 (minutes): the same packed batch (TRL's first bin) through each trainer's ``compute_loss`` and backward,
one model, interleaved in rounds so that other jobs' load hits every variant alike: plw's chunked and plain loss
paths at each ``--plw`` against TRL's fused-head loss. The model's forward is identical, so this isolates what the
trainers add.

    python benchmarks/packing.py                          # all parts
    python benchmarks/packing.py --loss-impl plain --threads 1   # as run for the README (shared, loaded machine)
    python benchmarks/packing.py --no-throughput          # part 1 only
    python benchmarks/packing.py --steps 3 --train-rows 60 --plw 0

Timings on a shared 2-core machine are noisy (other jobs run beside it); compare the ratios of one run. Under such
load, ``--threads 1`` avoids two-thread runs spinning against other processes.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "race"
MODEL = "smollm2-135m-instruct"


def race_rows(split: str, max_length: int, limit: int | None = None):
    """Encoded RACE rows that fit in ``max_length`` tokens, their records, the number dropped, and the tokenizer."""
    import plw
    from plw.data.encode import TooLongError, encode
    from plw.data.sources import load_records

    path = DATA / f"{split}.jsonl"
    if not path.exists():
        sys.exit(f"RACE data not found at {path} (the benchmark reads ../shared/data/race/)")
    tokenizer = plw.load_tokenizer(MODEL)
    rows, kept, dropped = [], [], 0
    for record in load_records({"source": "race", "path": str(path)}).records[:limit]:
        try:
            rows.append(encode(tokenizer, record, max_length))
            kept.append(record)
        except TooLongError:  # never cut: the answer is at the end
            dropped += 1
    return rows, kept, dropped, tokenizer


# ---- part 1: efficiency ----------------------------------------------------------------------------------------


def trl_bins(lengths: list[int], max_length: int, chunk: int | None) -> int:
    """Number of bins TRL's ``pack_dataset(strategy="bfd")`` makes (``chunk`` rows per map batch; None: all)."""
    import datasets
    from trl.data_utils import pack_dataset

    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_dict({"input_ids": [[0] * n for n in lengths]})
    packed = pack_dataset(ds, max_length, "bfd", {"batch_size": chunk if chunk else len(ds)})
    return len(packed)


def efficiency(max_length: int) -> None:
    from plw.data.packing import PackingStats, pack_bins, padding_share

    rows, _, dropped, _ = race_rows("validation", max_length)
    lengths = [len(r["input_ids"]) for r in rows]
    tokens = sum(lengths)
    bound = math.ceil(tokens / max_length)
    print(f"RACE validation, SmolLM2 chat template, max_length {max_length}: {dropped} rows longer dropped")
    print(f"{len(rows)} rows, {tokens:,} tokens (mean {tokens / len(rows):.1f}); lower bound {bound} bins\n")
    print(f"{'layout':<52}{'batches/bins':>13}{'non-pad or fill':>17}{'seconds':>9}")
    n8 = math.ceil(len(lengths) / 8)
    print(f"{'padding, batches of 8, data order':<52}{n8:>13}{100 * padding_share(lengths, 8):>16.1f}%")
    print(f"{'padding, batches of 8, sorted by length':<52}{n8:>13}{100 * padding_share(lengths, 8, True):>16.1f}%")
    for label, chunk in (("TRL bfd, chunks of 1,000 rows (as SFTTrainer)", 1000), ("TRL bfd, whole set", None)):
        t = time.perf_counter()
        bins = trl_bins(lengths, max_length, chunk)
        dt = time.perf_counter() - t
        print(f"{label:<52}{bins:>13}{100 * tokens / (bins * max_length):>16.1f}%{dt:>9.2f}")
    for label, steps in (
        ("plw best-fit decreasing (improve_steps=0)", 0),
        ("plw best-fit decreasing + local search", None),
    ):
        t = time.perf_counter()
        bins = pack_bins(lengths, max_length, seed=42, improve_steps=steps)
        dt = time.perf_counter() - t
        stats = PackingStats(len(lengths), len(bins), tokens, max_length)
        print(f"{label:<52}{stats.bins:>13}{100 * stats.fill:>16.1f}%{dt:>9.2f}")
    print(f"(plw: {stats.rows_per_bin:.2f} rows per bin; a padding-free batch has 100% real tokens)\n")


# ---- part 2: throughput (one configuration per process) -------------------------------------------------------------


class StepClock:
    """Trainer callback: wall time of every optimizer step."""

    def __init__(self):
        from transformers import TrainerCallback

        self.times: list[float] = []
        clock = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                clock.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                clock.times.append(time.perf_counter() - clock.start)

        self.callback = _Callback()


class CountingCollator:
    """Wraps a collator; records the real (non-pad) tokens and the first batch it returns."""

    def __init__(self, inner):
        self.inner = inner
        self.tokens: list[int] = []
        self.first = None

    def __call__(self, items):
        batch = self.inner(items)
        mask = batch.get("attention_mask")
        self.tokens.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
        if self.first is None:
            self.first = {k: v.clone() for k, v in batch.items() if hasattr(v, "clone")}
        return batch


def _common_args(a, out: str) -> dict:
    return {
        "output_dir": out,
        "max_steps": a.steps,
        "learning_rate": 1e-5,
        "lr_scheduler_type": "constant",
        "optim": "adamw_torch",
        "bf16": True,
        "use_cpu": True,
        "report_to": [],
        "save_strategy": "no",
        "logging_steps": 1,
        "disable_tqdm": True,
        "seed": 0,
        "dataloader_num_workers": 0,
    }


def child(a) -> dict:
    import tempfile

    import torch

    import plw

    torch.manual_seed(0)
    rows, records, _, tokenizer = race_rows("train", a.max_length, a.train_rows)
    model = plw.load_model(MODEL)
    clock = StepClock()
    out = tempfile.mkdtemp(prefix="plw-bench-")
    result: dict = {"kind": a.child, "plw": a.plw_value, "rows": len(rows)}
    if a.child == "trl":
        from trl import SFTTrainer

        ds, cfg = trl_dataset_and_config(a, records, out)
        trainer = SFTTrainer(
            model=model, args=cfg, train_dataset=ds, processing_class=tokenizer, callbacks=[clock.callback]
        )
        result["bins"] = len(trainer.train_dataset)
        result["dataset_tokens"] = int(sum(len(x) for x in trainer.train_dataset["input_ids"]))
    else:
        from transformers import TrainingArguments

        packed = a.child == "plw-packed"
        args = TrainingArguments(**_common_args(a, out), per_device_train_batch_size=1 if packed else a.padded_batch)
        trainer = plw.PLWTrainer(
            model=model,
            args=args,
            train_dataset=rows,
            processing_class=tokenizer,
            prompt_loss_weight=a.plw_value,
            packing=packed,
            max_length=a.max_length,
            loss_impl=a.loss_impl,
            callbacks=[clock.callback],
            **({"loss_chunk_tokens": a.loss_chunk_tokens} if a.loss_chunk_tokens else {}),
        )
        if packed:
            result["bins"] = trainer.packing_stats["train"].bins
        result["dataset_tokens"] = sum(len(r["input_ids"]) for r in rows)
    if a.child == "trl":
        result["first_loss_plw"], result["first_loss_trl_direct"] = plw_loss_of_trl_batch(trainer)
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    t = time.perf_counter()
    trainer.train()
    result["train_seconds"] = time.perf_counter() - t
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result["first_loss"] = losses[0] if losses else None
    result["step_seconds"] = clock.times
    result["step_tokens"] = counter.tokens[: len(clock.times)]
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    if a.child == "trl":
        result["same_first_batch"] = bool(torch.equal(counter.first["input_ids"], _TRL_FIRST["input_ids"]))
    return result


def trl_dataset_and_config(a, records: list[dict], out: str):
    """The RACE records as TRL conversational prompt/completion rows, and the SFTConfig both TRL runs use:
    packed, completion-only loss, one bin per step."""
    import datasets
    from trl import SFTConfig

    ds = datasets.Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "completion": [{"role": "assistant", "content": r["completion"]}],
            }
            for r in records
        ]
    )
    cfg = SFTConfig(
        **_common_args(a, out),
        max_length=a.max_length,
        packing=True,
        completion_only_loss=True,
        per_device_train_batch_size=1,
    )
    return ds, cfg


_TRL_FIRST: dict = {}


def plw_loss_of_trl_batch(trainer) -> tuple[float, float]:
    """plw's loss at plw=0 and TRL's own ``compute_loss`` on TRL's first packed batch: untrained model, bf16
    autocast as in training, unrounded (the Trainer logs losses rounded to 4 decimals)."""
    import torch

    from plw.loss import weighted_nll_sum

    batch = next(iter(trainer.get_train_dataloader()))
    _TRL_FIRST.update({k: v.cpu() for k, v in batch.items() if hasattr(v, "cpu")})
    labels = batch["labels"]
    completion = (labels != -100).long()  # TRL: -100 on prompt tokens and on the first token of every row
    prompt = 1 - completion
    # transformers 5 autocasts inside the prepared model's forward only; this model is not prepared yet.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = trainer.model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
    total, weight = weighted_nll_sum(logits, batch["input_ids"], prompt, completion, 0.0, batch["position_ids"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        trl_loss = trainer.compute_loss(trainer.model, dict(batch))
    return float(total / weight), float(trl_loss)


def interleaved(a) -> dict:
    """Forward + backward of the same packed batch (TRL's first bin) through each trainer's ``compute_loss``, in
    rounds (A, B, C, ... then again), so that load from other jobs hits every variant alike. One model, bf16 autocast."""
    import tempfile

    import torch
    from transformers import TrainingArguments
    from trl import SFTTrainer

    import plw

    rows, records, _, tokenizer = race_rows("train", a.max_length, a.train_rows)
    model = plw.load_model(MODEL)
    model.train()
    out = tempfile.mkdtemp(prefix="plw-bench-")
    ds, cfg = trl_dataset_and_config(a, records, out)
    trl_trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tokenizer)
    trl_batch = next(iter(trl_trainer.get_train_dataloader()))
    completion = (trl_batch["labels"] != -100).long()
    plw_batch = {
        "input_ids": trl_batch["input_ids"],
        "position_ids": trl_batch["position_ids"],
        "prompt_mask": 1 - completion,
        "completion_mask": completion,
    }
    variants = {"TRL packed": (trl_trainer, trl_batch)}
    for impl in ("chunked", "plain"):
        for value in a.plw:
            args = TrainingArguments(**_common_args(a, out))
            trainer = plw.PLWTrainer(model=model, args=args, prompt_loss_weight=value, loss_impl=impl)
            variants[f"plw packed {impl}, plw {value:g}"] = (trainer, plw_batch)
    if a.only:  # one variant, one forward + backward: its peak memory on this bin
        variants = {a.only: variants[a.only]}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(1 if a.only else a.rounds + 1):  # the first round warms up and is not counted
        for name, (trainer, batch) in variants.items():
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = trainer.compute_loss(model, dict(batch))
            loss.backward()
            model.zero_grad(set_to_none=True)
            times[name].append(time.perf_counter() - t)
    return {
        "tokens": int(trl_batch["input_ids"].numel()),
        "times": {k: v[1:] for k, v in times.items()},
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }


def run_child(kind: str, plw_value: float, a, only: str = "") -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--plw-value", str(plw_value), "--only", only]
    cmd += ["--steps", str(a.steps), "--train-rows", str(a.train_rows), "--max-length", str(a.max_length)]
    cmd += ["--padded-batch", str(a.padded_batch), "--loss-impl", a.loss_impl, "--rounds", str(a.rounds)]
    cmd += ["--plw", *map(str, a.plw), "--threads", str(a.threads), "--loss-chunk-tokens", str(a.loss_chunk_tokens)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def throughput(a) -> None:
    configs = [("plw-packed", p) for p in a.plw] + [("plw-padded", a.plw[0]), ("trl", 0.0)]
    results = []
    for kind, p in configs:
        print(f"running {kind} (plw {p}) ...", flush=True)
        results.append(run_child(kind, p, a))
    print(
        f"\nSmolLM2-135M full fine-tune, CPU, bf16 autocast, {a.steps} optimizer steps each, first {a.train_rows} RACE "
        f"train rows, max_length {a.max_length}, plw loss_impl {a.loss_impl}, torch threads {a.threads or 'default'}; "
        f"tokens/s over steps 2..{a.steps}"
    )
    print(
        f"{'trainer':<34}{'rows/bins':>10}{'s/step':>9}{'real tok/step':>15}{'real tok/s':>12}{'peak RSS GB':>13}{'loss 1':>9}"
    )
    speed = {}
    for r in results:
        secs, toks = r["step_seconds"][1:], r["step_tokens"][1:]
        tps = sum(toks) / sum(secs)
        name = {
            "plw-packed": "plw packed",
            "plw-padded": f"plw padded (batch {a.padded_batch})",
            "trl": "TRL SFTTrainer packed",
        }[r["kind"]]
        name += f", plw {r['plw']:g}" if r["kind"] != "trl" else ", completion-only"
        speed[(r["kind"], r["plw"])] = (tps, r["peak_rss_gb"])
        units = f"{r['rows']}/{r.get('bins', '-')}"
        print(
            f"{name:<34}{units:>10}{sum(secs) / len(secs):>9.2f}{sum(toks) / len(toks):>15.0f}{tps:>12.0f}"
            f"{r['peak_rss_gb']:>13.2f}{r['first_loss']:>9.4f}"
        )
    trl = next(r for r in results if r["kind"] == "trl")
    trl_tps, trl_rss = speed[("trl", 0.0)]
    print("\nratios to TRL packed (tokens/s, peak RSS):")
    for (kind, p), (tps, rss) in speed.items():
        if kind != "trl":
            print(f"  {kind} plw {p:g}: {tps / trl_tps:.2f}x speed, {rss / trl_rss:.2f}x memory")
    print(
        f"first-step loss on TRL's first batch: TRL logs {trl['first_loss']:.4f} (rounded by the Trainer), TRL's "
        f"compute_loss gives {trl['first_loss_trl_direct']:.6f}, plw's loss at plw=0 {trl['first_loss_plw']:.6f}: "
        f"difference {trl['first_loss_plw'] - trl['first_loss_trl_direct']:+.1e} "
        f"(same batch: {trl['same_first_batch']}); TRL tokenized {trl['dataset_tokens']} tokens, plw "
        f"{results[0]['dataset_tokens']}"
    )


def report_interleaved(a) -> None:
    print("\nrunning the interleaved comparison ...", flush=True)
    r = run_child("interleaved", 0.0, a)
    med = {k: statistics.median(v) for k, v in r["times"].items()}
    base = med["TRL packed"]
    print(
        f"forward + backward of one packed batch ({r['tokens']} tokens, TRL's first bin), each trainer's compute_loss, "
        f"bf16 autocast, median of {a.rounds} interleaved rounds:"
    )
    print(f"{'variant':<34}{'seconds':>9}{'tokens/s':>10}{'speed vs TRL':>14}   all rounds")
    for name, m in med.items():
        rounds = " ".join(f"{t:.1f}" for t in r["times"][name])
        print(f"{name:<34}{m:>9.2f}{r['tokens'] / m:>10.0f}{base / m:>13.2f}x   {rounds}")
    peaks = {name: run_child("interleaved", 0.0, a, only=name)["peak_rss_gb"] for name in list(med)[:2]}
    print(
        "peak RSS of one forward + backward of that same batch, each in its own process (no optimizer state): "
        + ", ".join(f"{name} {gb:.2f} GB" for name, gb in peaks.items())
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per trainer (default 4)")
    p.add_argument("--train-rows", type=int, default=100, help="first N RACE train rows (default 100)")
    p.add_argument("--padded-batch", type=int, default=2, help="rows per step of plw padded (default 2)")
    p.add_argument("--plw", type=float, nargs="+", default=[0.0, 1.0], help="plw values for plw packed")
    p.add_argument("--loss-impl", default="chunked", choices=["chunked", "plain"], help="plw's loss path")
    p.add_argument("--loss-chunk-tokens", type=int, default=0, help="plw's loss_chunk_tokens (default: PLWTrainer's)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the interleaved comparison (default 3)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (default: torch's choice)")
    p.add_argument("--no-throughput", action="store_true", help="only the batch-fill comparison")
    p.add_argument("--no-efficiency", action="store_true", help="only the throughput comparison")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--plw-value", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--only", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        if a.threads:
            import torch

            torch.set_num_threads(a.threads)
        print(json.dumps(interleaved(a) if a.child == "interleaved" else child(a)))
        return
    if not a.no_efficiency:
        efficiency(a.max_length)
    if not a.no_throughput:
        throughput(a)
        report_interleaved(a)


if __name__ == "__main__":
    main()
