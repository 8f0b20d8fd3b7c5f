"""Batches cut from tensors already in memory: one ``index_select`` per batch instead of
``batch_size`` calls to ``__getitem__`` and a collate, through an ordinary ``DataLoader``."""

from functools import cached_property

import torch
from torch.utils.data import Subset, TensorDataset

from project.engine.data import draw_seeds


class TensorSplit(Subset):
    """A split of a ``TensorDataset`` that also offers its samples stacked."""

    dataset: TensorDataset

    @cached_property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(self.indices, dtype=torch.long)  # an empty split too
        return tuple(t.index_select(0, index) for t in self.dataset.tensors)


class StackedTensors(TensorDataset):
    """Tensors whose batches a ``DataLoader`` fetches whole: torch calls ``__getitems__`` with a
    batch's indices (in the sampler's order), and ``keep_batch`` passes the result through as the batch.
    The tensors may live on the GPU, in which case batches need no copy at all."""

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        index = torch.as_tensor(indices, device=self.tensors[0].device)
        return [t.index_select(0, index) for t in self.tensors]


class SeededStackedTensors(StackedTensors):
    """``StackedTensors`` for a ``ResumableSampler``, whose samples come as ``(index, epoch)``: each
    batch has each sample's draw seed appended, as ``SeededSamples`` gives it sample by sample."""

    def __init__(self, *tensors: torch.Tensor, run_seed: int) -> None:
        super().__init__(*tensors)
        self.run_seed = run_seed

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[torch.Tensor]:  # type: ignore[override]
        indices = [index for index, _ in keys]
        batch = super().__getitems__(indices)
        epoch = keys[0][1] if keys else 0
        return [*batch, draw_seeds(self.run_seed, epoch, torch.as_tensor(indices, device=batch[0].device))]


def keep_batch(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    """The ``collate_fn`` for ``StackedTensors``: its batches come stacked already."""
    return batch
