"""What every training module shares: the wrapped net, the optimizer and the learning-rate schedule."""

import math
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric, MetricCollection

from project.errors import UserError
from project.lightning_modules.schedules import LRSchedule, build_schedulers
from project.lightning_modules.speed import SpeedOptions


class TrainingModule(LightningModule):
    """Wraps any ``nn.Module`` from ``project.nets`` (or elsewhere) with an optimizer and a schedule.

    Subclasses add the loss and the metrics: they implement ``evaluate`` and set
    ``train_metrics``, ``val_metrics`` and ``test_metrics`` (prefixed ``MetricCollection``s).
    Epoch losses and metrics are averaged per sample over the whole epoch and across ranks under
    DDP (torchmetrics states are summed over ranks once, at epoch end); ``train/loss_step`` is this
    rank's batch loss. The optimizer is any ``torch.optim`` class given by ``class_path`` in the
    config; it only receives parameters that require gradients, so frozen layers cost nothing.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_schedule: LRSchedule | None = None,
        speed: SpeedOptions | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.lr_schedule = lr_schedule or LRSchedule()
        self.speed = speed or SpeedOptions()
        self._speed_applied = False
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.train_metrics: MetricCollection
        self.val_metrics: MetricCollection
        self.test_metrics: MetricCollection

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` around every hook, ~40 times a training step; nn.Module's
        # __setattr__ checks parameters, buffers and submodules each time. A string needs none of that.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def evaluate(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(loss, predictions, targets)`` for a batch, in the form the metrics take."""
        raise NotImplementedError

    # Lightning's `self.log` costs about 0.5 ms a call on CPU, more than a small net's whole step.
    # Metric objects are updated every step but handed to `self.log` once per epoch (Lightning keeps
    # the reference, computes and resets them at epoch end); the step loss is logged only on the
    # steps where Lightning writes to the logger.

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, preds, target = self.evaluate(batch)
        self.train_loss.update(loss.detach(), weight=len(target))
        self.train_metrics.update(preds, target)
        if batch_idx == 0:
            self.log("train/loss", self.train_loss, on_step=False, on_epoch=True)
            self.log_dict(self.train_metrics, on_step=False, on_epoch=True, prog_bar=True)
        if self._logger_writes_this_step():
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def _logger_writes_this_step(self) -> bool:
        connector = getattr(self.trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "val", self.val_loss, self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "test", self.test_loss, self.test_metrics)

    def _evaluation_step(
        self, batch: Any, batch_idx: int, stage: str, mean_loss: MeanMetric, metrics: MetricCollection
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss, preds, target = self.evaluate(batch)
        mean_loss.update(loss, weight=len(target))
        metrics.update(preds, target)
        if batch_idx == 0:  # every rank has a first batch, also with uneven shards under DDP
            self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=True)
            self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)
        return preds, target

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The logger's run (a W&B run id, a CSV version): `fit --ckpt_path` continues the same W&B run.
        version = (getattr(self.logger, "run_id", None) or self.logger.version) if self.logger is not None else None
        if isinstance(version, (str, int)):  # not fast_dev_run's placeholder logger
            checkpoint["logger_version"] = version

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Name a checkpoint of another model plainly, before Lightning's long key-mismatch dump."""
        saved = set(checkpoint.get("state_dict", {}))
        own = set(self.state_dict())
        missing, foreign = sorted(own - saved), sorted(saved - own)
        if missing or foreign:
            raise UserError(
                f"the checkpoint was saved from a different model: {len(missing)} of this model's tensors are not in it"
                + (f" (e.g. {missing[0]})" if missing else "")
                + f" and {len(foreign)} of its tensors are not this model's" + (f" (e.g. {foreign[0]})" if foreign else "")
            )

    def configure_model(self) -> None:
        # Lightning calls this on every device before fit/validate/test/predict, possibly more than once.
        if not self._speed_applied:
            self.speed.apply_to_net(self.net)
            self._speed_applied = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.speed.apply_to_input(x))

    def configure_optimizers(self) -> Any:
        return self._with_schedule(self.optimizer_factory([p for p in self.parameters() if p.requires_grad]))

    def _with_schedule(self, optimizer: torch.optim.Optimizer) -> Any:
        """The optimizer with the configured lr schedule, in the form ``configure_optimizers`` returns."""
        if self.lr_schedule.name == "none" and not self.lr_schedule.warmup_epochs:
            return optimizer
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs < 1:
            raise UserError("an lr schedule is defined in epochs: set trainer.max_epochs")
        schedulers = build_schedulers(optimizer, self.lr_schedule, self._steps_per_epoch(), max_epochs)
        return [optimizer], schedulers

    def _steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch on this rank (after ``limit_train_batches`` and accumulation)."""
        self.trainer.estimated_stepping_batches  # noqa: B018  (sets up the train loader and its length)
        batches = self.trainer.num_training_batches
        if math.isinf(batches):
            raise UserError("an lr schedule needs a train loader with a length (the dataset has none)")
        return max(1, math.ceil(batches / self.trainer.accumulate_grad_batches))
