"""The only place where the project uses a private name of torch or Lightning.

Each entry says what it works around and the version it was checked with; ``tests/test_internals.py``
fails loudly if one moves, and also fails if a private name is used anywhere else in ``src/``.
"""

from typing import Any

from torch import nn

# torch 2.14.1: the common base class of BatchNorm1d/2d/3d and SyncBatchNorm. Public code can only
# list those classes one by one, which misses other BatchNorm layers (ours among them); torch's own
# SyncBatchNorm derives from it, as project.distributed.CPUSyncBatchNorm does.
BatchNormBase = nn.modules.batchnorm._BatchNorm

# Lightning 2.6.6: around every hook (~44 times a training step) Lightning writes the hook's name to
# the LightningModule's `_current_fx_name`. Through nn.Module.__setattr__, which checks parameters,
# buffers and submodules first, that costs ~0.27 ms a step on 2 CPU cores: 15% of the two-layer
# epoch in benchmarks/vs_plain_loop.py (its "hook-name shortcut" column). A plain write stores the same
# string where Lightning reads it.
HOOK_NAME_ATTRIBUTE = "_current_fx_name"


class PlainHookNameWrites:
    """Mixin for a LightningModule: Lightning's hook-name writes skip nn.Module.__setattr__."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == HOOK_NAME_ATTRIBUTE:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)
