"""Stopping cleanly when a scheduler or a user asks: SIGTERM, SLURM's signal before the time
limit, and Ctrl-C (SIGINT).

Lightning 2.6 handles both inside the signal handler, at whatever point of a step the signal
arrives. On SIGTERM it exits with status 0 having saved nothing, and under DDP its handler
broadcasts from rank 0 while the other ranks may be inside another collective, which deadlocks.
On SLURM's requeue signal it writes ``hpc_ckpt_N.ckpt`` to ``default_root_dir``, where
``--resume auto`` does not look, and leaves it there for any later job in that folder to continue.

On Ctrl-C Lightning stops at once and exits 1 with no checkpoint. During ``predict`` it logs a
SIGTERM and carries on, writing every prediction and exiting 0.

``StopOnSignal`` replaces those handlers for the training loop (Lightning puts its originals back
when training ends; this callback puts back the SIGINT one). A second Ctrl-C stops at once, as
Ctrl-C usually does. The handler only notes the signal; after the next optimizer step, every rank
learns whether any rank received one, all write ``interrupted.ckpt`` beside the run's other
checkpoints, rank 0 asks SLURM to requeue the job if the signal was SLURM's, and the run ends with
exit status 128 + the signal's number. ``fit --resume auto`` continues from that checkpoint as if
nothing had happened. A signal during ``predict`` ends it after the current batch, with 128 + the
signal's number and no ``predictions.csv`` (a partial one would pass for a whole one).
"""

import os
import signal
import subprocess
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer

INTERRUPTED_CHECKPOINT = "interrupted.ckpt"


class Interrupted(Exception):
    """Training stopped on a signal, with a checkpoint to continue from. Exit status 128 + signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes (array jobs: ``<job>_<task>``); ``None`` outside SLURM."""
    if not SLURMEnvironment.detect():
        return None
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class StopOnSignal(Callback):
    """Saves a checkpoint and stops at the next optimizer step after SIGTERM or SLURM's requeue
    signal (``#SBATCH --signal=SIGUSR1@90``), requeueing the SLURM job for the latter.
    ``TrainingModule`` (``lightning_modules.base``) adds it to every run."""

    def __init__(self) -> None:
        super().__init__()
        self._received = 0
        self._last_step = -1
        self._sigint_handler: Any = None  # the one before ours, put back at teardown

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning installs its own handlers just before this hook; these take their place.
        self._received, self._last_step = 0, trainer.global_step
        self._listen()
        if SLURMEnvironment.detect():
            signal.signal(signal.SIGUSR1, self._note)  # scripts/slurm.sbatch: --signal=SIGUSR1@90

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._received = 0
        self._listen()

    def _listen(self) -> None:
        signal.signal(signal.SIGTERM, self._note)
        self._sigint_handler = signal.signal(signal.SIGINT, self._note)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._sigint_handler is not None:
            signal.signal(signal.SIGINT, self._sigint_handler)
            self._sigint_handler = None

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self._received == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without waiting for the step
        self._received = self._received or signum

    def on_predict_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        # Each rank decides alone: under DDP the ranks may predict different numbers of batches, so
        # a collective here could wait forever. A scheduler signals every rank; torchrun ends the rest.
        signum = self._received
        if signum:
            raise Interrupted(f"stopped by {signal.Signals(signum).name} during predict, after {batch_idx + 1} batch(es): "
                              "no predictions written", signum)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self._last_step:  # inside a gradient accumulation: no step yet
            return
        self._last_step = trainer.global_step
        signum = self._received
        if trainer.world_size > 1:  # any rank's signal stops every rank: one all-reduce per step
            flag = torch.tensor(float(signum), device=pl_module.device)
            signum = int(trainer.strategy.reduce(flag, reduce_op="max").item())
        if not signum:
            return
        folder = Path(trainer.checkpoint_callback.dirpath) if trainer.checkpoint_callback else Path(trainer.log_dir or ".")
        path = folder / INTERRUPTED_CHECKPOINT
        trainer.save_checkpoint(path)
        message = f"stopped by {signal.Signals(signum).name} after step {trainer.global_step}: saved {path}"
        job = slurm_job_id()
        if job is not None and signum != signal.SIGTERM:
            if trainer.is_global_zero:
                try:
                    requeue = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
                    failure = "" if requeue.returncode == 0 else (requeue.stderr or requeue.stdout).strip()
                except OSError as error:
                    failure = str(error)
                if failure:
                    message += f"; scontrol requeue {job} failed: {failure}"
                else:
                    message += f"; SLURM job {job} requeued, and `fit --resume auto` continues from there"
        else:
            message += "; the same command with --resume auto continues from there"
        raise Interrupted(message, signum)
