"""Data that fits in memory as tensors: files (.pt, .npz, .npy, .csv) or scikit-learn's digits and iris."""

from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset, random_split

from project.datamodules.augment import MIRRORED_DIGITS, BatchAffine
from project.datamodules.splits import check_folds, check_predict_split, fold_split, split_sizes
from project.datamodules.tensor_batches import SeededStackedTensors, StackedTensors, TensorSplit, keep_batch
from project.engine.data import InferenceInputs, LoaderOptions, ProjectDataModule, ResumableSampler, loader_class, seeded_uniforms
from project.errors import UserError
from project.engine.provenance import hash_tensors
from project.inference.inputs import is_text, non_finite_rows, read_arrays, some_rows

BUILTIN_DATASETS = ("digits", "iris")


def load_builtin(name: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Inputs, targets and class names of a dataset shipped inside scikit-learn (no download).

    digits: 1,797 real 8x8 handwritten digits as 64 features scaled to [0, 1]; iris: 150 x 4 features.
    """
    from sklearn import datasets

    if name == "digits":
        bunch = datasets.load_digits()
        inputs = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
        return inputs, torch.tensor(bunch.target), [str(t) for t in bunch.target_names]
    if name == "iris":
        bunch = datasets.load_iris()
        return torch.tensor(bunch.data, dtype=torch.float32), torch.tensor(bunch.target), [str(n) for n in bunch.target_names]
    raise UserError(f"unknown built-in dataset {name!r}: choose one of {', '.join(BUILTIN_DATASETS)}")


def class_indices(labels: np.ndarray) -> tuple[torch.Tensor, list[str]]:
    """Text class labels (``cat``, ``dog``) as indices 0..K-1 of their sorted names, and the names."""
    names = sorted({str(label) for label in labels.reshape(-1)})
    index = {name: i for i, name in enumerate(names)}
    return torch.tensor([index[str(label)] for label in labels.reshape(-1)]), names


def load_tensor_file(
    path: str, input_key: str = "x", target_key: str | None = "y", num_target_columns: int = 1
) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    """Read ``(inputs, targets, class names)`` from a file (the formats: ``read_arrays``).

    Targets that are words (a CSV label column ``cat``, ``dog``; a string array) are class labels:
    they come back as indices of their sorted names, with the names; otherwise the names are None.
    """
    inputs, targets = read_arrays(path, input_key, target_key, num_target_columns)
    if targets is None:
        return torch.as_tensor(inputs), None, None
    names = None
    if is_text(targets):
        if targets.ndim > 1 and targets.shape[1] > 1:
            raise UserError(f"{path}: text labels (e.g. {targets.flat[0]!r}) work for one target column, not {targets.shape[1]}")
        targets, names = class_indices(targets)
    targets = torch.as_tensor(targets)
    if len(inputs) != len(targets):
        raise UserError(f"{path}: inputs and targets differ in length ({len(inputs)} inputs, {len(targets)} targets)")
    return torch.as_tensor(inputs), targets, names


def standardization(train_inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and std that ``data.standardize`` applies: per channel for images (N x C x H x W),
    else per input element. A feature (near-)constant in the training split keeps a std of 1, so it
    is centred but not scaled: divided by its ~0 std, any other value it takes in validation, test
    or predict inputs would become ~1e8 and decide the prediction alone. Such features are named."""
    feature_dims = (0, 2, 3) if train_inputs.ndim == 4 else (0,)
    mean = train_inputs.mean(dim=feature_dims, keepdim=True)[0]
    std = train_inputs.std(dim=feature_dims, keepdim=True)[0]
    constant = ~(std > 1e-6 * (1 + mean.abs()))  # also catches the NaN std of a one-sample split
    if constant.any():
        kind = "channel" if train_inputs.ndim == 4 else "column" if train_inputs.ndim == 2 else "element"
        per_feature = constant.flatten() if train_inputs.ndim == 4 else constant  # images: C x 1 x 1
        where = [str(i[0]) if len(i) == 1 else str(tuple(i)) for i in per_feature.nonzero().tolist()]
        rank_zero_warn(f"data.standardize: {len(where)} input {kind}(s) constant in the training split, left unscaled "
                       f"(centred only): {', '.join(where[:20])}{', ...' if len(where) > 20 else ''}")
    return mean, torch.where(constant, torch.ones_like(std), std)


def check_class_indices(targets: torch.Tensor) -> None:
    """Class indices say the class count (the largest + 1): one class present is refused; classes
    0..K-1 without a sample are named in one warning (labels 1..K leave class 0 empty), and refused
    where they outnumber the classes present (a typo such as 1000 among 0..9)."""
    present = targets.unique().tolist()
    if len(present) == 1:
        raise UserError(f"the data has one class ({present[0]}): a classifier needs at least two; "
                        "check the label column (data.num_target_columns)")
    count = int(targets.max()) + 1
    empty = sorted(set(range(count)) - set(present))
    if not empty:
        return
    listed = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
    if len(empty) > len(present):
        raise UserError(f"class targets must be indices 0..K-1: the largest label, {count - 1}, makes {count} classes, but "
                        f"{len(empty)} of them have no sample ({listed}): a wrong label? number the classes from 0")
    rank_zero_warn(f"{len(empty)} of the {count} classes 0..{count - 1} have no sample ({listed}): the net still gets an "
                   "output for each; number the classes from 0 without gaps to leave them out")


def finite_samples(*tensors: torch.Tensor) -> torch.Tensor:
    """Per sample, whether every value of it in ``tensors`` (inputs, and floating-point targets) is finite."""
    finite = torch.ones(len(tensors[0]), dtype=torch.bool)
    for tensor in tensors:
        if tensor.is_floating_point():
            finite &= tensor.reshape(len(tensor), -1).isfinite().all(1)
    return finite


class TensorDataModule(ProjectDataModule):
    """In-memory tensors split into train/val/test with ``random_split`` and a fixed seed.

    Args:
        dataset: a scikit-learn built-in (digits, iris); or None to read ``path``.
        path: a .pt, .npz, .npy or .csv file (see ``load_tensor_file``).
        predict_path: inputs to label with ``predict``, in a file of the same kind without targets
            (a table of input columns only); without it, ``predict`` labels a split of the data.
        predict_split: the split ``predict`` labels without ``predict_path``: ``test``, or ``val``
            (with ``folds``: the out-of-fold predictions of this fold); ``predictions.csv`` then
            shows each row's target beside its prediction.
        input_key / target_key: names of the input and target arrays in .pt and .npz files.
        num_target_columns: for .npy and .csv tables, how many trailing columns are targets.
        task: classification (integer class targets) or regression (float targets, shape N x D).
        input_shape: reshape each input to this shape, e.g. [1, 8, 8] to see digits as images.
        resize_to: resize image inputs (C x H x W) to resize_to x resize_to once, bilinearly.
        standardize: subtract the training mean and divide by the training std, per feature.
        augment: random affine augmentation of each training batch (image inputs only).
        expand_train_to: grow the training split to this many images, once, with fixed-seed random
            affine copies (``expand_affine``) of its own images; validation and test stay the real,
            unaltered samples. E.g. 60000 turns the digits into an MNIST-size training set.
        expand_affine: the rotation, shift and zoom of those copies.
        val_fraction / test_fraction / split_seed: the split; the seed is separate from the
            training seed so that every training seed is tested on the same samples.
        folds / fold / fold_seed: k-fold cross-validation: the samples outside the test split are
            cut into ``folds`` folds (stratified by class, by label combination for multilabel
            targets where each has ``folds`` samples); fold ``fold`` (0..folds-1) validates and the
            others train. The folds depend on ``fold_seed`` only. Needs ``val_fraction: 0``.
        skip_non_finite: leave out training, validation and test samples whose inputs or targets hold NaN/inf
            (the count is printed) instead of stopping with a message naming the split.
        fast_batches: cut each train/val/test batch from pre-stacked tensors with one
            ``index_select`` (``StackedTensors``): the same batches, without per-sample indexing and
            collate. Off: per-sample loading (``num_workers`` and ``balance_classes`` turn it off anyway).
        keep_on_device: with fast_batches, move the tensors to the GPU once, so batches need no copy.
        loader: batch size, workers and sampling (``LoaderOptions``).
    """

    new_inputs_option = "--data.predict_path FILE (inputs without targets)"

    def __init__(
        self,
        dataset: str | None = "digits",
        path: str | None = None,
        predict_path: str | None = None,
        predict_split: str = "test",
        input_key: str = "x",
        target_key: str = "y",
        num_target_columns: int = 1,
        task: str = "classification",
        input_shape: list[int] | None = None,
        resize_to: int | None = None,
        standardize: bool = False,
        augment: BatchAffine | None = None,
        expand_train_to: int | None = None,
        expand_affine: BatchAffine | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        folds: int | None = None,
        fold: int = 0,
        fold_seed: int = 0,
        skip_non_finite: bool = False,
        fast_batches: bool = True,
        keep_on_device: bool = False,
        loader: LoaderOptions | None = None,
    ) -> None:
        super().__init__(loader, predict_split)
        check_predict_split(predict_split, "data.predict_path", predict_path)
        if (dataset is None) == (path is None):
            raise UserError("set exactly one of data.dataset (digits, iris) and data.path (a tensor file)")
        if task not in ("classification", "regression"):
            raise UserError(f"unknown task {task!r}: choose classification or regression")
        if self.loader.balance_classes and task != "classification":
            raise UserError("balance_classes needs task: classification")
        self.dataset, self.path, self.predict_path, self.task = dataset, path, predict_path, task
        self.input_key, self.target_key, self.num_target_columns = input_key, target_key, num_target_columns
        self.input_shape, self.resize_to = input_shape, resize_to
        self.standardize, self.augment = standardize, augment
        self.expand_train_to, self.expand_affine = expand_train_to, expand_affine or BatchAffine()
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        check_folds(folds, fold, val_fraction)
        self.folds, self.fold, self.fold_seed = folds, fold, fold_seed
        self.skip_non_finite = skip_non_finite
        self.fast_batches, self.keep_on_device = fast_batches, keep_on_device
        split_sizes(1, val_fraction, test_fraction)  # validate the fractions before any work
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.raw_inputs: torch.Tensor | None = None
        self.raw_train_rows: TensorSplit | None = None

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All inputs and targets, shaped and typed for the task; sets ``class_names`` for classification."""
        if self.dataset is not None:
            inputs, targets, names = load_builtin(self.dataset)
        else:
            inputs, targets, names = load_tensor_file(self.path, self.input_key, self.target_key, self.num_target_columns)
            if names is not None and self.task == "regression":
                raise UserError(f"{self.path}: regression targets must be numbers, found text labels such as {names[0]!r}")
        self.raw_inputs = inputs.float()  # as a file holds them: what an exported model takes
        inputs = self.shaped(inputs)
        if self.task == "classification":
            if targets.is_floating_point() and not torch.equal(targets, targets.round()):
                raise UserError("classification targets must be whole class indices; use task: regression for real values")
            targets = targets.long().reshape(-1) if targets.ndim <= 1 or targets.shape[1] == 1 else targets.long()
            if targets.ndim == 1 and targets.min() < 0:
                raise UserError(f"class targets must be >= 0, found {int(targets.min())}")
            self.multilabel = targets.ndim == 2
            if targets.ndim == 1 and int(targets.max()) >= len(targets):
                raise UserError(
                    f"class targets must be indices 0..K-1, but the largest is {int(targets.max())} for "
                    f"{len(targets)} samples ({len(targets.unique())} distinct labels): number the classes from 0")
            if targets.ndim == 1 and names is None:
                check_class_indices(targets)
            self.class_names = names or [str(i) for i in range(int(targets.max()) + 1 if targets.ndim == 1 else targets.shape[1])]
        else:
            targets = targets.float().reshape(len(targets), -1)
            self.num_targets = targets.shape[1]
        return inputs, targets

    def shaped(self, inputs: torch.Tensor) -> torch.Tensor:
        """Inputs as float, reshaped to ``input_shape`` and resized to ``resize_to`` when those are set."""
        inputs = inputs.float()
        if self.input_shape is not None:
            try:
                inputs = inputs.reshape(len(inputs), *self.input_shape)
            except RuntimeError as error:
                raise UserError(
                    f"cannot reshape inputs of shape {tuple(inputs.shape[1:])} to input_shape {self.input_shape}"
                ) from error
        if self.resize_to is not None:
            if inputs.ndim != 4:
                raise UserError(f"resize_to needs image inputs (C x H x W); set input_shape (inputs are {tuple(inputs.shape[1:])})")
            inputs = F.interpolate(inputs, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False)
        return inputs

    def setup(self, stage: str) -> None:
        if stage == "predict" and self.predict_path is not None:
            # New inputs only: the training file is not read; standardisation statistics come from
            # the checkpoint (load_state_dict).
            inputs, _, _ = load_tensor_file(self.predict_path, self.input_key, None, 0)
            if rows := non_finite_rows(inputs.numpy()):  # as predict_onnx.py refuses them
                raise UserError(f"{self.predict_path}: {len(rows)} row(s) hold NaN/inf ({some_rows(rows)}): "
                                "a prediction for them would be NaN; fill or remove them")
            self.predict_set = TensorDataset(self.shaped(inputs))
            self.predict_names = [f"row {i}" for i in range(len(self.predict_set))]
            return
        if self.train_set is not None:
            return
        inputs, targets = self.load()
        if self.augment is not None and inputs.ndim != 4:
            raise UserError(f"augment needs image inputs (C x H x W); set input_shape (inputs are {tuple(inputs.shape[1:])})")
        full = TensorDataset(inputs, targets)
        generator = torch.Generator().manual_seed(self.split_seed)
        splits = random_split(full, split_sizes(len(full), self.val_fraction, self.test_fraction), generator=generator)
        self.train_set, self.val_set, self.test_set = (TensorSplit(full, split.indices) for split in splits)
        if self.folds is not None:  # the test split is the same for every fold: random_split's last rows
            members = self.train_set.indices
            names = self.class_names or []
            labels = None if self.task == "regression" else [  # class names, or label combinations (multilabel)
                tuple(row) if targets.ndim == 2 else names[row] for row in targets[members].tolist()]
            train, validation = fold_split(members, labels, None, self.folds, self.fold, self.fold_seed)
            self.train_set, self.val_set = TensorSplit(full, train), TensorSplit(full, validation)
            self.hold_out_fold(self.folds, self.fold, self.fold_seed, validation)
        self.val_set, self.test_set = self.finite_only(self.val_set, "validation"), self.finite_only(self.test_set, "test")
        self.train_set = self.finite_only(self.train_set, "training")  # before the statistics are taken from it
        self.raw_train_rows = self.train_set  # rows of the file, before any expansion: an int8 export calibrates on them
        if self.expand_train_to is not None:
            self.train_set = self._expanded(self.train_set, self.expand_train_to)
        self.predict_set = self.labelled_split_to_predict()
        self.predict_names = [f"row {i}" for i in self.predict_set.indices]
        if self.standardize:
            self.mean, self.std = standardization(self.train_set.tensors[0])  # stacked once, reused by the fast batches

    def finite_only(self, split: TensorSplit, name: str) -> TensorSplit:
        """``split``, checked for samples whose inputs or targets hold NaN/inf: they would turn the
        split's loss into NaN (early stopping and the best checkpoint then judge nothing) or drop out
        of its accuracy unseen, and training ones would make ``standardize``'s statistics NaN. Refused
        with one line, or left out with ``skip_non_finite``."""
        if len(split) == 0:
            return split
        finite = finite_samples(*split.tensors)
        bad = int((~finite).sum())
        if bad == 0:
            return split
        rows = [index for index, ok in zip(split.indices, finite.tolist()) if not ok]
        if not self.skip_non_finite:
            raise UserError(
                f"the {name} split has {bad} sample(s) with NaN/inf in inputs or targets ({some_rows(rows)}): "
                "fix the data, or set data.skip_non_finite: true to leave them out")
        rank_zero_info(f"left out {bad} {name} sample(s) with NaN/inf in inputs or targets (data.skip_non_finite)")
        return TensorSplit(split.dataset, [index for index, ok in zip(split.indices, finite.tolist()) if ok])

    def _expanded(self, split: TensorSplit, size: int) -> TensorSplit:
        """``split`` followed by random affine copies of its images, cycling through them, up to ``size``."""
        inputs, targets = split.tensors
        if inputs.ndim != 4:
            raise UserError(f"expand_train_to needs image inputs (C x H x W); set input_shape (inputs are {tuple(inputs.shape[1:])})")
        if size < len(inputs):
            raise UserError(f"expand_train_to={size} is smaller than the training split ({len(inputs)} samples)")
        source = torch.arange(size - len(inputs)) % len(inputs)
        generator = torch.Generator().manual_seed(self.split_seed)
        copies = torch.cat([self.expand_affine(inputs[chunk], generator) for chunk in source.split(8192)])
        expanded = TensorDataset(torch.cat([inputs, copies]), torch.cat([targets, targets[source]]))
        return TensorSplit(expanded, list(range(size)))

    def fingerprint(self, stage: str) -> dict[str, Any]:
        """For the run record: a hash of the tensors read (after ``input_shape``/``resize_to`` and
        ``expand_train_to``) and of which rows each split holds."""
        if self.train_set is None:  # predict on new inputs only
            assert self.predict_set is not None
            inputs = self.predict_set.tensors  # type: ignore[attr-defined]
            return {"sha256": hash_tensors(inputs), "kind": "tensors", "samples": {"predict": len(self.predict_set)}}
        splits = {"train": self.train_set, "val": self.val_set, "test": self.test_set}
        sources = list({id(s.dataset): s.dataset for s in splits.values()}.values())  # type: ignore[union-attr]
        tensors = [t for source in sources for t in source.tensors]
        tensors += [torch.as_tensor(s.indices, dtype=torch.long) for s in splits.values()]  # type: ignore[union-attr]
        return {"sha256": hash_tensors(tensors), "kind": "tensors", "samples": {k: len(s) for k, s in splits.items()},  # type: ignore[arg-type]
                **self.fold_fingerprint()}

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: also the training split's statistics, which ``predict`` on new inputs needs."""
        return {**super().state_dict(), **({"mean": self.mean, "std": self.std} if self.standardize else {})}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if self.standardize and state_dict.get("mean") is not None:
            self.mean, self.std = state_dict["mean"], state_dict["std"]

    def inference_inputs(self) -> InferenceInputs:
        """An exported model takes rows as the file holds them (inputs of a .npz/.pt file); its graph
        reshapes, resizes and standardizes them as this module does."""
        assert isinstance(self.test_set, TensorSplit) and self.raw_inputs is not None
        return InferenceInputs(
            reader={"kind": "table", "input_key": self.input_key},
            raw_shape=tuple(self.raw_inputs.shape[1:]),
            test_inputs=TensorDataset(self.raw_inputs[self.test_set.indices], self.test_set.tensors[1]),
            train_inputs=TensorDataset(self.raw_inputs[self.raw_train_rows.indices], self.raw_train_rows.tensors[1])
            if self.raw_train_rows is not None else None,
            reshape=tuple(self.input_shape) if self.input_shape is not None else None,
            resize_to=self.resize_to, mean=self.mean, std=self.std, example_path=self.predict_path,
        )

    def mirror_refusal(self) -> str | None:
        if self.dataset == "digits":
            return MIRRORED_DIGITS
        return super().mirror_refusal()

    def random_training_inputs(self) -> str | None:
        if self.augment is not None:
            return "random augmentation (data.augment)"
        if self.standardize:
            return "data.standardize, which is applied to each batch after loading"
        return None

    def train_targets(self) -> torch.Tensor:
        assert isinstance(self.train_set, TensorSplit)
        return self.train_set.tensors[1]

    def _loader(self, dataset: Dataset | None, sampler: Sampler | None, drop_last: bool = False) -> DataLoader:
        uses_loader_features = self.loader.num_workers > 0 or self.loader.balance_classes
        if not self.fast_batches or uses_loader_features or not isinstance(dataset, TensorSplit):
            return super()._loader(dataset, sampler, drop_last)
        tensors = dataset.tensors
        if self.keep_on_device and self.trainer is not None:
            tensors = tuple(t.to(self.trainer.strategy.root_device) for t in tensors)
        # Its own generator: a DataLoader draws a base seed for its workers every epoch, which would
        # otherwise come from the global generator that augmentation and dropout draw from.
        stacked = (SeededStackedTensors(*tensors, run_seed=sampler.seed) if isinstance(sampler, ResumableSampler)
                   else StackedTensors(*tensors))
        return loader_class(sampler)(stacked, batch_size=self.loader_batch_size(sampler), sampler=sampler,
                                     drop_last=drop_last, collate_fn=keep_batch, generator=torch.Generator())

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches and standardize every batch, on the device that holds it. A
        training batch of the project's loader, ``[inputs, targets, weights, seeds]``, moves each
        image by draws from its own seed (``engine.data.draw_seeds``): the same on 1 or N devices."""
        x, rest = batch[0], batch[1:]
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            seeds = batch[3] if len(batch) == 4 else None  # None: another sampler (balance_classes)
            x = self.augment(x, uniforms=None if seeds is None else seeded_uniforms(seeds, BatchAffine.DRAWS))
        if self.mean is not None and self.std is not None:
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return [x, *rest]
