"""Small helpers for runs started by ``accelerate launch`` / ``torchrun`` with several processes.

plw has no distributed layer of its own: accelerate and the ``Trainer`` start the process group and wrap the model
(DDP, FSDP, DeepSpeed). These helpers only answer "which process is this?" before the ``Trainer`` exists (so that
one process writes the run files) and which rows of the last evaluation batch are real.
"""

from __future__ import annotations

import os

import torch

# Rank variables set by torchrun / accelerate launch / the deepspeed launcher, and by MPI launchers.
_RANK_VARS = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _first_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return default


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def process_rank() -> int:
    """Global rank of this process: from the process group once it exists, else from the launcher's environment."""
    if _initialized():
        return torch.distributed.get_rank()
    return _first_int(_RANK_VARS, 0)


def world_size() -> int:
    """Number of processes of the run (1 when not launched with several)."""
    if _initialized():
        return torch.distributed.get_world_size()
    return _first_int(_SIZE_VARS, 1)


def is_main_process() -> bool:
    """True on the one process that writes run files, prints summaries and shows progress bars (global rank 0)."""
    return process_rank() == 0


def real_rows_of_last_batch(batch_size: int, process_index: int, remainder: int) -> torch.Tensor:
    """Boolean ``[batch_size]``: which rows of this process's last evaluation batch are real rather than repeats.

    So that every process runs the same number of equal batches, accelerate completes the last one with rows from
    the start of the dataset. Laid end to end in process order, the first ``remainder`` rows of that last global
    batch are real (the rule of accelerate's ``gather_for_metrics``), so row ``j`` of process ``r`` is real when
    ``r * batch_size + j < remainder``. ``remainder`` is ``len(dataset) % (batch_size * processes)``; 0 means no
    repeats.

    >>> real_rows_of_last_batch(2, 1, 3).tolist()   # 7 rows, batches of 2, 2 processes: [4, 5 | 6, 0]
    [True, False]
    """
    if remainder <= 0:
        return torch.ones(batch_size, dtype=torch.bool)
    return process_index * batch_size + torch.arange(batch_size) < remainder
