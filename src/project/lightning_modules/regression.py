"""Regression: real-valued targets with MSE, L1, SmoothL1 or Huber loss."""

from typing import Any

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from project.lightning_modules.base import TrainingModule
from project.lightning_modules.losses import REGRESSION_LOSSES, build_loss
from project.lightning_modules.schedules import LRSchedule
from project.lightning_modules.speed import SpeedOptions


class RegressionModule(TrainingModule):
    """Trains a net whose outputs are real values; logs ``{train,val,test}/{loss,mse,mae}``."""

    def __init__(
        self,
        net: nn.Module,
        loss: str = "mse",
        huber_delta: float = 1.0,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_schedule: LRSchedule | None = None,
        speed: SpeedOptions | None = None,
    ) -> None:
        super().__init__(net, optimizer, lr_schedule, speed)
        self.save_hyperparameters(ignore=["net"])
        self.loss_fn = build_loss(loss, REGRESSION_LOSSES, huber_delta=huber_delta)
        metrics = MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError()}, compute_groups=False)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def evaluate(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, target = batch[0], batch[1].float()
        preds = self(x).reshape(target.shape)
        return self.loss_fn(preds, target), preds, target

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """Return ``index`` and ``pred`` (the net's outputs) per sample."""
        return {"index": batch[1], "pred": self(batch[0])}
