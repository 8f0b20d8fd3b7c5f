"""A net in two parts, as fine-tuning takes one: a (pretrained) backbone and a new head."""

import torch
from torch import nn


class BackboneAndHead(nn.Module):
    """The base class of nets that ``FineTuningModule`` can freeze and unfreeze: a subclass sets
    ``backbone`` (the features, frozen or trained at a lower rate) and ``head`` (the new layers
    that map them to outputs) in its ``__init__``."""

    backbone: nn.Module
    head: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
