"""Run the shipped accelerate configs (DDP, FSDP, DeepSpeed ZeRO-2/3) on 2 processes and compare with 1 process.

One command on a machine with 2 GPUs (DeepSpeed needs ``pip install deepspeed``)::

    python benchmarks/distributed_check.py                      # every config in configs/accelerate, on the GPUs
    python benchmarks/distributed_check.py --configs ddp --cpu  # DDP on 2 CPU processes (gloo)

Each config launches ``tests/dist_worker.py`` with ``accelerate launch --config_file configs/accelerate/NAME.yaml
--num_processes 2 --mixed_precision no`` on a tiny random LLaMA: evaluate, one plain SGD step (lr 1), evaluate
again. The job uses a prompt-loss-weight, a completion weight, per-token data weights and ``loss_normalization:
tokens``, and gives rank 0 two long rows and rank 1 two short ones, so a per-rank normaliser would be visibly
wrong. The reference is the same worker in one process with the 4 rows in one micro-batch. A config passes when
the evaluation metrics before and after the step (the update enters the second) and, where the backend exposes
them, the gradients agree to ``--rtol``, and every rank ran the config's ``distributed_type``. Prints one line per
config and exits non-zero when any fails.

On a CPU-only machine (``--cpu``) the Trainer (transformers 5.24, accelerate 1.15) sets up plain multi-CPU data
parallelism for the FSDP config, which this check reports as FAIL ("ran as MULTI_CPU"). DeepSpeed runs on CPU
processes with ``DS_ACCELERATOR=cpu`` (set here with ``--cpu``); ``tests/test_engines.py`` checks ZeRO-2/3 and FSDP2
on CPU processes through ``plw train``; this script stays the check of the Trainer with every config on GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "dist_worker.py"
CONFIGS = ROOT / "configs" / "accelerate"
SKIP = ("runtime", "per_second", "epoch")


def make_weighted_job(use_cpu: bool) -> dict:
    """The 2-process job of ``tests/test_distributed_weights.py`` (tokens normalisation, data weights)."""
    sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # this checkout's plw and tests, not an installed copy
    from tests.test_distributed import make_job
    from tests.test_distributed_weights import CW, PLW, TRAIN_WEIGHTS, with_data_weights

    import plw

    job = make_job(plw.load_tokenizer("smollm2-135m-instruct"))
    job["plw"] = PLW
    job["train_rows"] = with_data_weights(job["train_rows"], TRAIN_WEIGHTS)
    job["eval_rows"] = with_data_weights(job["eval_rows"], [0.5, 1.0, 2.0, 0.0, 1.5])
    job["trainer_kwargs"] = {"completion_loss_weight": CW, "loss_normalization": "tokens"}
    job["use_cpu"] = use_cpu
    return job


def _env(workdir: Path, use_cpu: bool) -> dict:
    env = {**os.environ, "HF_HOME": str(workdir / "hf"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    if use_cpu:
        env.update({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"})
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_one(job: dict, workdir: Path, timeout: int) -> dict:
    """The reference: the worker in one process, the 4 rows in one micro-batch."""
    folder = workdir / "one"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.json").write_text(json.dumps({**job, "per_device_batch": 2 * job["per_device_batch"]}))
    cmd = [sys.executable, str(WORKER), str(folder)]
    subprocess.run(cmd, env=_env(workdir, job["use_cpu"]), check=True, timeout=timeout, cwd=workdir)
    return _results(folder, 1)


def run_config(name: str, job: dict, workdir: Path, timeout: int) -> dict:
    """``accelerate launch`` the worker on 2 processes with ``configs/accelerate/NAME.yaml``."""
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.json").write_text(json.dumps(job))
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        f"--config_file={CONFIGS / (name + '.yaml')}",
        "--num_processes=2",
        "--mixed_precision=no",
        "--main_process_ip=127.0.0.1",
        f"--main_process_port={_free_port()}",
        str(WORKER),
        str(folder),
    ]
    proc = subprocess.run(
        cmd, env=_env(workdir, job["use_cpu"]), cwd=workdir, timeout=timeout, capture_output=True, text=True
    )
    (folder / "launch.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not (folder / "rank1.json").exists():
        raise RuntimeError(f"{name}: accelerate launch failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    out = _results(folder, 2)
    out["expected_type"] = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["distributed_type"]
    return out


def _results(folder: Path, processes: int) -> dict:
    import torch

    reports = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(processes)]
    return {"reports": reports, "tensors": torch.load(folder / "tensors.pt")}


def _metrics(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not any(s in k for s in SKIP)}


def compare(two: dict, one: dict, rtol: float) -> list[str]:
    """What differs between a 2-process run and the 1-process reference (empty when they agree)."""
    problems = []
    ref = one["reports"][0]
    for report in two["reports"]:
        if report["world_size"] != 2:
            problems.append(f"rank {report['rank']}: world size {report['world_size']}")
        expected = two.get("expected_type")
        if expected == "MULTI_GPU" and report["distributed_type"] == "MULTI_CPU":
            expected = "MULTI_CPU"  # DDP on CPU processes (--cpu)
        if expected not in (None, report["distributed_type"]):
            problems.append(f"rank {report['rank']} ran as {report['distributed_type']}, not {expected}")
        for key in ("eval", "eval_after"):
            a, b = _metrics(report[key]), _metrics(ref[key])
            for k in b:
                if k not in a or abs(a[k] - b[k]) > rtol * max(abs(b[k]), 1e-6):
                    problems.append(f"rank {report['rank']} {key}.{k}: {a.get(k)} vs {b[k]}")
    grads_two, grads_one = two["tensors"]["grads"], one["tensors"]["grads"]
    if grads_two:  # DeepSpeed keeps its gradients to itself: then the metrics after the step carry the check
        num = sum(float((grads_two[n].cpu() - g.cpu()).double().pow(2).sum()) for n, g in grads_one.items())
        den = sum(float(g.double().pow(2).sum()) for g in grads_one.values())
        if (num / den) ** 0.5 > rtol:
            problems.append(f"gradient relative difference {(num / den) ** 0.5:.2e}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    parser.add_argument("--configs", nargs="+", default=names, choices=names)
    parser.add_argument(
        "--cpu", action="store_true", help="2 CPU processes (gloo); only DDP really runs so (FSDP falls back: FAIL)"
    )
    parser.add_argument("--rtol", type=float, default=1e-4)
    parser.add_argument("--timeout", type=int, default=900)
    args = parser.parse_args()
    job = make_weighted_job(args.cpu)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        one = run_one(job, workdir, args.timeout)
        for name in args.configs:
            try:
                problems = compare(run_config(name, job, workdir, args.timeout), one, args.rtol)
            except Exception as err:  # report every config, then fail
                problems = [str(err)]
            failed |= bool(problems)
            print(f"{name:<18} {'PASS' if not problems else 'FAIL'}" + "".join(f"\n    {p}" for p in problems))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
