"""Loss functions chosen by name from the config, giving one loss per sample.

The training module weighs each sample's loss by the number of samples in its whole optimizer step
(all accumulated batches, all ranks), so every loss here is built with ``reduction="none"``.
"""

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
    """Return the loss module called ``name``, with ``reduction="none"``; ``allowed`` lists the names
    the calling module supports. A loss module given instead of a name (``class_path`` in the
    config) is used with its ``reduction`` set to ``"none"``.

    ``class_weights`` weighs classes for cross_entropy and nll, and is the per-label
    ``pos_weight`` for bce_with_logits. ``label_smoothing`` applies to cross_entropy only.
    """
    if isinstance(name, nn.Module):
        if class_weights is not None or label_smoothing:
            raise UserError("class_weights and label_smoothing go with the named losses; give them to your loss class instead")
        if not hasattr(name, "reduction"):
            raise UserError(f"{type(name).__name__} has no `reduction` option: the loss must give one value per sample "
                            "(reduction='none', as torch.nn's losses do) so that samples can be weighted")
        name.reduction = "none"
        return name
    if name not in allowed:
        raise UserError(f"unknown loss {name!r}: choose one of {', '.join(allowed)}")
    if label_smoothing and name != "cross_entropy":
        raise UserError(f"label_smoothing applies to cross_entropy only, not to {name!r}")
    weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
    if weight is not None and name not in CLASSIFICATION_LOSSES:
        raise UserError(f"class_weights apply to classification losses only, not to {name!r}")
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing, reduction="none")
    if name == "nll":
        return LogSoftmaxNLLLoss(weight=weight, reduction="none")
    if name == "bce_with_logits":
        return nn.BCEWithLogitsLoss(pos_weight=weight, reduction="none")
    if name == "mse":
        return nn.MSELoss(reduction="none")
    if name == "l1":
        return nn.L1Loss(reduction="none")
    if name == "smooth_l1":
        return nn.SmoothL1Loss(beta=huber_delta, reduction="none")
    return nn.HuberLoss(delta=huber_delta, reduction="none")


def per_sample(losses: torch.Tensor) -> torch.Tensor:
    """One loss per sample: the mean over a sample's labels or target columns, if it has several."""
    return losses if losses.ndim <= 1 else losses.flatten(1).mean(dim=1)
