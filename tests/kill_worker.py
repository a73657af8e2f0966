"""Run `plw train` or `plw sweep` in a subprocess and SIGKILL it mid-training (used by test_robustness.py).

    python tests/kill_worker.py KILL_AT_STEP KILL_AT_PLW plw-args...

The process kills itself with SIGKILL (no cleanup, no atexit) when a training step starts at optimizer step
KILL_AT_STEP of the run whose prompt_loss_weight is KILL_AT_PLW: exactly what a crash or an OOM kill leaves.
"""

import os
import signal
import sys

import plw.trainer
from plw.cli import main

kill_step, kill_plw = int(sys.argv[1]), float(sys.argv[2])
original = plw.trainer.PLWTrainer.training_step


def training_step(self, *args, **kwargs):
    if self.state.global_step == kill_step and self.prompt_loss_weight == kill_plw:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args, **kwargs)


plw.trainer.PLWTrainer.training_step = training_step
sys.exit(main(sys.argv[3:]))
