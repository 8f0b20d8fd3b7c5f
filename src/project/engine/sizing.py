"""A net sized by the data: the sizes a training module builds its net with, checked against the data."""

from collections.abc import Callable, Sequence

import torch
from torch import nn

from project.errors import UserError
from project.inference.inputs import shape_text

NetFactory = Callable[[int, tuple[int, ...]], nn.Module]
"""A net class from ``project.nets`` (or any ``nn.Module``) whose first two arguments are its number
of outputs and the shape of one input sample. The config gives its other arguments; the training
module fills in these two from the data (or from the checkpoint it is loading)."""


def net_sizes(given: tuple[int | None, Sequence[int] | None], data: tuple[int | None, Sequence[int] | None],
              outputs_option: str, data_outputs: str, data_name: str) -> tuple[int, tuple[int, ...]]:
    """``(outputs, input shape)`` for the net: what was given (options, or a checkpoint's
    hyperparameters) where it was, else the data's; sizes given both ways must agree.
    ``data_outputs`` says what the data has ("3 classes (a, b, c)") for the mismatch message."""
    (given_outputs, given_shape), (outputs, shape) = given, data
    if given_outputs is not None and outputs is not None and given_outputs != outputs:
        raise UserError(f"the data has {data_outputs} but model.{outputs_option} is {given_outputs}")
    if given_shape is not None and shape is not None and tuple(given_shape) != tuple(shape):
        raise UserError(f"the data's inputs have shape {shape_text(shape)} but the model takes {shape_text(given_shape)} "
                        "(model.input_shape; a checkpoint keeps the shape it was trained on)")
    outputs = given_outputs if given_outputs is not None else outputs
    shape = given_shape if given_shape is not None else shape
    if outputs is None or shape is None:
        missing = f"model.{outputs_option}" if outputs is None else "model.input_shape"
        raise UserError(f"{data_name} does not say the net's size: set {missing} (or give --ckpt_path)")
    return outputs, tuple(shape)


def mirror_averaged(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The mean of ``net``'s outputs on images ``x`` and on ``x`` mirrored left to right (``model.tta: hflip``)."""
    return (net(x) + net(x.flip(-1))) / 2
