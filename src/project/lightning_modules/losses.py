"""Loss functions chosen by name from the config."""

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from project.errors import UserError

CLASSIFICATION_LOSSES = ("cross_entropy", "nll", "bce_with_logits")
REGRESSION_LOSSES = ("mse", "l1", "smooth_l1", "huber")


class LogSoftmaxNLLLoss(nn.NLLLoss):
    """NLL on ``log_softmax`` of the logits, so it works with nets that end in a plain linear layer.

    ``log_softmax`` is idempotent, so a net that already returns log-probabilities gets the same loss.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(F.log_softmax(logits, dim=-1), target)


def build_loss(
    name: str | nn.Module,
    allowed: Sequence[str],
    class_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
    huber_delta: float = 1.0,
) -> nn.Module:
    """Return the loss module called ``name``; ``allowed`` lists the names the calling module supports.
    A loss module given instead of a name (``class_path`` in the config) is used as it is.

    ``class_weights`` weighs classes for cross_entropy and nll, and is the per-label
    ``pos_weight`` for bce_with_logits. ``label_smoothing`` applies to cross_entropy only.
    """
    if isinstance(name, nn.Module):
        if class_weights is not None or label_smoothing:
            raise UserError("class_weights and label_smoothing go with the named losses; give them to your loss class instead")
        return name
    if name not in allowed:
        raise UserError(f"unknown loss {name!r}: choose one of {', '.join(allowed)}")
    if label_smoothing and name != "cross_entropy":
        raise UserError(f"label_smoothing applies to cross_entropy only, not to {name!r}")
    weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
    if weight is not None and name not in CLASSIFICATION_LOSSES:
        raise UserError(f"class_weights apply to classification losses only, not to {name!r}")
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
    if name == "nll":
        return LogSoftmaxNLLLoss(weight=weight)
    if name == "bce_with_logits":
        return nn.BCEWithLogitsLoss(pos_weight=weight)
    if name == "mse":
        return nn.MSELoss()
    if name == "l1":
        return nn.L1Loss()
    if name == "smooth_l1":
        return nn.SmoothL1Loss(beta=huber_delta)
    return nn.HuberLoss(delta=huber_delta)
