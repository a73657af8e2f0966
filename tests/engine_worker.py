"""One process of the engine checks in ``test_engines.py``: several ``plw train`` runs in one launch.

Launched as ``accelerate launch --config_file ENGINE.yaml --num_processes 2 tests/engine_worker.py JOB_DIR`` (DDP,
DeepSpeed ZeRO-2 or ZeRO-3 on CPU processes) or imported by the test for the one-process references.
``JOB_DIR/job.json`` lists runs, each ``{"name", "args", "stop_at"}``: ``args`` go to the ``plw`` command line; with
``stop_at``, every process raises :class:`Interrupted` when optimizer step ``stop_at`` begins (a crash after the
checkpoint of the step before; the next run resumes it). For every training micro-batch, each process records the
optimizer step, the row markers it holds (the ``#N#`` tags the test writes into the prompts, decoded from the
batch) and the batch's sum of target weights; with the process counts seen by the Trainer, accelerate and torch,
this goes to ``JOB_DIR/NAME/rank{R}.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MARKER = re.compile(r"#(\d+)#")


class Interrupted(RuntimeError):
    """Raised on purpose to stop a run mid-training, the same way on every process."""


@contextlib.contextmanager
def recording(records: list[dict[str, Any]], stop_at: dict[str, int | None]) -> Iterator[None]:
    """Within the block, ``PLWTrainer`` records its training batches and logged losses, and stops on request."""
    import torch

    from plw.trainer import PLWTrainer

    compute_loss, training_step, log = PLWTrainer.compute_loss, PLWTrainer.training_step, PLWTrainer.log

    def recording_compute_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            rows = []
            for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True):
                text = self.processing_class.decode(ids[mask.bool()].tolist())
                rows.append(sorted(int(m) for m in MARKER.findall(text)))
            records.append(
                {
                    "step": self.state.global_step,
                    "rows": rows,
                    "weight": float(self.batch_weights(inputs).sum()),
                    "trainer_world_size": self.args.world_size,
                    "accelerate_processes": self.accelerator.num_processes,
                    "torch_world_size": torch.distributed.get_world_size()
                    if torch.distributed.is_initialized()
                    else 1,
                    "distributed_type": str(self.accelerator.distributed_type.value),
                }
            )
        return compute_loss(self, model, inputs, *args, **kwargs)

    def stopping_training_step(self, *args, **kwargs):
        if stop_at["step"] is not None and self.state.global_step == stop_at["step"]:
            raise Interrupted(f"stopped on purpose at step {self.state.global_step}")
        return training_step(self, *args, **kwargs)

    def recording_log(self, logs, *args, **kwargs):
        if "loss" in logs:
            records.append({"logged_step": self.state.global_step, "loss": float(logs["loss"])})
        return log(self, logs, *args, **kwargs)

    PLWTrainer.compute_loss = recording_compute_loss
    PLWTrainer.training_step = stopping_training_step
    PLWTrainer.log = recording_log
    try:
        yield
    finally:
        PLWTrainer.compute_loss, PLWTrainer.training_step, PLWTrainer.log = compute_loss, training_step, log


def run_all(job_dir: Path) -> None:
    """Run every entry of ``job_dir/job.json`` in order; write each run's records per process."""
    from plw.cli import main
    from plw.distributed import process_rank

    job = json.loads((job_dir / "job.json").read_text())
    records: list[dict[str, Any]] = []
    stop_at: dict[str, int | None] = {"step": None}
    with recording(records, stop_at):
        for run in job["runs"]:
            records.clear()
            stop_at["step"] = run.get("stop_at")
            try:
                code = main(run["args"])
            except Interrupted:
                code = "interrupted"
            out = job_dir / run["name"]
            out.mkdir(parents=True, exist_ok=True)
            (out / f"rank{process_rank()}.json").write_text(json.dumps({"exit": code, "records": records}))


def skip_shared_memory_op() -> None:
    """Let DeepSpeed's CPU collectives use gloo instead of its shared-memory C++ op, as it does off Linux.

    The op is compiled at first use (76 s on the 2-core test machine, once per machine); the collectives plw's
    checks depend on are the same torch.distributed calls either way.
    """
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        return
    import importlib

    # by module name: the attribute ``deepspeed.comm.torch`` is the torch package, which that module imports
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


if __name__ == "__main__":
    skip_shared_memory_op()
    run_all(Path(sys.argv[1]))
