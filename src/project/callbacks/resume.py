"""What a checkpoint needs beyond Lightning's own state for an exact resume, and a test-only fault."""

import os
import random
import signal
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from project.errors import UserError

FAULT_VARIABLE = "PROJECT_FAULT"


class RandomState(Callback):
    """Saves the random number generators (torch, CUDA, NumPy, Python) in every checkpoint and
    restores them when training resumes, so augmentation and dropout continue exactly as in an
    uninterrupted run; Lightning restores weights, optimizer, schedulers, epoch and step, but not
    these. The data order needs nothing here: samplers draw a seeded permutation per epoch, and
    the data module records how far into an epoch a checkpoint was written (``BaseDataModule.state_dict``).

    The states are put back at the start of training, after the sanity check, whose loaders
    draw from the generator (an uninterrupted run does its check only once, at the start).
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        # Plain tensors, ints and tuples only, so checkpoints still load with weights_only=True.
        kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gauss),
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._pending is None:
            return
        torch.set_rng_state(self._pending["torch"])
        if self._pending["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self._pending["cuda"])
        kind, keys, position, has_gauss, cached_gauss = self._pending["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
        random.setstate(self._pending["python"])
        self._pending = None


class InjectedFault(Callback):
    """Kills this process with SIGKILL at a chosen point, for tests of crash recovery.

    Armed only by the environment variable ``PROJECT_FAULT=<point>:<n>[:<rank>]`` with point
    ``after_step`` (after optimizer step n) or ``after_epoch`` (after epoch n, its checkpoint
    written), on global rank ``rank`` (default 0), and only on a first attempt (torchrun sets
    ``TORCHELASTIC_RESTART_COUNT`` on restarts). The CLI adds it when the variable is set.
    """

    def __init__(self, spec: str) -> None:
        super().__init__()
        point, count, *rank = spec.split(":")
        if point not in ("after_step", "after_epoch"):
            raise ValueError(f"{FAULT_VARIABLE}: unknown point {point!r}")
        self.point, self.count, self.rank = point, int(count), int(rank[0]) if rank else 0

    @staticmethod
    def from_environment() -> "InjectedFault | None":
        spec = os.environ.get(FAULT_VARIABLE)
        if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
            return None
        return InjectedFault(spec)

    def _maybe_die(self, trainer: Trainer, point: str, count: int) -> None:
        if point == self.point and count == self.count and trainer.global_rank == self.rank:
            os.kill(os.getpid(), signal.SIGKILL)

    # Lightning runs checkpoint callbacks after all others at the end of a batch or an epoch, so
    # the fault strikes at the start of the next batch or epoch: what was saved is on disk.

    def on_train_batch_start(self, trainer: Trainer, *args: Any) -> None:
        self._maybe_die(trainer, "after_step", trainer.global_step)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._maybe_die(trainer, "after_epoch", trainer.current_epoch - 1)


class NonFiniteLoss(Callback):
    """Stops training, or skips the update, when a step's gradients hold NaN or inf.

    Checked after DDP has averaged the gradients, so every rank takes the same decision.
    ``stop`` ends the run with a message naming the step (checkpoints written before it stay);
    ``skip`` drops that optimizer step and goes on, counting the skips in ``train/skipped_steps``.
    """

    def __init__(self, action: str = "stop") -> None:
        super().__init__()
        if action not in ("stop", "skip"):
            raise UserError(f"NonFiniteLoss action must be stop or skip, got {action!r}")
        self.action = action
        self.skipped = 0

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # One fused kernel over all gradients; torch.nn.utils.get_total_norm would do the same but
        # first probes the CUDA driver on every call, which costs more than a small net's step.
        if not grads or bool(torch.stack(torch._foreach_norm(grads)).isfinite().all()):
            return
        where = f"step {trainer.global_step} (epoch {trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx})"
        if self.action == "stop":
            raise UserError(
                f"the loss or its gradients are NaN/inf at {where}: lower the learning rate, check the data "
                "for NaN/inf, or skip such steps with the NonFiniteLoss callback's action: skip"
            )
        self.skipped += 1
        optimizer.zero_grad(set_to_none=True)  # optimizers leave parameters without gradients alone
        rank_zero_info(f"skipped the update at {where}: NaN/inf gradients ({self.skipped} skipped so far)")
        pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)
