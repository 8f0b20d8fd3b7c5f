"""MNIST, FashionMNIST and CIFAR-10 through torchvision, downloaded only when asked."""

from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset
from torchvision import datasets

from project.datamodules.augment import MIRRORED_DIGITS
from project.datamodules.splits import check_folds, fold_split, split_sizes
from project.datamodules.transforms import ImageTransforms
from project.engine.data import InferenceInputs, LoaderOptions, ProjectDataModule
from project.errors import UserError
from project.engine.provenance import hash_files

DATASETS: dict[str, tuple[type, list[str]]] = {
    "mnist": (
        datasets.MNIST,
        ["MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/train-labels-idx1-ubyte",
         "MNIST/raw/t10k-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte"],
    ),
    "fashion_mnist": (
        datasets.FashionMNIST,
        ["FashionMNIST/raw/train-images-idx3-ubyte", "FashionMNIST/raw/train-labels-idx1-ubyte",
         "FashionMNIST/raw/t10k-images-idx3-ubyte", "FashionMNIST/raw/t10k-labels-idx1-ubyte"],
    ),
    "cifar10": (
        datasets.CIFAR10,
        ["cifar-10-batches-py/data_batch_1", "...", "cifar-10-batches-py/data_batch_5",
         "cifar-10-batches-py/test_batch", "cifar-10-batches-py/batches.meta"],
    ),
}


class TorchvisionDataModule(ProjectDataModule):
    """A torchvision classification dataset: its train set split into train/val, its test set for test.

    Args:
        name: mnist, fashion_mnist or cifar10.
        root: where the dataset folders live (``root/MNIST/raw/...``).
        download: fetch missing files from the internet; off by default so that an offline
            machine fails at once with a message saying which files to put where.
        transforms: resize, channels, augmentation and normalisation (``ImageTransforms``).
        val_fraction / split_seed: the part of the official train set held out for validation.
        predict_split: the split ``predict`` labels: ``test`` (the official test set), or ``val``
            (with ``folds``: the out-of-fold predictions of this fold), each row with its target.
        folds / fold / fold_seed: k-fold cross-validation over the official train set, stratified
            by class: fold ``fold`` (0..folds-1) validates, the others train; the official test set
            tests every fold. The folds depend on ``fold_seed`` only. Needs ``val_fraction: 0``.
        loader: batch size, workers and sampling (``LoaderOptions``).
    """

    def __init__(
        self,
        name: str = "mnist",
        root: str = "data",
        download: bool = False,
        transforms: ImageTransforms | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        predict_split: str = "test",
        folds: int | None = None,
        fold: int = 0,
        fold_seed: int = 0,
        loader: LoaderOptions | None = None,
    ) -> None:
        super().__init__(loader, predict_split)
        check_folds(folds, fold, val_fraction)
        self.folds, self.fold, self.fold_seed = folds, fold, fold_seed
        if name not in DATASETS:
            raise UserError(f"unknown torchvision dataset {name!r}: choose one of {', '.join(DATASETS)}")
        self.name, self.root, self.download = name, Path(root), download
        self.transforms = transforms or ImageTransforms()
        self.val_fraction, self.split_seed = val_fraction, split_seed
        split_sizes(1, val_fraction, 0.0)

    def _open(self, train: bool, transform: object) -> Dataset:
        dataset_class, expected_files = DATASETS[self.name]
        try:
            return dataset_class(str(self.root), train=train, transform=transform, download=self.download)
        except RuntimeError as error:
            if self.download:
                raise UserError(f"could not download {self.name} into {self.root}: {error}") from error
            listed = "\n  ".join(str(self.root / f) for f in expected_files)
            raise UserError(
                f"{self.name} files not found under {self.root} and data.download is false. Put them at:\n  "
                f"{listed}\n(uncompressed), or set data.download: true on a machine with internet"
            ) from error

    def prepare_data(self) -> None:
        if self.download:  # once per node, before setup() runs on every rank
            self._open(train=True, transform=None)
            self._open(train=False, transform=None)

    def setup(self, stage: str) -> None:
        train_transform, eval_transform = self.transforms.build(train=True), self.transforms.build(train=False)
        train_full = self._open(train=True, transform=train_transform)
        self.class_names = list(train_full.classes)  # type: ignore[attr-defined]
        sizes = split_sizes(len(train_full), self.val_fraction, 0.0)  # type: ignore[arg-type]
        order = torch.randperm(len(train_full), generator=torch.Generator().manual_seed(self.split_seed)).tolist()  # type: ignore[arg-type]
        train, validation = order[: sizes[0]], order[sizes[0] :]
        if self.folds is not None:
            targets = torch.as_tensor(train_full.targets).tolist()  # type: ignore[attr-defined]
            train, validation = fold_split(range(len(targets)), targets, None, self.folds, self.fold, self.fold_seed)
            self.hold_out_fold(self.folds, self.fold, self.fold_seed, validation)
        self.train_set = Subset(train_full, train)
        self.val_set = Subset(self._open(train=True, transform=eval_transform), validation)
        self.test_set = self._open(train=False, transform=eval_transform)
        self.predict_set = self.labelled_split_to_predict()
        self.predict_names = ([f"train {i}" for i in validation] if self.predict_split == "val"  # rows of the official train set
                              else [f"test {i}" for i in range(len(self.test_set))])  # type: ignore[arg-type]

    def inference_inputs(self) -> InferenceInputs:
        unnormalized = self.transforms.build(train=False, normalize=False)
        train = Subset(self._open(train=True, transform=unnormalized), self.train_set.indices) if isinstance(self.train_set, Subset) else None
        return self.transforms.inference_inputs(self._open(train=False, transform=unnormalized), train_inputs=train)

    def mirror_refusal(self) -> str | None:
        if self.name == "mnist":
            return MIRRORED_DIGITS
        return super().mirror_refusal()

    def random_training_inputs(self) -> str | None:
        return self.transforms.randomness()

    def train_targets(self) -> torch.Tensor:
        assert isinstance(self.train_set, Subset)
        targets = torch.as_tensor(self.train_set.dataset.targets)  # type: ignore[attr-defined]
        return targets[self.train_set.indices]

    def fingerprint(self, stage: str) -> dict:
        """For the run record: a hash of the dataset's files under ``root`` (names and sizes)."""
        folder = self.root / DATASETS[self.name][1][0].split("/")[0]
        files = sorted(str(p) for p in folder.rglob("*") if p.is_file())
        return {**hash_files((("", path) for path in files), self.root),
                "samples": {"train": len(self.train_set), "val": len(self.val_set), "test": len(self.test_set)},  # type: ignore[arg-type]
                **self.fold_fingerprint()}
