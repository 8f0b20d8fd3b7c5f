"""Callbacks the configs add to the Trainer beside Lightning's own."""

from project.callbacks.checkpoint import ModelCheckpoint
from project.callbacks.console import EpochLines
from project.callbacks.curves import TrainingCurves
from project.callbacks.predictions import PredictionCSVWriter
from project.callbacks.resume import InjectedFault, NonFiniteLoss, RandomState
from project.callbacks.throughput import TrainingThroughput

__all__ = ["EpochLines", "InjectedFault", "ModelCheckpoint", "NonFiniteLoss", "PredictionCSVWriter", "RandomState", "TrainingCurves", "TrainingThroughput"]
