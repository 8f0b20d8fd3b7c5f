"""Fault injection for the crash-recovery tests: a callback that signals its own process, or makes
one rank's gradients infinite.

Tests add it to a real run with ``--trainer.callbacks+=faults.InjectedFault`` (``kill_at`` in
conftest), and arm it with ``PROJECT_FAULT=<point>:<n>[:<rank>[:<signal>[:parent]]]``:

- ``after_step`` (after optimizer step n) or ``after_epoch`` (after epoch n, its checkpoint
  written): send ``signal`` (default SIGKILL) to this process, or to its parent (torchrun);
- ``inside_window`` (on the second batch of the accumulation window after optimizer step n):
  send ``signal`` as above, with gradients accumulated that no step has taken yet;
- ``inf_gradient``: after the backward pass of step n, fill this rank's gradients with inf;
- ``predict_batch``: before predict batch n, send ``signal`` as above;

on global rank ``rank`` (default 0), and only on a first attempt (torchrun sets
``TORCHELASTIC_RESTART_COUNT`` on restarts).
"""

import os
import signal
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

FAULT_VARIABLE = "PROJECT_FAULT"


class InjectedFault(Callback):
    def __init__(self) -> None:
        super().__init__()
        spec = os.environ.get(FAULT_VARIABLE, "")
        self.armed = bool(spec) and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        point, count, *rest = spec.split(":") if spec else ("", "0")
        self.point, self.count = point, int(count)
        self.rank = int(rest[0]) if rest else 0
        self.signal = signal.Signals[rest[1]] if len(rest) > 1 else signal.SIGKILL
        self.target = os.getppid if rest[2:] == ["parent"] else os.getpid
        self._batches_since_step, self._step = 0, -1

    def _fires(self, trainer: Trainer, point: str, count: int) -> bool:
        if self.armed and point == self.point and count == self.count and trainer.global_rank == self.rank:
            self.armed = False
            return True
        return False

    # Lightning runs checkpoint callbacks after all others at the end of a batch or an epoch, so
    # the fault strikes at the start of the next batch or epoch: what was saved is on disk.

    def on_train_batch_start(self, trainer: Trainer, *args: Any) -> None:
        self._batches_since_step = self._batches_since_step + 1 if trainer.global_step == self._step else 0
        self._step = trainer.global_step
        if self._fires(trainer, "after_step", trainer.global_step):
            os.kill(self.target(), self.signal)
        if self._batches_since_step == 1 and self._fires(trainer, "inside_window", trainer.global_step):
            os.kill(self.target(), self.signal)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._fires(trainer, "after_epoch", trainer.current_epoch - 1):
            os.kill(self.target(), self.signal)

    def on_predict_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                               dataloader_idx: int = 0) -> None:
        if self._fires(trainer, "predict_batch", batch_idx):
            os.kill(self.target(), self.signal)

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._fires(trainer, "inf_gradient", trainer.global_step):
            for parameter in pl_module.parameters():
                if parameter.grad is not None:
                    parameter.grad.fill_(float("inf"))


class StepWeights(Callback):
    """Saves the net's weights at the start of training and after every optimizer step, to
    ``$PROJECT_STEP_WEIGHTS`` when training ends (tests of what is averaged or clipped)."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[dict[str, Any]] = []
        self._step = -1

    def _keep(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_step != self._step:
            self._step = trainer.global_step
            self.steps.append({k: v.detach().clone() for k, v in pl_module.net.named_parameters()})

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._keep(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self._keep(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        import torch

        torch.save(self.steps, os.environ["PROJECT_STEP_WEIGHTS"])
