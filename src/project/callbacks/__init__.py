"""Callbacks the base config adds to the Trainer beside Lightning's own."""

from project.callbacks.checkpoint import LatestBestCheckpoint
from project.callbacks.console import EpochLines, ParameterSummary
from project.callbacks.curves import TrainingCurves
from project.callbacks.non_finite import NonFiniteLoss
from project.callbacks.predictions import PredictionCSVWriter
from project.callbacks.pruning import OptunaPruning
from project.callbacks.record import RunRecord


def batch_size(batch: list) -> int:
    """Samples in a batch of ``(inputs, targets)``, for Lightning's ``ThroughputMonitor``."""
    return len(batch[0])


__all__ = ["EpochLines", "LatestBestCheckpoint", "NonFiniteLoss", "OptunaPruning", "ParameterSummary", "PredictionCSVWriter", "RunRecord", "TrainingCurves", "batch_size"]
