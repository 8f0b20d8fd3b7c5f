"""Multi-process training helpers: SyncBatchNorm that also runs on CPU, and torchrun's world size.

Lightning does the rest of DDP (process launch, gradient all-reduce, ``no_sync`` during gradient
accumulation, rank-0-only checkpoints and logs). These fill the two gaps a CPU user meets first.
"""

import os
import sys
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_functional
from lightning.pytorch.plugins import TorchSyncBatchNorm
from torch import nn

from project.errors import UserError
from project.engine.internals import BatchNormBase


class CPUSyncBatchNorm(BatchNormBase):
    """BatchNorm synchronised across processes for CPU tensors (gloo), which torch's
    ``nn.SyncBatchNorm`` refuses (and DDP refuses to wrap it on CPU).

    In training it gathers every rank's per-channel mean, variance and count (a gather that autograd
    differentiates through) and combines them, so the output and the running statistics are those
    of one BatchNorm over the batches of all ranks together; on one process it is a plain BatchNorm.
    It has BatchNorm's state-dict keys, so its checkpoints load into ordinary BatchNorm layers.
    """

    def __init__(self, *args: Any, process_group: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")
        channels = input.shape[1]
        shape = [1, channels] + [1] * (input.ndim - 2)
        if not self.training and self.track_running_stats:
            mean, var = self.running_mean, self.running_var
        else:
            reduce_dims = [0, *range(2, input.ndim)]
            count = torch.full((1,), input.numel() / channels, dtype=input.dtype)
            stats = torch.cat([input.mean(reduce_dims), input.var(reduce_dims, unbiased=False), count]).unsqueeze(0)
            if self.training and self._distributed():
                # Every rank's (mean, variance, count), combined as in Chan et al.'s parallel variance:
                # stable where a sum of squares would cancel. The gather's backward sums the gradients.
                group = self.process_group or dist.group.WORLD
                stats = torch.stack(dist_functional.all_gather(stats[0], group=group))
            means, variances, counts = stats[:, :channels], stats[:, channels : 2 * channels], stats[:, -1:]
            n = counts.sum()
            mean = (counts * means).sum(0) / n
            var = (counts * (variances + (means - mean) ** 2)).sum(0) / n
            if self.training and self.track_running_stats:
                self._update_running_stats(mean.detach(), var.detach(), n.item())
        output = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            output = output * self.weight.view(shape) + self.bias.view(shape)
        return output

    def _distributed(self) -> bool:
        if not (dist.is_available() and dist.is_initialized()):
            return False
        return dist.get_world_size(self.process_group or dist.group.WORLD) > 1

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (n / max(n - 1.0, 1.0))
        self.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """Replace every ``BatchNorm*d`` in ``module`` with this layer, keeping weights and statistics."""
        converted = module
        if isinstance(module, BatchNormBase) and not isinstance(module, (nn.SyncBatchNorm, cls)):
            converted = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            if module.affine:
                with torch.no_grad():
                    converted.weight = module.weight
                    converted.bias = module.bias
            converted.running_mean = module.running_mean
            converted.running_var = module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
            converted.train(module.training)
        for name, child in module.named_children():
            converted.add_module(name, cls.convert(child))
        return converted


class SyncBatchNormPlugin(TorchSyncBatchNorm):
    """What ``trainer.sync_batchnorm: true`` applies. Lightning calls it once the model is on its
    device: on a GPU it converts to torch's ``nn.SyncBatchNorm``, on CPU to :class:`CPUSyncBatchNorm`."""

    def apply(self, model: nn.Module) -> nn.Module:
        first = next(model.parameters(), None)
        if first is not None and first.device.type != "cpu":
            return super().apply(model)
        return CPUSyncBatchNorm.convert(model)


def torchrun_world() -> tuple[int, int] | None:
    """``(processes per node, nodes)`` when this process was started by torchrun, else ``None``."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    world_size = int(os.environ["WORLD_SIZE"])
    per_node = int(os.environ["LOCAL_WORLD_SIZE"])
    return per_node, max(1, world_size // per_node)


def torchrun_counts(trainer_config: Any) -> dict[str, int]:
    """Under torchrun, the device and node counts to give the Trainer when ``devices`` is ``auto``:
    the launcher's (the config keeps ``auto``); counts that disagree with it are refused (Lightning
    would fail later with a longer story). Nothing outside torchrun."""
    world = torchrun_world()
    if world is None:
        return {}
    per_node, nodes = world
    devices = trainer_config.get("devices", "auto")
    if devices in ("auto", None, -1, "-1"):
        return {"devices": per_node, "num_nodes": nodes}
    count = len(devices) if isinstance(devices, list) else int(str(devices).rstrip(","))
    num_nodes = int(trainer_config.get("num_nodes") or 1)
    if count * num_nodes != per_node * nodes:
        raise UserError(
            f"torchrun started {per_node * nodes} processes ({per_node} per node on {nodes} node(s)) but "
            f"trainer.devices={devices} x trainer.num_nodes={num_nodes} is {count * num_nodes}: "
            f"set --trainer.devices={per_node} --trainer.num_nodes={nodes} (or devices: auto)"
        )
    return {}


def warn_if_restarts_share_the_store() -> None:
    """Say how to launch when torchrun may restart this process group and its workers share torchrun's store.

    Restarted workers then read the gloo/NCCL addresses of the failed attempt from that store and
    fail to connect (pytorch/pytorch#135712). ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` on the
    launcher gives each attempt a store of its own; the launcher tells workers which applies.
    """
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    if restarts > 0 and shared and os.environ.get("RANK", "0") == "0":
        print(
            "warning: torchrun --max-restarts without TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: restarted processes "
            "can fail to reconnect; launch as TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun ...",
            file=sys.stderr,
        )
