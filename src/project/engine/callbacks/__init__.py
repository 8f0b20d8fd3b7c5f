"""Callbacks the base config adds to the Trainer beside Lightning's own (``configs/base.yaml``)."""

from project.engine.callbacks.averaging import EMA, SWA
from project.engine.callbacks.checkpoint import LatestBestCheckpoint
from project.engine.callbacks.console import EpochLines, ParameterSummary
from project.engine.callbacks.curves import TrainingCurves
from project.engine.callbacks.initial_weights import InitialWeights
from project.engine.callbacks.non_finite import NonFiniteGradients
from project.engine.callbacks.predictions import PredictionCSVWriter
from project.engine.callbacks.pruning import OptunaPruning
from project.engine.callbacks.run_record import RunRecord


def batch_size(batch: list) -> int:
    """Samples in a batch of ``(inputs, targets)``, for Lightning's ``ThroughputMonitor``."""
    return len(batch[0])


__all__ = ["EMA", "SWA", "EpochLines", "InitialWeights", "LatestBestCheckpoint", "NonFiniteGradients", "OptunaPruning", "ParameterSummary", "PredictionCSVWriter", "RunRecord", "TrainingCurves", "batch_size"]
