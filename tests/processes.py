"""Tests that start processes: a free port, and a timeout that ends the whole process tree.

Launchers (torchrun, ``accelerate launch``, ``plw sweep --jobs``) start their workers in new sessions, so ending the
launcher's process group leaves the workers running: these helpers walk the tree with psutil instead.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant."""
    import psutil

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    kill_all([*parent.children(recursive=True), parent])


def kill_all(processes: list) -> None:
    """SIGKILL these psutil processes (those already gone are skipped) and wait for them."""
    import psutil

    for proc in processes:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=10)


def run_tree(cmd: list[str], env: dict[str, str], timeout: float, what: str, cwd: Path | None = None) -> str:
    """Run ``cmd`` in a new session and return its combined output; fail the test on a non-zero exit, or on a
    timeout after killing the whole process tree."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out, _ = proc.communicate()
        pytest.fail(f"{what} timed out after {timeout} s (hang?):\n{out[-4000:]}")
    assert proc.returncode == 0, f"{what} failed:\n{out[-6000:]}"
    return out


@contextmanager
def children_deadline(seconds: float) -> Iterator[None]:
    """Kill every descendant of this test process if the block is still running after ``seconds``: an in-process
    ``plw sweep --jobs`` then sees its runs fail and returns instead of waiting for a hung child forever."""
    import psutil

    fired = threading.Event()

    def fire() -> None:
        fired.set()
        kill_all(psutil.Process().children(recursive=True))

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
    if fired.is_set():
        pytest.fail(f"the processes started by this test were still running after {seconds} s and were killed")
