"""What every training module shares: the net, the optimizer, the learning-rate schedule and resuming."""

import math
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric, MetricCollection

from project.errors import UserError
from project.internals import PlainHookNameWrites
from project.lightning_modules.schedules import LRSchedule, build_schedulers
from project.lightning_modules.speed import SpeedOptions
from project.resume import ResumeState

NetFactory = Callable[[int], nn.Module]
"""A net class from ``project.nets`` (or any ``nn.Module``) whose first argument is its number of
outputs. The config gives its other arguments; the module fills in the outputs from the data."""


class TrainingModule(PlainHookNameWrites, LightningModule):
    """Builds a net with as many outputs as the data asks for, and trains it with an optimizer and a schedule.

    Subclasses add the loss and the metrics: they implement ``build`` (net, loss and metrics for a
    given number of outputs), ``outputs_of`` (that number for a data module) and ``evaluate``.
    Epoch losses and metrics are averaged per sample over the whole epoch and across ranks under
    DDP (torchmetrics sums their states over ranks once, at epoch end); ``train/loss_step`` is this
    rank's batch loss. The optimizer is any ``torch.optim`` class given by ``class_path`` in the
    config; it only receives parameters that require gradients, so frozen layers cost nothing.
    """

    flops_per_batch = None  # read by Lightning's ThroughputMonitor; unknown here

    def __init__(
        self,
        net: NetFactory,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_schedule: LRSchedule = LRSchedule(),  # noqa: B008  (read-only; shown whole by --print_config)
        speed: SpeedOptions = SpeedOptions(),  # noqa: B008
    ) -> None:
        super().__init__()
        self.net_factory = net
        self.net: nn.Module | None = None
        self.optimizer_factory = optimizer
        self.lr_schedule = lr_schedule
        self.speed = speed
        self._speed_applied = False
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.train_metrics: MetricCollection
        self.val_metrics: MetricCollection
        self.test_metrics: MetricCollection

    # -- building ------------------------------------------------------------------------------

    def build(self, outputs: int) -> None:
        """Create ``self.net`` with ``outputs`` outputs, and the loss and metrics that go with it."""
        raise NotImplementedError

    def outputs_of(self, datamodule: Any) -> int:
        """How many outputs the net needs for this data module's data."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        # The data module is set up by now, so it knows its classes or target columns.
        if self.net is None:
            self.build(self.outputs_of(self.trainer.datamodule))

    def configure_model(self) -> None:
        # Lightning calls this on every device before fit/validate/test/predict, possibly more than once.
        if not self._speed_applied:
            self.speed.apply_to_net(self.net)
            self._speed_applied = True

    def configure_callbacks(self) -> list[Callback]:
        return [ResumeState()]  # exact resume belongs to every run, whatever callbacks the config lists

    # -- steps ---------------------------------------------------------------------------------

    def evaluate(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(loss, predictions, targets)`` for a batch, in the form the metrics take."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.speed.apply_to_input(x))

    # Lightning's `self.log` costs about 0.5 ms a call on CPU, more than a small net's whole step.
    # Metric objects are updated every step but handed to `self.log` once per epoch (Lightning keeps
    # the reference, computes and resets them at epoch end); the step loss is logged only on the
    # steps whose metrics the logger writes (every `log_every_n_steps` optimizer steps).

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, preds, target = self.evaluate(batch)
        self.train_loss.update(loss.detach(), weight=len(target))
        self.train_metrics.update(preds, target)
        if batch_idx == 0:
            self.log("train/loss", self.train_loss, on_step=False, on_epoch=True)
            self.log_dict(self.train_metrics, on_step=False, on_epoch=True, prog_bar=True)
        if (self.trainer.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

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

    # -- checkpoints ---------------------------------------------------------------------------

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

    # -- optimisation --------------------------------------------------------------------------

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
