"""Lightning modules: a net from ``project.nets`` plus loss, metrics, optimizer and schedule."""

from project.engine.schedules import LRSchedule
from project.engine.speed import SpeedOptions
from project.lightning_modules.classification import ClassificationModule
from project.lightning_modules.finetune import FineTuningModule
from project.lightning_modules.regression import RegressionModule

__all__ = ["ClassificationModule", "FineTuningModule", "LRSchedule", "RegressionModule", "SpeedOptions"]
