"""GPU speed options that change how the net runs, not what it computes (``model.speed.*``)."""

from dataclasses import dataclass

import torch
from torch import nn

from project.errors import UserError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


@dataclass
class SpeedOptions:
    """Memory layout and compilation of the net. Mixed precision is a trainer flag
    (``trainer.precision: bf16-mixed``), since Lightning owns autocast and loss scaling."""

    channels_last: bool = False
    """Keep conv weights and 4-d inputs in NHWC layout, which tensor-core convolutions read fastest
    (GPUs with bf16/fp16; on CPU it is usually slower)."""
    compile: bool = False
    """``torch.compile`` the net in place (state-dict keys unchanged, so checkpoints stay portable).
    The first steps are slow while it compiles; pays off on long GPU runs."""
    compile_mode: str = "default"
    """``default``, ``reduce-overhead`` (CUDA graphs: less launch cost for small nets) or ``max-autotune``."""

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise UserError(f"model.speed.compile_mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")

    def apply_to_net(self, net: nn.Module) -> None:
        """Convert ``net`` in place; call once, before training."""
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        if self.compile:
            net.compile(mode=self.compile_mode)

    def apply_to_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x
