"""Console output that stays readable where there is no terminal (CI logs, files, pipes)."""

import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count
from rich.console import Console
from rich.table import Table


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
        # Counted from 0, as in checkpoint names (best-epoch=00-...) and Lightning's progress bar.
        total = f" of {trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        seconds = time.perf_counter() - self._start
        rank_zero_info(f"epoch {trainer.current_epoch} ({trainer.current_epoch + 1}{total})  {format_metrics(metrics)}  ({seconds:.1f} s)")


class ParameterSummary(ModelSummary):
    """Lightning's table of the model's layers and their parameter counts, without the columns and
    lines that say nothing here: FLOPs (not measured, always 0) and train/eval mode."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        columns = [(name, values) for name, values in summary_data if name not in ("Mode", "FLOPs")]
        table = Table(*(name or " " for name, _ in columns))
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        console = Console()
        console.print(table)
        frozen = total_parameters - trainable_parameters
        console.print(
            f"Parameters: {get_human_readable_count(trainable_parameters)} trainable, {get_human_readable_count(frozen)} frozen,"
            f" {get_formatted_model_size(model_size)} MB"
        )
