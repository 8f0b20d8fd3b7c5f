"""Crash injection for the crash-recovery tests: a callback that SIGKILLs its own process.

Tests add it to a real run with ``--trainer.callbacks+=faults.InjectedFault`` (``kill_at`` in
conftest), and arm it with ``PROJECT_FAULT=<point>:<n>[:<rank>]``: ``after_step`` (after optimizer
step n) or ``after_epoch`` (after epoch n, its checkpoint written), on global rank ``rank``
(default 0), and only on a first attempt (torchrun sets ``TORCHELASTIC_RESTART_COUNT`` on restarts).
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
        point, count, *rank = spec.split(":") if spec else ("", "0")
        self.point, self.count, self.rank = point, int(count), int(rank[0]) if rank else 0

    def _maybe_die(self, trainer: Trainer, point: str, count: int) -> None:
        if self.armed and point == self.point and count == self.count and trainer.global_rank == self.rank:
            os.kill(os.getpid(), signal.SIGKILL)

    # Lightning runs checkpoint callbacks after all others at the end of a batch or an epoch, so
    # the fault strikes at the start of the next batch or epoch: what was saved is on disk.

    def on_train_batch_start(self, trainer: Trainer, *args: Any) -> None:
        self._maybe_die(trainer, "after_step", trainer.global_step)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._maybe_die(trainer, "after_epoch", trainer.current_epoch - 1)
