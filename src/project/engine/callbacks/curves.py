"""Training curves as a PNG picture in the run folder (and in W&B when it is the logger)."""

from pathlib import Path
from typing import Any

import matplotlib
from lightning.pytorch import Callback, LightningModule, Trainer

from project.engine.loggers import log_picture, run_folder
from project.files import write_figure

matplotlib.use("Agg")  # files only: works with no display, on every rank and in CI
import matplotlib.pyplot as plt  # noqa: E402

Series = dict[str, list[tuple[int, float]]]


def plot_training_curves(series: Series, path: Path, title: str = "") -> Path:
    """Loss (left) and accuracy-like metrics (right) against optimizer step: per-step training loss
    as a thin line, epoch values as markers."""
    panels = [("loss", [k for k in series if k.endswith("loss") or k.endswith("loss_step")]),
              ("accuracy", [k for k in series if k.endswith("acc")])]
    panels = [(label, keys) for label, keys in panels if keys]
    figure, axes = plt.subplots(1, max(1, len(panels)), figsize=(6 * max(1, len(panels)), 4), squeeze=False)
    for axis, (label, keys) in zip(axes[0], panels):
        for key in sorted(keys):
            steps, values = zip(*series[key])
            # Step values get a small marker too: a series of one point would otherwise draw nothing
            # and leave an empty entry in the legend.
            style = {"linewidth": 0.8, "alpha": 0.6, "marker": ".", "markersize": 2} if key.endswith("_step") else {"marker": "o", "markersize": 3}
            axis.plot(steps, values, label=key, **style)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_figure(figure, path, dpi=100)
    return path


def is_curve(key: str) -> bool:
    return key.split("/")[0] in ("train", "val") and key.endswith(("loss", "loss_step", "acc"))


class TrainingCurves(Callback):
    """At the end of ``fit``, writes ``training_curves.png``: train and val loss and accuracy
    against the optimizer step.

    Per-step training loss is sampled every ``trainer.log_every_n_steps`` steps; epoch values are
    placed at the step where their epoch ended. Only rank 0 draws.
    """

    def __init__(self, filename: str = "training_curves.png") -> None:
        super().__init__()
        self.filename = filename
        self.series: Series = {}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.series = {}

    def _record(self, trainer: Trainer, keys: list[str]) -> None:
        for key in keys:
            value = trainer.callback_metrics.get(key)
            if value is not None and value.numel() == 1:
                points = self.series.setdefault(key, [])
                if not points or points[-1][0] != trainer.global_step:
                    points.append((trainer.global_step, float(value)))

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            self._record(trainer, ["train/loss_step"])

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, [k for k in trainer.callback_metrics if k.startswith("val/") and is_curve(k)])

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._record(trainer, [k for k in trainer.callback_metrics if k.startswith("train/") and is_curve(k)
                               and not k.endswith("_step")])

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or not self.series:
            return
        path = plot_training_curves(self.series, run_folder(trainer) / self.filename, title=type(pl_module.net).__name__)
        log_picture(trainer.logger, "fit/training_curves", path)
