"""Wall time of a sweep trained one run after another (``--jobs 1``) and as parallel processes (``--jobs 2``).

Both sweeps run in one invocation, one after the other, into ``OUT/jobs=N/``, with the same config and overrides
(default: the demo, ``configs/demo.yaml``). ``OMP_NUM_THREADS`` is left unset so each sweep splits the cores as
``plw sweep`` does by default: ``--jobs 1`` trains in-process with torch's default thread count, ``--jobs N`` gives
each run cores // N threads. Prints a Markdown table: wall time, the untrained evaluation (shared by the runs, timed
from the sweep's output) and each run's final exact match and completion loss.

    python benchmarks/sweep_jobs.py                                   # the full demo twice (~30 min on 2 cores)
    python benchmarks/sweep_jobs.py --set train_data.rows=96 --set eval_data.rows=24   # a reduced demo

Timings on a shared machine are noisy: other processes beside it slow both sweeps, and the parallel one more
(its two runs compete with them for the same cores). Report the load with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def run_sweep(config: str, jobs: int, out: Path, sets: list[str]) -> float:
    """Run ``plw sweep`` in a fresh process; return its wall time in seconds."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    command = [sys.executable, "-m", "plw", "sweep", config, "--jobs", str(jobs), "--no-progress"]
    command += ["--set", f"output_dir={out}"] + [x for s in sets for x in ("--set", s)]
    start = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run(command, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def final_metrics(sweep_dir: Path) -> dict[str, dict[str, float]]:
    out = {}
    for metrics in sorted(sweep_dir.glob("**/metrics.jsonl")):
        if "shared" in metrics.parts:
            continue
        last = json.loads(metrics.read_text().splitlines()[-1])
        out[metrics.parent.relative_to(sweep_dir).as_posix()] = last
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--jobs", default="1,2", help="comma-separated --jobs values, run in this order")
    parser.add_argument("--out", default="runs/bench-sweep-jobs")
    args = parser.parse_args()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    rows = []
    for jobs in [int(j) for j in args.jobs.split(",")]:
        out = root / f"jobs={jobs}"
        seconds = run_sweep(args.config, jobs, out, args.sets)
        sweep_dir = next(p.parent for p in out.glob("*/sweep.json"))
        rows.append((jobs, seconds, final_metrics(sweep_dir)))
        print(f"--jobs {jobs}: {seconds:.0f} s", flush=True)
    print(f"\n{cores} cores, load average before the first sweep {load:.2f}, after the last {os.getloadavg()[0]:.2f}")
    print(
        f"command: python benchmarks/sweep_jobs.py --config {args.config} " + " ".join(f"--set {s}" for s in args.sets)
    )
    print("\n| --jobs | threads per run | wall time | run | final exact match | final completion loss |")
    print("|---|---|---|---|---|---|")
    for jobs, seconds, finals in rows:
        threads = "torch default" if jobs == 1 else str(max(1, cores // jobs))
        for i, (run, last) in enumerate(finals.items()):
            time_cell = f"{seconds / 60:.1f} min" if i == 0 else ""
            print(
                f"| {jobs if i == 0 else ''} | {threads if i == 0 else ''} | {time_cell} | {run} | "
                f"{last.get('eval_exact_match', float('nan')):.3f} | {last.get('eval_completion_loss', float('nan')):.4f} |"
            )


if __name__ == "__main__":
    main()
