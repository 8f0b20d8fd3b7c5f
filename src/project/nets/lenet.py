"""LeNet-5: conv 6-16, fully connected 120-84, for images of 16x16 pixels or more (28x28, 32x32)."""

from collections.abc import Sequence

import torch
from torch import nn

from project.errors import UserError
from project.nets.init import WeightInit, initialize_weights


def _image_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(channels, height, width)``, with a clear error for inputs that are not images."""
    if len(input_shape) != 3:
        raise UserError(
            f"LeNet takes images (channels x height x width), but the inputs have shape {tuple(input_shape)}"
            " (for a table of numbers use project.nets.TwoLayerNet; tensor data can be reshaped with data.input_shape)"
        )
    channels, height, width = input_shape
    return channels, height, width


def _flat_features(height: int, width: int) -> int:
    """Width of the flattened feature map: two 5x5 valid convs, each followed by a 2x2 max-pool."""
    rows, cols = (((side - 4) // 2 - 4) // 2 for side in (height, width))
    if rows < 1 or cols < 1:
        raise UserError(f"LeNet needs images of at least 16x16 pixels, got {height}x{width}")
    return 16 * rows * cols


class LeNet(nn.Module):
    """LeNet with explicit layers.

    Args:
        num_outputs: outputs, one per class (the training module takes it from the data).
        input_shape: ``(channels, height, width)`` of one image (taken from the data, too).
        init: weight initialisation (``project.nets.init``).

    61,706 parameters for 1x32x32 inputs and 10 classes.
    """

    def __init__(self, num_outputs: int, input_shape: Sequence[int], init: WeightInit = "default") -> None:
        super().__init__()
        channels, height, width = _image_shape(input_shape)
        self.conv1 = nn.Conv2d(channels, 6, kernel_size=5)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(_flat_features(height, width), 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_outputs)
        self.relu = nn.ReLU()
        initialize_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class LeNetSequential(nn.Module):
    """The same LeNet built as ``features`` + ``classifier`` blocks.

    The two blocks make it easy to freeze the feature extractor and train only the classifier.
    """

    def __init__(self, num_outputs: int, input_shape: Sequence[int], init: WeightInit = "default") -> None:
        super().__init__()
        channels, height, width = _image_shape(input_shape)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(_flat_features(height, width), 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_outputs),
        )
        initialize_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
