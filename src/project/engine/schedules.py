"""Learning-rate schedules chosen by name, with an optional linear warm-up before any of them.

Every schedule is defined in epochs, and all but ``plateau`` are stepped after every
optimizer step, so the curve is smooth within an epoch and does not depend on the
batch size, the number of devices or gradient accumulation: only on how many
optimizer steps make one epoch (``steps_per_epoch``).

With ``e`` the fractional number of epochs done before an optimizer step, ``W`` the
warm-up epochs and ``T = max_epochs - W``, the factor applied to each group's base
learning rate is:

- warm-up (``e < W``): ``(step + 1) / (W * steps_per_epoch)``, rising linearly to 1;
- ``none``: 1;
- ``step``: ``gamma ** (floor(e - W) // step_size)`` (``StepLR`` stepped per epoch);
- ``multistep``: ``gamma ** (number of milestones <= floor(e - W))`` (``MultiStepLR``);
- ``cosine``: ``((1 + cos(pi * (e - W) / T)) / 2) * (1 - lrf) + lrf`` (cosine
  with a floor; ``lrf = 0`` is ``CosineAnnealingLR`` with ``eta_min = 0``);
- ``onecycle``: torch's ``OneCycleLR`` over all steps, peaking at the optimizer's lr
  (it has its own warm-up, set by ``pct_start``);
- ``plateau``: ``ReduceLROnPlateau`` on ``monitor``, checked after each validation.

The step, multistep and cosine curves are formulas over torch's ``LambdaLR`` rather than torch's
``StepLR``/``MultiStepLR``/``CosineAnnealingLR`` behind a ``SequentialLR`` warm-up, because those
count optimizer steps rather than epochs, take one absolute floor for every parameter group (the
fine-tuning backbone group runs at a fraction of the head's lr) and warn at every switch.
"""

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

from lightning.pytorch import Trainer
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau

from project.errors import UserError

SCHEDULE_NAMES = ("none", "step", "multistep", "cosine", "onecycle", "plateau")


@dataclass
class LRSchedule:
    """How the learning rate moves during training; fields not used by ``name`` are ignored."""

    name: str = "none"
    """One of none, step, multistep, cosine, onecycle, plateau."""
    warmup_epochs: float = 0.0
    """Linear warm-up length in epochs (fractions allowed), before the schedule starts."""
    step_size: int = 10
    """step: epochs between decays."""
    gamma: float = 0.1
    """step, multistep: decay factor."""
    milestones: list[int] = field(default_factory=lambda: [30, 60])
    """multistep: epochs (counted after warm-up) at which the lr is multiplied by gamma."""
    lrf: float = 0.0
    """cosine: final lr as a fraction of the initial lr."""
    pct_start: float = 0.3
    """onecycle: fraction of all steps spent rising to the peak."""
    div_factor: float = 25.0
    """onecycle: the start lr is the peak lr / div_factor."""
    final_div_factor: float = 1e4
    """onecycle: the last lr is the start lr / final_div_factor."""
    cycle_momentum: bool = True
    """onecycle: also cycle momentum (SGD) or beta1 (Adam-like) inversely to the lr."""
    monitor: str = "val/loss"
    """plateau: the logged metric to watch."""
    mode: str = "min"
    """plateau: min or max, whether the metric should fall or rise."""
    factor: float = 0.1
    """plateau: multiply the lr by this when the metric stalls."""
    patience: int = 10
    """plateau: epochs without improvement before the lr drops."""

    def __post_init__(self) -> None:
        if self.name not in SCHEDULE_NAMES:
            raise UserError(f"unknown lr schedule {self.name!r}: choose one of {', '.join(SCHEDULE_NAMES)}")
        if self.warmup_epochs < 0:
            raise UserError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.name == "onecycle" and self.warmup_epochs:
            raise UserError("onecycle has its own warm-up (pct_start): set warmup_epochs to 0")
        if self.name == "plateau" and self.mode not in ("min", "max"):
            raise UserError(f"plateau mode must be min or max, got {self.mode!r}")


def lr_factor(schedule: LRSchedule, step: int, steps_per_epoch: int, max_epochs: int) -> float:
    """Factor on the base learning rate before optimizer step ``step`` (0-based), for the LambdaLR schedules."""
    warmup_steps = schedule.warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    epochs_done = (step - warmup_steps) / steps_per_epoch
    if schedule.name == "step":
        return schedule.gamma ** (math.floor(epochs_done) // schedule.step_size)
    if schedule.name == "multistep":
        return schedule.gamma ** bisect.bisect_right(sorted(schedule.milestones), math.floor(epochs_done))
    if schedule.name == "cosine":
        total = max_epochs - schedule.warmup_epochs
        progress = min(epochs_done / total, 1.0)
        return (1 + math.cos(math.pi * progress)) / 2 * (1 - schedule.lrf) + schedule.lrf
    return 1.0


class LinearWarmup(LRScheduler):
    """Linear warm-up that leaves the learning rate alone afterwards, so it can run beside ReduceLROnPlateau."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int) -> None:
        self.warmup_steps = max(1, warmup_steps)
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        if self.last_epoch >= self.warmup_steps:
            return [group["lr"] for group in self.optimizer.param_groups]
        return [base_lr * (self.last_epoch + 1) / self.warmup_steps for base_lr in self.base_lrs]


def build_schedulers(
    optimizer: Optimizer, schedule: LRSchedule, steps_per_epoch: int, max_epochs: int
) -> list[dict[str, Any]]:
    """Lightning scheduler configs (``interval``, ``monitor``) that realise ``schedule`` on ``optimizer``."""
    if schedule.name in ("cosine", "onecycle") and max_epochs <= schedule.warmup_epochs:
        raise UserError(f"the {schedule.name} schedule needs trainer.max_epochs > warmup_epochs (got {max_epochs})")
    if schedule.name == "onecycle":
        has_momentum = any(key in optimizer.defaults for key in ("momentum", "betas"))
        onecycle = OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=steps_per_epoch * max_epochs,
            pct_start=schedule.pct_start,
            div_factor=schedule.div_factor,
            final_div_factor=schedule.final_div_factor,
            cycle_momentum=schedule.cycle_momentum and has_momentum,
        )
        return [{"scheduler": onecycle, "interval": "step"}]
    if schedule.name == "plateau":
        configs = []
        if schedule.warmup_epochs:
            warmup = LinearWarmup(optimizer, round(schedule.warmup_epochs * steps_per_epoch))
            configs.append({"scheduler": warmup, "interval": "step"})
        plateau = ReduceLROnPlateau(
            optimizer, mode=schedule.mode, factor=schedule.factor, patience=schedule.patience
        )
        configs.append({"scheduler": plateau, "interval": "epoch", "monitor": schedule.monitor, "strict": True})
        return configs
    lambda_lr = LambdaLR(optimizer, lambda step: lr_factor(schedule, step, steps_per_epoch, max_epochs))
    return [{"scheduler": lambda_lr, "interval": "step"}]


def with_schedule(optimizer: Optimizer, schedule: LRSchedule, trainer: Trainer) -> Any:
    """``optimizer`` with ``schedule`` on it, in the form ``configure_optimizers`` returns."""
    if schedule.name == "none" and not schedule.warmup_epochs:
        return optimizer
    if trainer.max_epochs is None or trainer.max_epochs < 1:
        raise UserError("an lr schedule is defined in epochs: set trainer.max_epochs")
    return [optimizer], build_schedulers(optimizer, schedule, steps_per_epoch(trainer), trainer.max_epochs)


def steps_per_epoch(trainer: Trainer) -> int:
    """Optimizer steps in one epoch on this rank (after ``limit_train_batches`` and accumulation)."""
    trainer.estimated_stepping_batches  # noqa: B018  (sets up the train loader and its length)
    batches = trainer.num_training_batches
    if math.isinf(batches):
        raise UserError("an lr schedule needs a train loader with a length (the dataset has none)")
    return max(1, math.ceil(batches / trainer.accumulate_grad_batches))
