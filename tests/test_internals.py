"""The project uses no private name of torch or Lightning outside ``project.internals``, and each
entry there still means what it meant when it was checked."""

from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from private_api import scan
from project import internals
from project.distributed import CPUSyncBatchNorm

SRC = Path(__file__).resolve().parents[1] / "src" / "project"


def test_no_private_torch_or_lightning_name_is_used_outside_the_internals_module():
    found = scan(SRC)
    assert set(found) <= {SRC / "internals.py"}, "\n".join(use for uses in found.values() for use in uses)


def test_batch_norm_base_is_still_the_base_of_every_batch_norm_layer():
    for layer in (nn.BatchNorm1d(3), nn.BatchNorm2d(3), nn.BatchNorm3d(3), nn.SyncBatchNorm(3), CPUSyncBatchNorm(3)):
        assert isinstance(layer, internals.BatchNormBase), type(layer)
    assert not isinstance(nn.LayerNorm(3), internals.BatchNormBase)
    assert {"running_mean", "running_var", "num_batches_tracked"} <= set(dict(nn.BatchNorm2d(3).named_buffers()))


class HookNames(internals.PlainHookNameWrites, LightningModule):
    """Records the hook name Lightning has set while it runs a step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer, self.seen = nn.Linear(2, 1), []

    def training_step(self, batch, batch_idx):
        self.seen.append(getattr(self, internals.HOOK_NAME_ATTRIBUTE))
        self.log("loss", 1.0)  # Lightning's logging reads the hook name to check where it is called from
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_still_names_the_running_hook_in_the_attribute_the_shortcut_writes_plainly():
    module = HookNames()
    assert internals.HOOK_NAME_ATTRIBUTE in vars(module)  # set by LightningModule.__init__, not a Module attribute
    Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False).fit(module, DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2))
    assert module.seen == ["training_step", "training_step"]
