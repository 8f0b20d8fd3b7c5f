"""Lightning modules: a net from ``project.nets`` plus loss, metrics, optimizer and schedule."""

from project.lightning_modules.classification import ClassificationModule
from project.lightning_modules.finetune import FineTuningModule
from project.lightning_modules.regression import RegressionModule
from project.lightning_modules.schedules import LRSchedule
from project.lightning_modules.speed import SpeedOptions

__all__ = ["ClassificationModule", "FineTuningModule", "LRSchedule", "RegressionModule", "SpeedOptions"]
