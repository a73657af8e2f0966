"""``plw sweep --launcher slurm`` (or ``submitit-local``): one submitit job per run, as a SLURM array.

Needs the optional extra ``plw[slurm]`` (submitit). Options come from the ``slurm:`` config key; ``gpus_per_run``
(the key or ``--gpus-per-run``) gives each job its GPUs. A job trains its run with ``resume``, so a job that is
preempted or reaches its time limit is requeued by submitit and continues from the run's last checkpoint. The job
ids are kept in ``SWEEP/logs/submitit/jobs.json``: the same ``plw sweep`` command run again (e.g. after
``--no-wait``) skips finished runs, waits for the jobs still queued or running, submits the rest, then reports.
``submitit-local`` runs the same code path as local processes (submitit's local executor starts every job at once:
it has no queue), for testing without a cluster.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import ConfigError, RunConfig, dump_config, from_dict
from .launch import LOGS, child_command, run_label, threads_per_run
from .runio import atomic_write_json

JOBS_FILE = "jobs.json"
ALIVE_SLURM_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING"}


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ConfigError("launcher: slurm and submitit-local need submitit: pip install 'plw[slurm]'") from None
    return submitit


class TrainJob:
    """The callable a submitit job runs: train one run (resuming it); requeued as it is on preemption."""

    def __init__(self, config: dict[str, Any], untrained: str | None, gpus: int, accelerate_config: str | None):
        self.config, self.untrained, self.gpus, self.accelerate_config = config, untrained, gpus, accelerate_config

    def __call__(self) -> str:
        run = from_dict(dict(self.config))
        if self.gpus > 1:  # one process per GPU, through accelerate launch
            import subprocess

            config_file = run.run_dir.with_name(f".{run.run_dir.name}.submitit.yaml")
            config_file.parent.mkdir(parents=True, exist_ok=True)
            config_file.write_text(dump_config(run))
            command = child_command(config_file, self.gpus, self.accelerate_config, self.untrained)
            subprocess.run(command, check=True)
            return str(run.run_dir)
        import torch

        from .runner import train_run

        torch.set_num_threads(threads_per_run(1))  # the job's cores (its allocation), or OMP_NUM_THREADS
        return str(train_run(run, progress=False, resume=True, untrained=self.untrained))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit on preemption or timeout: requeue the same job (it resumes from the run's checkpoint)."""
        return _submitit().helpers.DelayedSubmission(self, *args, **kwargs)


def sbatch_parameters(lines: list[str]) -> dict[str, str]:
    """``["--qos=high", "#SBATCH --constraint=a100"]`` -> ``{"qos": "high", "constraint": "a100"}``."""
    out = {}
    for line in lines:
        text = line.strip().removeprefix("#SBATCH").strip().removeprefix("--")
        key, sep, value = text.partition("=")
        if not key or not sep:
            raise ConfigError(f"slurm.sbatch_lines: expected '--key=value', got {line!r}")
        out[key.strip()] = value.strip()
    return out


def gpus_per_job(config: RunConfig) -> int:
    """``gpus_per_run`` (key or ``--gpus-per-run``), else ``slurm.gpus_per_run``, else 0."""
    return config.gpus_per_run or int((config.slurm or {}).get("gpus_per_run", 0))


def make_executor(config: RunConfig, folder: Path) -> Any:
    """The submitit executor of ``config.launcher`` with the ``slurm:`` options and GPUs per run."""
    submitit = _submitit()
    slurm = dict(config.slurm or {})
    gpus = gpus_per_job(config)
    cluster = "slurm" if config.launcher == "slurm" else "local"
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params: dict[str, Any] = {"timeout_min": int(slurm.get("time_min", 24 * 60)), "gpus_per_node": gpus}
    if "cpus_per_run" in slurm:
        params["cpus_per_task"] = int(slurm["cpus_per_run"])
    if "mem_gb" in slurm:
        params["mem_gb"] = slurm["mem_gb"]
    if cluster == "slurm":
        params["slurm_array_parallelism"] = config.jobs if config.jobs > 1 else 256
        for key in ("partition", "account"):
            if key in slurm:
                params[f"slurm_{key}"] = slurm[key]
        if slurm.get("sbatch_lines"):
            params["slurm_additional_parameters"] = sbatch_parameters(slurm["sbatch_lines"])
    executor.update_parameters(name="plw", **params)
    return executor


def _jobs_folder(sweep_dir: Path) -> Path:
    return sweep_dir / LOGS / "submitit"


def _read_jobs(sweep_dir: Path) -> dict[str, str]:
    path = _jobs_folder(sweep_dir) / JOBS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _alive(job_id: str, launcher: str, folder: Path, submitted: dict[str, Any]) -> bool:
    """Whether a job is queued or running (a job submitted by this process is asked directly)."""
    if job_id in submitted:
        return not submitted[job_id].done()
    if launcher == "slurm":
        return _submitit().SlurmJob(folder, job_id).state in ALIVE_SLURM_STATES
    try:  # a local job's id is its controller's pid
        pid = int(job_id)
    except ValueError:
        return False
    try:  # our own child (a --no-wait call earlier in this process): reap it when it has ended
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _failure(job_id: str, folder: Path) -> str:
    stderr = folder / f"{job_id}_0_log.err"
    try:
        lines = [line.strip() for line in stderr.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    return f"job {job_id}: {lines[-1][:300] if lines else 'no output'} (log: {stderr})"


def run_submitit(
    runs: list[RunConfig],
    sweep_dir: Path,
    config: RunConfig,
    untrained: dict[Path, Path] | None = None,
    wait: bool = True,
    say: Callable[[str], None] = print,
    poll_s: float = 2.0,
) -> tuple[dict[str, str], list[str]]:
    """Submit the runs not already queued or running, then (with ``wait``) wait for all of them.

    Returns ``(failed, in_flight)``: ``{label: reason}`` of runs whose job ended without finishing the run, and
    the labels still queued or running (only without ``wait``).
    """
    from .runner import read_state

    untrained = untrained or {}
    folder = _jobs_folder(sweep_dir)
    folder.mkdir(parents=True, exist_ok=True)
    known = _read_jobs(sweep_dir)
    submitted: dict[str, Any] = {}
    by_label = {run_label(r, sweep_dir): r for r in runs}
    waiting = {
        label: known[label]
        for label in by_label
        if label in known and _alive(known[label], config.launcher, folder, {})
    }
    to_submit = [r for label, r in by_label.items() if label not in waiting]
    if to_submit:
        executor = make_executor(config, folder)
        gpus = gpus_per_job(config)
        jobs_list = []
        with executor.batch():
            for run in to_submit:
                shared = untrained.get(run.run_dir)
                task = TrainJob(run.to_dict(), str(shared) if shared else None, gpus, config.accelerate_config)
                jobs_list.append((run_label(run, sweep_dir), executor.submit(task)))
        for label, job in jobs_list:
            waiting[label] = str(job.job_id)
            submitted[str(job.job_id)] = job
        atomic_write_json(folder / JOBS_FILE, {**known, **waiting})
        say(
            f"[plw] sweep: submitted {len(to_submit)} job(s) ({config.launcher}): {', '.join(label for label, _ in jobs_list)}"
        )
    failed: dict[str, str] = {}
    while True:
        for label, job_id in list(waiting.items()):
            if _alive(job_id, config.launcher, folder, submitted):
                continue
            del waiting[label]
            state = read_state(by_label[label].run_dir) or {}
            if state.get("status") == "finished":
                say(f"[plw] sweep: {label} finished (job {job_id})")
            else:
                failed[label] = _failure(job_id, folder)
                say(f"[plw] sweep: {label} FAILED, {failed[label]}")
        if not waiting or not wait:
            break
        time.sleep(poll_s)
    return failed, sorted(waiting)
