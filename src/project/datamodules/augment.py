"""Random affine augmentation of a whole batch of image tensors at once (on whatever device holds it)."""

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

MIRRORED_DIGITS = "handwritten digits are not mirror-symmetric (a mirrored 2, 3, 4, 5, 6, 7 or 9 is no digit, or another one)"
"""Why a test-time flip (``model.tta: hflip``) is refused for digit data sets."""


@dataclass
class BatchAffine:
    """Rotate, shift and scale every image in a batch by its own random amount.

    One ``grid_sample`` call for the whole batch: far cheaper than per-image PIL transforms
    for small in-memory images, and it runs on the GPU when the batch is there.
    """

    degrees: float = 10.0
    """Rotation angle drawn from [-degrees, degrees]."""
    translate: float = 0.1
    """Shift drawn from [-translate, translate] of the image size, per axis."""
    scale_min: float = 0.9
    """Zoom factor drawn from [scale_min, scale_max]."""
    scale_max: float = 1.1

    DRAWS = 4
    """Random numbers per image: rotation, zoom, horizontal and vertical shift."""

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 uniforms: torch.Tensor | None = None) -> torch.Tensor:
        """``images`` moved by draws in [0, 1): ``uniforms`` (one row of ``DRAWS`` per image) when
        given, else drawn from ``generator`` (torch's global one when ``None``)."""
        n = images.shape[0]
        if uniforms is None:
            options = {"device": images.device, "dtype": images.dtype, "generator": generator}
            uniforms = torch.cat([torch.rand(n, 1, **options), torch.rand(n, 1, **options), torch.rand(n, 2, **options)], dim=1)
        uniforms = uniforms.to(images.device, images.dtype)
        angle = (uniforms[:, 0] * 2 - 1) * math.radians(self.degrees)
        scale = self.scale_min + uniforms[:, 1] * (self.scale_max - self.scale_min)
        shift = (uniforms[:, 2:] * 2 - 1) * self.translate * 2  # grid units span [-1, 1]
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1
        )
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")
