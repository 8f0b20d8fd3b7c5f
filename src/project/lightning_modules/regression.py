"""Regression: real-valued targets with MSE, L1, SmoothL1 or Huber loss."""

from typing import Any

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from project.engine.data import ProjectDataModule
from project.engine.schedules import LRSchedule
from project.engine.sizing import NetFactory
from project.engine.speed import SpeedOptions
from project.lightning_modules.base import TrainingModule
from project.lightning_modules.losses import REGRESSION_LOSSES, build_loss, per_sample


class RegressionModule(TrainingModule):
    """Trains a net whose outputs are real values; logs ``{train,val,test}/{loss,mse,mae}``.

    Args:
        net: the net, without its number of outputs and input shape (see ``NetFactory``).
        num_outputs: leave it out to take the number of target columns from the data.
        input_shape: the shape of one input; leave it out to take it from the data.
        loss: ``mse``, ``l1``, ``smooth_l1``, ``huber`` or any ``nn.Module`` loss by ``class_path``.
        huber_delta: the threshold of ``smooth_l1`` and ``huber``.
        tta: ``hflip``: test, predict and export average the outputs for each image and its mirror image.
    """

    def __init__(
        self,
        net: NetFactory,
        num_outputs: int | None = None,
        input_shape: list[int] | None = None,
        loss: str | nn.Module = "mse",
        huber_delta: float = 1.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_schedule: LRSchedule = LRSchedule(),  # noqa: B008  (read-only; shown whole by --print_config)
        speed: SpeedOptions = SpeedOptions(),  # noqa: B008
        tta: str | None = None,
    ) -> None:
        super().__init__(net, optimizer, lr_schedule, speed, tta)
        self.save_hyperparameters()  # with the net's config: a checkpoint rebuilds its own net
        self.loss_fn = build_loss(loss, REGRESSION_LOSSES, huber_delta=huber_delta)
        if num_outputs is not None and input_shape is not None:
            self.build_net(num_outputs, input_shape)

    def outputs_for(self, datamodule: ProjectDataModule) -> tuple[int | None, str]:
        return datamodule.num_targets, f"{datamodule.num_targets} target column(s)"

    def build_metrics(self, outputs: int) -> None:
        metrics = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()}, compute_groups=False)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def evaluate(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        target = target.float()
        preds = self(x).reshape(target.shape)
        return per_sample(self.loss_fn(preds, target)), preds, target

    def export_outputs(self) -> dict[str, Any]:
        return {"task": "regression", "kind": "values", "outputs": self.net_sizes[0] if self.net_sizes else None}

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """Return ``pred`` (the net's outputs) per sample of the batch's inputs (``batch[0]``)."""
        return {"pred": self(batch[0])}
