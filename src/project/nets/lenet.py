"""LeNet-5: conv 6-16, fully connected 120-84, for 28x28 or 32x32 inputs."""

import torch
from torch import nn

from project.nets.init import WeightInit, initialize_weights


def _flat_features(input_size: int) -> int:
    """Width of the flattened feature map: two 5x5 valid convs, each followed by a 2x2 max-pool."""
    side = ((input_size - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"LeNet needs inputs of at least 16x16 pixels, got input_size={input_size}")
    return 16 * side * side


class LeNet(nn.Module):
    """LeNet with explicit layers.

    61,706 parameters for 1x32x32 inputs and 10 classes.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 32,
        init: WeightInit = "default",
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, kernel_size=5)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(_flat_features(input_size), 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
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

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        init: WeightInit = "default",
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(_flat_features(input_size), 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )
        initialize_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))
