"""A two-layer perceptron: ``Linear(d_in, hidden) -> ReLU -> Linear(hidden, num_outputs)``."""

import math
from collections.abc import Sequence

import torch
from torch import nn

from project.nets.init import WeightInit, initialize_weights


class TwoLayerNet(nn.Module):
    """A one-hidden-layer perceptron for flat feature vectors (classification or regression).

    Inputs with more than one dimension (for example 1x8x8 images) are flattened first.

    Args:
        num_outputs: outputs (the training module takes them from the data: classes or target columns).
        input_shape: the shape of one input (taken from the data, too); ``d_in`` is its size.
        hidden: width of the hidden layer.
        init: weight initialisation (``project.nets.init``).
    """

    def __init__(self, num_outputs: int, input_shape: Sequence[int], hidden: int = 100, init: WeightInit = "default") -> None:
        super().__init__()
        self.d_in = math.prod(input_shape)
        self.linear1 = nn.Linear(self.d_in, hidden)
        self.linear2 = nn.Linear(hidden, num_outputs)
        initialize_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(torch.relu(self.linear1(torch.flatten(x, 1))))
