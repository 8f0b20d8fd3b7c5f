"""Splitting one set of samples into train, validation and test, reproducibly."""

from collections import Counter
from collections.abc import Sequence
from typing import Any

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


def check_folds(folds: int | None, fold: int, val_fraction: float) -> None:
    """Refuse, in one line, fold options that cannot make a cross-validation split."""
    if folds is None:
        if fold != 0:
            raise UserError(f"data.fold {fold} needs data.folds K (the number of folds), e.g. --data.folds 5 --data.fold {fold}")
        return
    if folds < 2:
        raise UserError(f"data.folds must be 2 or more (fold I validates, the other K-1 train), got {folds}")
    if not 0 <= fold < folds:
        raise UserError(f"data.fold must be one of 0..{folds - 1} for data.folds {folds}, got {fold}")
    if val_fraction:
        raise UserError(f"data.folds makes fold {fold} the validation split, so data.val_fraction {val_fraction} would cut a "
                        "second one: add --data.val_fraction 0")


def refuse_fixed_validation(fold: int, folder: str) -> None:
    """Folds beside a validation split that the data fixes (a ``val/`` folder): one line."""
    raise UserError(f"data.folds makes fold {fold} the validation split, but {folder} is a validation split "
                    "of its own: move its files into the class folders, or leave data.folds out")


def fold_split(members: Sequence[int], labels: Sequence[Any] | None, groups: Sequence[Any] | None, folds: int, fold: int,
               seed: int) -> tuple[list[int], list[int]]:
    """``(train, validation)``: fold ``fold`` of ``folds`` of ``members`` (the samples outside the
    test split) validates, the other folds train. Stratified by ``labels`` (one per member, a class
    or a tuple of labels; a multilabel combination too rare to stratify on leaves the split plain),
    with each group of ``groups`` kept in one fold. The folds depend on ``seed`` alone (scikit-learn's
    (Stratified)(Group)KFold), never on the training seed or the process count."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    members = list(members)
    if len(members) < folds:
        raise UserError(f"data.folds {folds} is more than the {len(members)} sample(s) outside the test split")
    if labels is not None and groups is None:
        rare, smallest = min(Counter(labels).items(), key=lambda item: item[1])
        if smallest < folds and isinstance(rare, tuple):
            labels = None  # a multilabel combination too rare to stratify on: plain folds
        elif smallest < folds:
            raise UserError(f"data.folds {folds} is more than the {smallest} sample(s) of class {rare} outside the test "
                            f"split: a stratified fold would miss it; use at most {smallest} folds")
    if labels is not None:
        ids = {label: i for i, label in enumerate(dict.fromkeys(labels))}  # classes or label combinations, as numbers
        labels = [ids[label] for label in labels]
    if groups is not None:
        group_ids = {group: i for i, group in enumerate(dict.fromkeys(groups))}  # folder paths, as numbers
        groups = [group_ids[group] for group in groups]
        if len(group_ids) < folds:
            raise UserError(f"data.folds {folds} is more than the {len(group_ids)} group(s) outside the test split: "
                            "each group stays in one fold; use fewer folds")
        splitter = (StratifiedGroupKFold(folds, shuffle=True, random_state=seed) if labels is not None
                    else GroupKFold(folds, shuffle=True, random_state=seed))
    else:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed) if labels is not None else KFold(folds, shuffle=True, random_state=seed)
    positions = list(range(len(members)))
    split = splitter.split(positions, labels if labels is not None else positions, groups)
    train, validation = next(parts for i, parts in enumerate(split) if i == fold)
    return sorted(members[i] for i in train), sorted(members[i] for i in validation)


def check_predict_split(predict_split: str, new_inputs_option: str, new_inputs: Any) -> None:
    """``predict`` labels new inputs or a labelled split, not both: one line."""
    if predict_split != "test" and new_inputs:
        raise UserError(f"data.predict_split {predict_split} labels the validation split, and {new_inputs_option} names new "
                        f"inputs: give one of the two")
