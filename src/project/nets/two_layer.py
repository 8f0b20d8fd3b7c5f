"""A two-layer perceptron: ``Linear(d_in, hidden) -> ReLU -> Linear(hidden, d_out)``."""

import torch
from torch import nn

from project.nets.init import WeightInit, initialize_weights


class TwoLayerNet(nn.Module):
    """A one-hidden-layer perceptron for flat feature vectors (classification or regression).

    Inputs with more than two dimensions (for example 1x8x8 images) are flattened first. ``d_out``
    comes first: the training module fills it in from the data (classes or target columns).
    """

    def __init__(self, d_out: int, d_in: int, hidden: int, init: WeightInit = "default") -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_in, hidden)
        self.linear2 = nn.Linear(hidden, d_out)
        initialize_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(torch.relu(self.linear1(torch.flatten(x, 1))))
