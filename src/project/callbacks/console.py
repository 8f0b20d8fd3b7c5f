"""Console output that stays readable where there is no terminal (CI logs, files, pipes)."""

import time

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info


def format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{key} {value:.4g}" for key, value in sorted(metrics.items()))


class EpochLines(Callback):
    """One plain line per epoch with its metrics and duration, when no progress bar is shown.

    The CLI turns the progress bar off by default when stdout is not a terminal (CI logs, files,
    pipes), where a live bar prints nothing until the run ends; these lines take its place.
    """

    def __init__(self) -> None:
        super().__init__()
        self._start = 0.0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()  # an epoch resumed in its middle gets no epoch-start call

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.progress_bar_callback is not None:
            return
        metrics = {
            key: float(value) for key, value in trainer.callback_metrics.items()
            if value.numel() == 1 and not key.endswith("_step") and not key.startswith("perf/")
        }
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        seconds = time.perf_counter() - self._start
        rank_zero_info(f"epoch {trainer.current_epoch + 1}{total}  {format_metrics(metrics)}  ({seconds:.1f} s)")
