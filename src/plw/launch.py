"""Runs of a sweep as separate processes, N at a time (``plw sweep --jobs N``).

Each run is ``python -m plw train RUN.yaml --resume`` in its own session (process group), with its output in
``SWEEP/logs/RUN.log``. On CPU the cores are split evenly (``OMP_NUM_THREADS`` = cores // N unless it is set);
with ``gpus_per_run`` K each run gets K devices through ``CUDA_VISIBLE_DEVICES`` and, for K > 1, is started by
``accelerate launch`` with K processes. A failed run is recorded and the others go on; an interrupt (Ctrl-C,
SIGTERM) stops every run's whole process group before it is passed on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError, RunConfig, dump_config

LOGS = "logs"  # SWEEP/logs/RUN.log and SWEEP/logs/RUN.yaml: each run's output and the config it was started with


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under ``taskset`` or a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_run(jobs: int, environ: dict[str, str] | None = None) -> int:
    """Torch threads of each of ``jobs`` parallel runs: ``OMP_NUM_THREADS`` when set, else cores // jobs (>= 1)."""
    environ = os.environ if environ is None else environ
    given = environ.get("OMP_NUM_THREADS", "").strip()
    if given:
        try:
            return max(1, int(given))
        except ValueError:
            raise ConfigError(f"OMP_NUM_THREADS: expected an integer, got {given!r}") from None
    return max(1, available_cores() // jobs)


def visible_devices(environ: dict[str, str] | None = None) -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else every device torch sees."""
    environ = os.environ if environ is None else environ
    if environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [d.strip() for d in environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def device_groups(devices: list[str], gpus_per_run: int, jobs: int) -> list[list[str]]:
    """Disjoint groups of ``gpus_per_run`` devices, at most ``jobs`` of them; ``[[]] * jobs`` without GPUs."""
    if gpus_per_run == 0:
        return [[] for _ in range(jobs)]
    groups = [devices[i : i + gpus_per_run] for i in range(0, len(devices) - gpus_per_run + 1, gpus_per_run)]
    if not groups:
        raise ConfigError(f"gpus_per_run: {gpus_per_run} GPUs per run, but {len(devices)} visible ({devices})")
    return groups[:jobs]


def run_label(run: RunConfig, sweep_dir: Path) -> str:
    """A run's folder relative to the sweep folder, e.g. ``plw=0/seed=1``."""
    return run.run_dir.relative_to(sweep_dir).as_posix()


def child_command(
    config_file: Path, gpus: int, accelerate_config: str | None = None, untrained: Path | None = None
) -> list[str]:
    """The command that trains one run (resuming it when it was interrupted)."""
    train = ["-m", "plw", "train", str(config_file), "--resume", "--no-progress"]
    if untrained is not None:
        train += ["--untrained", str(untrained)]
    if gpus <= 1:
        return [sys.executable, *train]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(gpus)]
    if accelerate_config:
        launch += ["--config_file", accelerate_config]
    return [*launch, *train]


def child_environment(threads: int, devices: list[str] | None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    return env


@dataclass
class _Running:
    label: str
    process: subprocess.Popen
    devices: list[str]
    log: Path
    started: float = field(default_factory=time.monotonic)


def stop_processes(processes: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGTERM each process group, then SIGKILL those still alive after ``grace_s`` seconds."""
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(process, signal.SIGKILL)  # also ends what the run left behind in its group
        process.wait()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # started with start_new_session: its group id is its pid
    except (ProcessLookupError, PermissionError):
        pass


def _last_line(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def run_parallel(
    runs: list[RunConfig],
    sweep_dir: Path,
    jobs: int,
    gpus_per_run: int = 0,
    accelerate_config: str | None = None,
    say: Callable[[str], None] = print,
    poll_s: float = 0.2,
    untrained: dict[Path, Path] | None = None,
) -> dict[str, str]:
    """Train ``runs`` as separate processes, ``jobs`` at a time; return ``{run label: reason}`` of failed runs.

    ``untrained`` maps a run folder to the shared untrained evaluation it takes its step-0 line from.
    """
    untrained = untrained or {}
    sweep_dir = Path(sweep_dir)
    groups = device_groups(visible_devices() if gpus_per_run else [], gpus_per_run, jobs)
    threads = threads_per_run(len(groups))
    pending = deque(runs)
    running: list[_Running] = []
    failed: dict[str, str] = {}
    done = 0
    (sweep_dir / LOGS).mkdir(parents=True, exist_ok=True)
    say(
        f"[plw] sweep: {len(runs)} run(s), {len(groups)} at a time, {threads} thread(s) each, logs in {sweep_dir / LOGS}"
    )
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    try:
        while pending or running:
            while pending and len(running) < len(groups):
                run = pending.popleft()
                shared = untrained.get(run.run_dir)
                running.append(_start(run, sweep_dir, groups, running, threads, accelerate_config, shared))
                say(f"[plw] sweep: started {running[-1].label} ({_in_flight(running)})")
            time.sleep(poll_s)
            for job in [j for j in running if j.process.poll() is not None]:
                running.remove(job)
                minutes = (time.monotonic() - job.started) / 60
                if job.process.returncode == 0:
                    done += 1
                    say(f"[plw] sweep: {job.label} finished in {minutes:.1f} min ({_in_flight(running)})")
                else:
                    failed[job.label] = f"exit status {job.process.returncode}: {_last_line(job.log)} (log: {job.log})"
                    say(f"[plw] sweep: {job.label} FAILED, {failed[job.label]}")
        say(f"[plw] sweep: {done} finished, {len(failed)} failed")
    except BaseException:
        say(f"[plw] sweep: interrupted, stopping {len(running)} run(s)")
        stop_processes([job.process for job in running])
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return failed


def _start(
    run: RunConfig,
    sweep_dir: Path,
    groups: list[list[str]],
    running: list[_Running],
    threads: int,
    accelerate_config: str | None,
    untrained: Path | None,
) -> _Running:
    label = run_label(run, sweep_dir)
    stem = label.replace("/", "_")
    config_file = sweep_dir / LOGS / f"{stem}.yaml"
    config_file.write_text(dump_config(run))
    log = sweep_dir / LOGS / f"{stem}.log"
    busy = [job.devices for job in running]
    devices = next(g for g in groups if g not in busy or not g)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            child_command(config_file, len(devices), accelerate_config, untrained),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_environment(threads, devices),
            start_new_session=True,  # Ctrl-C reaches the sweep only; it stops each run's group itself
        )
    return _Running(label, process, devices, log)


def _in_flight(running: list[_Running]) -> str:
    return "in flight: " + (", ".join(job.label for job in running) or "none")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
