"""Throughput of ``plw stats`` counting (rows per second) on the 20,002 RACE train rows.

Times :func:`plw.stats.dataset_counts` (read the JSONL lazily, build the RACE prompts, write Arrow, count with
``Dataset.map(batched=True)``) with the SmolLM2 tokenizer and chat template, with ``--num-proc`` processes, and in
whitespace words; also the peak RSS of this process, to show the file is streamed. The tokenizer is loaded before
the clock starts. Prints a table; not pass/fail.

    python benchmarks/stats_throughput.py                      # ../shared/data/race/train.jsonl
    python benchmarks/stats_throughput.py --num-proc 1 2 --data FILE
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "race" / "train.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="a dataset for plw stats (default: RACE train)")
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2], help="process counts to time")
    parser.add_argument("--tokenizer", default="smollm2-135m-instruct")
    args = parser.parse_args(argv)
    if not Path(args.data).exists():
        print(f"skipped: {args.data} not found (the RACE reference data lives in ../shared/data)", file=sys.stderr)
        return 0

    import plw
    from plw.stats import dataset_counts

    tokenizer = plw.load_tokenizer(args.tokenizer)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cases = [(f"tokens ({args.tokenizer}, chat), num_proc={n}", tokenizer, n) for n in args.num_proc]
    cases.append(("whitespace words, num_proc=1", None, 1))
    print(f"{'counting':<58} {'rows':>7} {'seconds':>8} {'rows/s':>8}")
    for label, tok, num_proc in cases:
        start = time.perf_counter()
        counts = dataset_counts(args.data, tok, num_proc=num_proc, progress=False)
        seconds = time.perf_counter() - start
        rows = len(counts["n_prompt"])
        print(f"{label:<58} {rows:>7,} {seconds:>8.1f} {rows / seconds:>8.0f}", flush=True)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size_mib = Path(args.data).stat().st_size / 2**20
    print(f"peak RSS: {rss_before:.0f} MiB before counting, {peak_mib:.0f} MiB after (data file: {size_mib:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
