"""A torchvision classification model (ResNet-18/34/50, ...) as a backbone with a new head."""

from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from project.errors import UserError
from project.nets.backbone import BackboneAndHead


class WeightsUnavailable(UserError):
    """Pretrained weights are neither in the cache nor downloadable."""


def find_head(model: nn.Module) -> str:
    """Dotted name of the model's final classifier layer: its last ``nn.Linear`` (``fc`` in a
    ResNet, ``classifier.1`` in EfficientNet, ``heads.head`` in a ViT)."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise UserError(f"{type(model).__name__} has no nn.Linear classifier to replace with a new head")
    return names[-1]


def load_torchvision_model(name: str, weights: str | None) -> nn.Module:
    """``torchvision.models.get_model(name, weights=...)``; weights come from torchvision's cache in
    ``$TORCH_HOME/hub/checkpoints`` (no network once the file is there)."""
    try:
        weight_enum = torchvision.models.get_model_weights(name)
    except ValueError as error:
        raise UserError(f"unknown torchvision model {name!r}: see torchvision.models.list_models()") from error
    if weights is None:
        return torchvision.models.get_model(name, weights=None)
    try:
        chosen = weight_enum[weights] if weights != "DEFAULT" else weight_enum.DEFAULT
    except KeyError as error:
        known = ", ".join(w.name for w in weight_enum)
        raise UserError(f"{name} has no weights {weights!r} (it has {known}, DEFAULT)") from error
    cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(chosen.url).name
    try:
        return torchvision.models.get_model(name, weights=chosen)
    except (OSError, RuntimeError) as error:  # no network (URLError is an OSError), or a damaged file
        raise WeightsUnavailable(
            f"cannot load the {name} {chosen.name} weights ({error.__class__.__name__}: {error}). "
            f"Offline, download {chosen.url} elsewhere and put it at {cache}"
        ) from error


class TorchvisionClassifier(BackboneAndHead):
    """``backbone`` (a torchvision model without its classifier) followed by a new ``head``.

    Args:
        num_outputs: outputs of the new head, one per class (the training module takes it from the data).
        input_shape: ``(channels, height, width)`` of one image (taken from the data, too). Any
            size works (the models pool globally); they take 3-channel (RGB) images.
        name: a torchvision classification model, e.g. resnet18, resnet34, resnet50, efficientnet_b0.
        weights: a torchvision weights name (``IMAGENET1K_V1``, ``DEFAULT``) or None.
        weights_path: a local state dict of the same torchvision model instead, loaded with
            ``weights_only=True``; its classifier entries are ignored (the head is new).
        head_hidden: a hidden layer of this width in the head (None: one linear layer).
        dropout: dropout before the head's last linear layer.
    """

    def __init__(
        self,
        num_outputs: int,
        input_shape: Sequence[int],
        name: str = "resnet18",
        weights: str | None = "IMAGENET1K_V1",
        weights_path: str | None = None,
        head_hidden: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3 or input_shape[0] != 3:
            raise UserError(f"{name} takes RGB images (3 x height x width), but the inputs have shape {tuple(input_shape)}: set data.transforms.channels: 3")
        if weights in ("None", "null", "none", ""):  # `--model.net.weights=null` arrives as a string
            weights = None
        if weights and weights_path:
            raise UserError("give model.net.weights or model.net.weights_path, not both")
        backbone = load_torchvision_model(name, None if weights_path else weights)
        head_name = find_head(backbone)
        old_head = backbone.get_submodule(head_name)
        backbone.set_submodule(head_name, nn.Identity())
        if weights_path:
            load_backbone_state(backbone, weights_path, head_name)
        self.backbone = backbone
        self.feature_dim: int = old_head.in_features
        layers: list[nn.Module] = []
        width = self.feature_dim
        if head_hidden:
            layers += [nn.Linear(width, head_hidden), nn.ReLU(inplace=True)]
            width = head_hidden
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width, num_outputs))
        self.head = nn.Sequential(*layers)


def load_backbone_state(backbone: nn.Module, path: str, head_name: str) -> None:
    """Load a torchvision-format state dict (tensors only) into ``backbone``, skipping the old head."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"weights file not found: {file}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"cannot read weights file {file} as a state dict of tensors: {error}") from error
    if isinstance(state, dict) and "state_dict" in state:  # a checkpoint that wraps its state dict
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith(head_name + ".")}
    own = backbone.state_dict()
    wrong_shape = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if k in own and v.shape != own[k].shape]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if wrong_shape or missing or unexpected:
        details = [f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "",
                   f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" if unexpected else "",
                   f"wrong shapes: {wrong_shape[:3]}" if wrong_shape else ""]
        raise UserError(f"{file} does not fit the {type(backbone).__name__} backbone: " + "; ".join(d for d in details if d))
    backbone.load_state_dict(state)
