"""Weight initialisation schemes shared by every net in this package."""

from typing import Literal

from torch import nn

WeightInit = Literal["default", "xavier", "kaiming"]


def initialize_weights(module: nn.Module, scheme: WeightInit = "default") -> None:
    """Re-initialise the conv and linear layers of ``module`` in place.

    ``default`` keeps PyTorch's own initialisation. ``xavier`` suits tanh/sigmoid
    nets, ``kaiming`` (fan-in, ReLU gain) suits ReLU nets; both zero the biases.
    """
    if scheme == "default":
        return
    if scheme not in ("xavier", "kaiming"):
        raise ValueError(f"unknown weight init {scheme!r}: choose default, xavier or kaiming")
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            if scheme == "xavier":
                nn.init.xavier_uniform_(layer.weight)
            else:
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
