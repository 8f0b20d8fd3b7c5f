"""Image transforms from config: one recipe gives the training and the evaluation pipelines."""

from dataclasses import dataclass

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from project.engine.data import InferenceInputs
from project.errors import UserError
from project.inference.inputs import in_mode

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class ConvertMode:
    """Convert a PIL image to ``L`` (1 channel) or ``RGB`` (3 channels): ``in_mode`` as a transform."""

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def __call__(self, image: Image.Image) -> Image.Image:
        return in_mode(image, self.channels)


@dataclass
class ImageTransforms:
    """Per-image preprocessing. Augmentations (crop, flips, rotation, jitter) apply to training only.

    A few flags build both torchvision pipelines, so a recipe states its preprocessing once; the
    pipelines written out in YAML would repeat resizing and normalisation for training and evaluation.
    """

    image_size: int = 32
    """Images are resized to image_size x image_size."""
    channels: int = 3
    """1 converts every image to grayscale, 3 to RGB."""
    random_crop_padding: int = 0
    """Pad by this many pixels, then crop back to image_size at a random place (0: off)."""
    horizontal_flip: float = 0.0
    """Probability of a horizontal flip."""
    vertical_flip: float = 0.0
    """Probability of a vertical flip."""
    rotation_degrees: float = 0.0
    """Rotate by a random angle in [-rotation_degrees, rotation_degrees]."""
    color_jitter: float = 0.0
    """Random brightness, contrast and saturation change of up to this fraction."""
    mean: list[float] | None = None
    """Per-channel mean for Normalize (None: no normalisation). ImageNet: [0.485, 0.456, 0.406]."""
    std: list[float] | None = None
    """Per-channel standard deviation for Normalize. ImageNet: [0.229, 0.224, 0.225]."""

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise UserError(f"transforms.image_size must be >= 1 (pixels), got {self.image_size}")
        for name in ("random_crop_padding", "rotation_degrees", "color_jitter"):
            if getattr(self, name) < 0:
                raise UserError(f"transforms.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("horizontal_flip", "vertical_flip"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"transforms.{name} is a probability, between 0 and 1; got {getattr(self, name)}")
        if self.channels not in (1, 3):
            raise UserError(f"transforms.channels must be 1 or 3, got {self.channels}")
        if (self.mean is None) != (self.std is None):
            raise UserError("transforms.mean and transforms.std must be given together")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) != self.channels:
                raise UserError(f"transforms.{name} has {len(values)} values but channels is {self.channels}")

    def randomness(self) -> str | None:
        """The random training augmentations that are on, as a data module's ``random_training_inputs`` says them."""
        steps = {"random_crop_padding": self.random_crop_padding, "horizontal_flip": self.horizontal_flip,
                 "vertical_flip": self.vertical_flip, "rotation_degrees": self.rotation_degrees,
                 "color_jitter": self.color_jitter}
        on = [name for name, value in steps.items() if value]
        return f"random augmentation (data.transforms: {', '.join(on)})" if on else None

    def inference_inputs(self, test_inputs: Dataset, example_path: str | None = None,
                         train_inputs: Dataset | None = None) -> InferenceInputs:
        """For an exported model: it takes pixels in [0, 1] (``build(train=False, normalize=False)``),
        and ``mean``/``std`` normalise them in its graph. ``test_inputs`` (and ``train_inputs``) are such pixels."""
        normalized = self.mean is not None and self.std is not None
        return InferenceInputs(
            reader={"kind": "image", "channels": self.channels, "size": self.image_size},
            raw_shape=(self.channels, self.image_size, self.image_size),
            test_inputs=test_inputs,
            train_inputs=train_inputs,
            mean=torch.tensor(self.mean).reshape(-1, 1, 1) if normalized else None,
            std=torch.tensor(self.std).reshape(-1, 1, 1) if normalized else None,
            example_path=example_path,
        )

    def build(self, train: bool, normalize: bool = True) -> T.Compose:
        steps: list = [ConvertMode(self.channels), T.Resize((self.image_size, self.image_size))]
        if train:
            if self.random_crop_padding:
                steps.append(T.RandomCrop(self.image_size, padding=self.random_crop_padding))
            if self.horizontal_flip:
                steps.append(T.RandomHorizontalFlip(self.horizontal_flip))
            if self.vertical_flip:
                steps.append(T.RandomVerticalFlip(self.vertical_flip))
            if self.rotation_degrees:
                steps.append(T.RandomRotation(self.rotation_degrees))
            if self.color_jitter:
                jitter = self.color_jitter
                steps.append(T.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
        steps.append(T.ToTensor())
        if normalize and self.mean is not None and self.std is not None:
            steps.append(T.Normalize(self.mean, self.std))
        return T.Compose(steps)
