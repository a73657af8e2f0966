"""Reproducible runs, `plw sweep --jobs N` (separate processes), failed runs, sweep.json merging, kill and rerun."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
import yaml

from plw.cli import main
from tests.conftest import save_tiny_model
from tests.processes import children_deadline, kill_all, kill_tree

TIMING = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory, tokenizer):
    """A tiny saved model and a LoRA config (the adapter's random init is what made runs differ)."""
    root = tmp_path_factory.mktemp("jobs")
    save_tiny_model(root / "model", tokenizer, seed=5)
    return {
        "name": "jobs",
        "model": str(root / "model"),
        "train_data": {"source": "synthetic", "rows": 8, "seed": 1, "people": 4, "fillers": 0},
        "eval_data": {"source": "synthetic", "rows": 6, "seed": 2, "people": 4, "fillers": 0},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": "all-linear"},
        "max_steps": 3,
        "batch_size": 2,
        "eval_steps": 1,
        "learning_rate": 0.01,
        "report_to": [],
        "bf16": False,
        "checkpoints": False,
    }


def metrics(run_dir):
    """Every metric of every evaluation, timings left out."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in TIMING} for line in lines]


def write_config(path, values):
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_the_same_run_twice_is_identical(tiny_lora, tmp_path):
    """Two trainings of one config in one process give every metric and per-row outcome exactly equal (the
    adapter's init, dropout and data order all follow the seed, whatever the process's RNGs did before)."""
    from plw.config import from_dict
    from plw.runner import train_run

    torch.manual_seed(12345)  # whatever state the process is in: the run seeds itself
    first = train_run(from_dict(dict(tiny_lora, output_dir=str(tmp_path / "a"))), progress=False)
    torch.rand(7)
    second = train_run(from_dict(dict(tiny_lora, output_dir=str(tmp_path / "b"))), progress=False)
    assert len(metrics(first)) == 4
    assert metrics(first) == metrics(second)
    assert (first / "predictions.jsonl").read_text() == (second / "predictions.jsonl").read_text()


@pytest.fixture(scope="module")
def one_thread_sweep(tiny_lora, tmp_path_factory):
    """PLW 1 and 0 trained one after another in this process, with 1 torch thread: the reference."""
    root = tmp_path_factory.mktemp("one")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = write_config(root / "one.yaml", dict(tiny_lora, output_dir=str(root)))
        assert main(["sweep", one, "--plw", "1,0", "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "jobs"


def test_jobs_2_equals_jobs_1_and_a_failed_run_is_named(tiny_lora, one_thread_sweep, tmp_path, monkeypatch, capsys):
    """`--jobs 2` (two processes of 1 thread) gives each run exactly the metrics of the in-process sweep at 1
    thread; a run that cannot start fails alone, is named in the report, and the exit status is 1."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    two = write_config(tmp_path / "two.yaml", dict(tiny_lora, output_dir=str(tmp_path / "two")))
    blocked = tmp_path / "two" / "jobs" / "plw=0.5"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a folder: this run cannot start")
    capsys.readouterr()
    with children_deadline(300):
        assert main(["sweep", two, "--plw", "1,0.5,0", "--jobs", "2", "--no-progress"]) == 1
    out = capsys.readouterr()
    assert "in flight: plw=1, plw=0.5" in out.out
    assert "plw=0.5 FAILED" in out.out and "1 run(s) failed: plw=0.5" in out.err
    for value in ("1", "0"):
        assert metrics(tmp_path / "two" / "jobs" / f"plw={value}") == metrics(one_thread_sweep / f"plw={value}")
        assert (tmp_path / "two" / "jobs" / "logs" / f"plw={value}.log").exists()
    report = (tmp_path / "two" / "jobs" / "report.md").read_text()
    failed = report.split("## Failed runs", 1)[1]
    assert "`plw=0.5`" in failed and "plw=0.5.log" in failed
    assert "`plw=1`" not in failed


def test_threads_per_run():
    from plw.launch import available_cores, device_groups, threads_per_run

    assert threads_per_run(2, {"OMP_NUM_THREADS": "3"}) == 3
    assert threads_per_run(1, {}) == available_cores()
    assert threads_per_run(10_000, {}) == 1
    assert device_groups(["0", "1", "2", "3", "4"], 2, 4) == [["0", "1"], ["2", "3"]]
    assert device_groups([], 0, 3) == [[], [], []]
    with pytest.raises(ValueError, match="2 GPUs per run, but 1 visible"):
        device_groups(["0"], 2, 1)


def test_sweep_json_merges_invocations(tmp_path):
    """Sweeps into one folder (e.g. --seeds 1 and --seeds 2, side by side) add to sweep.json, never replace it."""
    from concurrent.futures import ThreadPoolExecutor

    from plw.sweep import merge_sweep_file

    calls = [(f"plw sweep c.yaml --seeds {s}", [1.0, 0.0], [s]) for s in range(1, 9)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda c: merge_sweep_file(tmp_path, *c), calls))
    merged = json.loads((tmp_path / "sweep.json").read_text())
    assert sorted(merged["seeds"]) == list(range(1, 9))
    assert merged["values"] == [1.0, 0.0]
    assert sorted(merged["commands"]) == sorted(c[0] for c in calls)
    merge_sweep_file(tmp_path, "plw sweep c.yaml --plw 0.5 --seeds 1", [0.5], [1])
    merged = json.loads((tmp_path / "sweep.json").read_text())
    assert merged["values"] == [1.0, 0.0, 0.5] and merged["command"].endswith("--plw 0.5 --seeds 1")


def tree_digest(folder):
    return {
        p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_killed_sweep_resumes_without_retraining_finished_runs(tiny_lora, tmp_path, monkeypatch, capsys):
    """A sweep stopped during its second run (after a checkpoint), started again with the same command, leaves the
    finished run's files byte for byte, resumes the second from its checkpoint, and ends with every evaluation."""
    from plw.trainer import PLWTrainer

    config = write_config(
        tmp_path / "c.yaml", dict(tiny_lora, output_dir=str(tmp_path), checkpoints=True, max_steps=4, eval_steps=2)
    )
    args = ["sweep", config, "--plw", "1,0", "--no-progress"]
    step = PLWTrainer.training_step

    def killed_at_step_3(self, *a, **k):
        if self.prompt_loss_weight == 0.0 and self.state.global_step == 2:
            raise KeyboardInterrupt("killed")
        return step(self, *a, **k)

    monkeypatch.setattr(PLWTrainer, "training_step", killed_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    monkeypatch.setattr(PLWTrainer, "training_step", step)
    sweep = tmp_path / "jobs"
    kept = tmp_path / "kept-checkpoint"
    shutil.copytree(sweep / "plw=0" / "checkpoints" / "checkpoint-2", kept)  # the rerun removes it when done
    finished = tree_digest(sweep / "plw=1")
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "plw=1 already finished, skipped" in out
    assert "resuming" in out and "from checkpoint-2" in out
    assert tree_digest(sweep / "plw=1") == finished
    assert [m["step"] for m in metrics(sweep / "plw=0")] == [0, 2, 4]
    # plw eval of the checkpoint the stopped run left gives that run's own evaluation at step 2, exactly.
    assert (
        main(["eval", str(sweep / "plw=0" / "config.yaml"), "--checkpoint", str(kept), "--out", str(tmp_path / "ev")])
        == 0
    )
    (scored,) = metrics(tmp_path / "ev")
    own = metrics(sweep / "plw=0")[1]
    assert scored["step"] == 2 and scored["plw"] == 0.0
    assert {k: v for k, v in scored.items() if k.startswith("eval_")} == {
        k: v for k, v in own.items() if k.startswith("eval_")
    }
    (rows,) = [json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert rows == [json.loads(x) for x in (sweep / "plw=0" / "predictions.jsonl").read_text().splitlines()][1]


def test_untrained_evaluation_ran_once(tiny_lora, tmp_path, monkeypatch):
    """A sweep of two PLWs evaluates the untrained model once; each run equals the run trained alone, which
    evaluates itself at step 0 (every metric of every evaluation: skipping that evaluation leaves the random stream
    of training, e.g. the adapter's dropout, as it was)."""
    from plw.config import from_dict
    from plw.runner import train_run
    from plw.trainer import PLWTrainer

    loop = PLWTrainer.evaluation_loop
    at_step = []

    def counted(self, *a, **k):
        at_step.append(self.state.global_step)
        return loop(self, *a, **k)

    monkeypatch.setattr(PLWTrainer, "evaluation_loop", counted)
    config = write_config(tmp_path / "c.yaml", dict(tiny_lora, output_dir=str(tmp_path)))
    assert main(["sweep", config, "--plw", "1,0", "--no-progress"]) == 0
    assert at_step == [0, 1, 2, 3, 1, 2, 3]
    sweep = tmp_path / "jobs"
    assert (sweep / "shared" / "untrained" / "seed=42" / "metrics.jsonl").exists()
    alone = dict(tiny_lora, output_dir=str(tmp_path / "alone"), prompt_loss_weight=0.0)
    assert metrics(train_run(from_dict(alone), progress=False)) == metrics(sweep / "plw=0")
    shared = metrics(sweep / "plw=0")[0]
    at_1 = metrics(sweep / "plw=1")[0]  # weighted at PLW 1: the full loss (summed in another order)
    assert at_1["eval_weighted_loss"] == pytest.approx(at_1["eval_full_loss"], rel=1e-6)
    assert shared["eval_weighted_loss"] == pytest.approx(shared["eval_completion_loss"], rel=1e-6)
    assert shared["eval_weighted_loss"] != pytest.approx(shared["eval_full_loss"], rel=1e-3)
    report = (sweep / "report.md").read_text()
    assert "shared" not in report.split("## Per run", 1)[1].split("\n## ", 1)[0]  # not taken for a run


def test_ctrl_c_stops_every_run(tiny_lora, tmp_path):
    """SIGINT to `plw sweep --jobs 2` ends both training processes (each in its own session) and the sweep."""
    import os
    import signal
    import subprocess
    import sys
    import time

    psutil = pytest.importorskip("psutil")
    config = write_config(tmp_path / "c.yaml", dict(tiny_lora, output_dir=str(tmp_path), max_steps=10_000))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    sweep = subprocess.Popen(
        [sys.executable, "-m", "plw", "sweep", config, "--plw", "1,0", "--jobs", "2", "--no-progress"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # As from a terminal: a shell starts background jobs (`make test &`) with SIGINT ignored, children inherit
        # that, and Python then keeps ignoring it, so without this the SIGINT below would never arrive.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    children, trees = [], []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(children) < 2:
            children = psutil.Process(sweep.pid).children()
            time.sleep(0.2)
        assert len(children) == 2, "the two runs did not start"
        trees = [c for child in children for c in [child, *child.children(recursive=True)]]
        time.sleep(2)  # into their imports / training
        sweep.send_signal(signal.SIGINT)
        out, _ = sweep.communicate(timeout=60)
        assert sweep.returncode != 0
        assert b"interrupted, stopping 2 run(s)" in out
        gone, alive = psutil.wait_procs(trees, timeout=30)
        assert not alive
    finally:  # whatever failed, leave nothing running
        kill_tree(sweep.pid)
        kill_all(trees)


def test_submitit_local_trains_and_reports(tiny_lora, one_thread_sweep, tmp_path, monkeypatch, capsys):
    """`--launcher submitit-local --no-wait` submits one job per run and returns; the same command again waits for
    the jobs and writes the report. Each run equals the in-process one at 1 thread."""
    pytest.importorskip("submitit")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = write_config(tmp_path / "c.yaml", dict(tiny_lora, output_dir=str(tmp_path)))
    args = ["sweep", config, "--plw", "1,0", "--launcher", "submitit-local", "--no-progress"]
    capsys.readouterr()
    with children_deadline(300):  # the jobs run as children of this process
        assert main([*args, "--no-wait"]) == 0
        out = capsys.readouterr().out
        assert "submitted 2 job(s) (submitit-local): plw=1, plw=0" in out
        assert "queued or running; run the same command again" in out
        assert main(args) == 0
    sweep = tmp_path / "jobs"
    out = capsys.readouterr().out
    assert "submitted" not in out  # the jobs of the first call were collected, not submitted again
    assert (sweep / "report.md").exists()
    jobs = json.loads((sweep / "logs" / "submitit" / "jobs.json").read_text())
    assert sorted(jobs) == ["plw=0", "plw=1"]
    for value in ("1", "0"):
        assert json.loads((sweep / f"plw={value}" / "state.json").read_text())["status"] == "finished"
        assert metrics(sweep / f"plw={value}") == metrics(one_thread_sweep / f"plw={value}")


def test_sbatch_lines():
    from plw.cluster import sbatch_parameters
    from plw.config import ConfigError

    assert sbatch_parameters(["--qos=high", "#SBATCH --constraint=a100"]) == {"qos": "high", "constraint": "a100"}
    with pytest.raises(ConfigError, match="expected '--key=value'"):
        sbatch_parameters(["--exclusive"])
