"""Batches cut from tensors already in memory: one ``index_select`` per batch instead of
``batch_size`` calls to ``__getitem__`` and a collate."""

import math
from collections.abc import Iterator
from functools import cached_property

import torch
from torch.utils.data import Sampler, Subset, TensorDataset


class TensorSplit(Subset):
    """A split of a ``TensorDataset`` that also offers its samples stacked, for ``TensorBatches``."""

    dataset: TensorDataset

    @cached_property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(self.indices)
        return tuple(t.index_select(0, index) for t in self.dataset.tensors)


class TensorBatches:
    """An iterable of batches over stacked tensors, in the order of ``sampler``.

    ``sampler`` is the one the DataLoader path would use (a seeded ``DistributedSampler`` for
    training, an unpadded one for evaluation under DDP, ``None`` for sequential order), so the
    batches are exactly the DataLoader's, sharded per rank the same way. Lightning finds
    ``sampler`` here and calls ``set_epoch`` on it each epoch, as it does for a DataLoader; it adds
    no sampler of its own to an iterable that is not a DataLoader. The tensors may live on the
    GPU, in which case batches need no copy at all.
    """

    def __init__(
        self, tensors: tuple[torch.Tensor, ...], batch_size: int, sampler: Sampler | None = None, drop_last: bool = False
    ) -> None:
        self.tensors = tensors
        self.batch_size = batch_size
        self.sampler = sampler
        self.batch_sampler = None  # Lightning inspects DataLoader-like objects for both
        self.drop_last = drop_last

    def _num_samples(self) -> int:
        return len(self.sampler) if self.sampler is not None else len(self.tensors[0])  # type: ignore[arg-type]

    def _batch_count(self, samples: int) -> int:
        return samples // self.batch_size if self.drop_last else math.ceil(samples / self.batch_size)

    def __len__(self) -> int:
        return self._batch_count(self._num_samples())

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        device = self.tensors[0].device
        if self.sampler is None:
            order = torch.arange(len(self.tensors[0]), device=device)
        else:
            order = torch.as_tensor(list(self.sampler), dtype=torch.long, device=device)
        for batch in range(self._batch_count(len(order))):  # fewer than len(self) when a resumed epoch starts part-way
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            yield [t.index_select(0, index) for t in self.tensors]
