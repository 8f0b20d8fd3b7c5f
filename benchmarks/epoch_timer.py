"""The benchmarks' epoch clock: a callback that times each epoch of a real run.

Add it to a `train.py` run with `--trainer.callbacks+=epoch_timer.EpochTimer` and `benchmarks/` on
`PYTHONPATH`, or pass it to a `Trainer`."""

import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class EpochTimer(Callback):
    """Logs ``bench/epoch_s`` (training part of the epoch, without validation) and
    ``bench/samples_per_s`` (over all ranks) once per epoch.

    The clock runs from the start of the epoch to the end of its last training batch, so it
    includes data loading, forward, backward, the optimizer and any gradient all-reduce.
    ``epoch_wall_seconds`` (kept in memory, for benchmarks) runs from one epoch's start to the
    next one's: validation, checkpointing and logging included.
    """

    def __init__(self) -> None:
        super().__init__()
        self._start = 0.0
        self._end = 0.0
        self._samples = 0
        self.epoch_seconds: list[float] = []
        self.epoch_wall_seconds: list[float] = []

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        now = time.perf_counter()
        if self._start:
            self.epoch_wall_seconds.append(now - self._start)
        self._start = self._end = now
        self._samples = 0

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._start:
            self.epoch_wall_seconds.append(time.perf_counter() - self._start)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._samples += len(batch[0]) * trainer.world_size
        self._end = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if pl_module.device.type == "cuda":  # GPU work is queued: the epoch ends when the queue is done
            torch.cuda.synchronize(pl_module.device)
            self._end = time.perf_counter()
        seconds = self._end - self._start
        self.epoch_seconds.append(seconds)
        if seconds <= 0 or trainer.logger is None or trainer.sanity_checking:
            return
        trainer.logger.log_metrics(
            {"bench/epoch_s": seconds, "bench/samples_per_s": self._samples / seconds, "epoch": trainer.current_epoch},
            step=trainer.global_step,
        )
