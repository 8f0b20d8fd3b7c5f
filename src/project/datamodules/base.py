"""What every data module shares: DataLoader options, the class-balancing sampler and predict indexing."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from project.errors import UserError


class IndexedInputs(Dataset):
    """Yields ``(input, index)`` from a dataset of ``(input, target)`` pairs, for ``predict``.

    The index lets the prediction writer name each row (a file name, a row number) in input order.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.dataset[index][0], index


@dataclass
class LoaderOptions:
    """DataLoader settings, the same for every data module (``data.loader.*`` in configs)."""

    batch_size: int = 64
    """Samples per batch on each device."""
    num_workers: int = 0
    """Loader worker processes (0 loads in the main process)."""
    pin_memory: bool = False
    """Page-lock batches for faster host-to-GPU copies."""
    persistent_workers: bool = False
    """Keep workers alive between epochs (only with num_workers > 0)."""
    drop_last: bool = False
    """Drop the last incomplete training batch."""
    balance_classes: bool = False
    """Draw training samples with a WeightedRandomSampler so each class is seen equally often."""


class BaseDataModule(LightningDataModule):
    """Loaders shared by all data modules; subclasses fill the datasets in ``setup``."""

    def __init__(self, loader: LoaderOptions | None = None) -> None:
        super().__init__()
        self.loader = loader or LoaderOptions()
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.predict_set: Dataset | None = None
        self.class_names: list[str] | None = None
        self.predict_names: list[str] = []

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names else None

    def train_targets(self) -> torch.Tensor:
        """Class index of every training sample, in dataset order (for ``balance_classes``)."""
        raise NotImplementedError(f"{type(self).__name__} does not support balance_classes")

    def train_dataloader(self) -> DataLoader:
        sampler = None
        if self.loader.balance_classes:
            targets = self.train_targets()
            class_counts = torch.bincount(targets)
            weights = 1.0 / class_counts.clamp(min=1).double()[targets]
            sampler = WeightedRandomSampler(weights, num_samples=len(targets), replacement=True)
        return self._loader(self.train_set, shuffle=sampler is None, sampler=sampler, drop_last=self.loader.drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set)

    def _loader(self, dataset: Dataset | None, shuffle: bool = False, **kwargs: Any) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() did not create this split")
        return DataLoader(
            dataset,
            batch_size=self.loader.batch_size,
            shuffle=shuffle,
            num_workers=self.loader.num_workers,
            pin_memory=self.loader.pin_memory,
            persistent_workers=self.loader.persistent_workers and self.loader.num_workers > 0,
            **kwargs,
        )


def split_sizes(total: int, val_fraction: float, test_fraction: float) -> list[int]:
    """``[train, val, test]`` sizes for ``total`` samples; rounding favours the training split."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(f"val_fraction + test_fraction must be in [0, 1), got {val_fraction} + {test_fraction}")
    n_val = round(total * val_fraction)
    n_test = round(total * test_fraction)
    return [total - n_val - n_test, n_val, n_test]


def stratified_split(
    targets: Sequence[int], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Split sample indices into train/val/test with the same fractions within every class.

    The seeds' banknote example splits each class folder separately: a rare class then still
    appears in every split. The permutation depends only on ``seed``.
    """
    generator = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for index, target in enumerate(targets):
        by_class.setdefault(int(target), []).append(index)
    splits: tuple[list[int], list[int], list[int]] = ([], [], [])
    for label in sorted(by_class):
        members = by_class[label]
        order = torch.randperm(len(members), generator=generator).tolist()
        n_train, n_val, _ = split_sizes(len(members), val_fraction, test_fraction)
        for position, member in enumerate(order):
            split = 0 if position < n_train else 1 if position < n_train + n_val else 2
            splits[split].append(members[member])
    return tuple(sorted(s) for s in splits)  # type: ignore[return-value]
