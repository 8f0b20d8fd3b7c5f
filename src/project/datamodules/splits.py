"""Splitting one set of samples into train, validation and test, reproducibly."""

from collections.abc import Sequence

import torch

from project.errors import UserError


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

    Each class folder is split separately, so a rare class still appears in every split. The permutation depends only on ``seed``.
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
