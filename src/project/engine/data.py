"""The data-module contract: what a data module gives the rest of the template, and the loaders that
make one device and N devices, with or without gradient accumulation, train the same model."""

import hashlib
import math
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, WeightedRandomSampler

from project.errors import UserError
from project.engine.internals import UnrepeatedDistributedSampler


PREDICT_SPLITS = ("test", "val")  # data.predict_split
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


@dataclass
class LoaderOptions:
    """DataLoader settings, the same for every data module (``data.loader.*`` in configs)."""

    global_batch_size: int | None = None
    """Samples per optimizer step over all devices and accumulation steps. Each device then loads
    ``global_batch_size / (world_size * accumulate_grad_batches)`` per batch, so the recipe stays the
    same on 1 or N devices. It must divide evenly."""
    batch_size: int | None = None
    """Samples per batch on each device, if you would rather fix that than the global batch
    (64 when neither is given; set one or the other, not both)."""
    num_workers: int = 0
    """Loader worker processes (0 loads in the main process)."""
    pin_memory: bool = False
    """Page-lock batches for faster host-to-GPU copies."""
    persistent_workers: bool = False
    """Keep workers alive between epochs (only with num_workers > 0)."""
    drop_last: bool = False
    """Drop the last incomplete global training batch (the same samples on 1 or N devices)."""
    balance_classes: bool = False
    """Draw training samples with a WeightedRandomSampler so each class is seen equally often."""


@dataclass
class InferenceInputs:
    """How a deployed model takes its inputs, from ``ProjectDataModule.inference_inputs``.

    A caller feeds *raw* inputs: image pixels in [0, 1] after conversion and resizing
    (``project.inference.inputs.image_pixels``), or a table's rows as read from the file. The
    exported graph does the arithmetic from there to what the net takes, in this order: ``reshape``,
    ``resize_to``, then ``(x - mean) / std``.
    """

    reader: dict[str, Any]
    """How a file becomes one raw input, for ``project.inference``: ``{"kind": "image", "channels": C,
    "size": S}`` or ``{"kind": "table", "input_key": "x"}`` (the array name in .npz/.pt files)."""
    raw_shape: tuple[int, ...]
    """The shape of one raw input."""
    test_inputs: Dataset
    """``(raw input, target)`` for the test split, in the order ``test_dataloader`` gives its samples:
    the export is checked on them against the trained model."""
    train_inputs: Dataset | None = None
    """``(raw input, target)`` for the training split, read for evaluation (no augmentation): the
    samples an int8 export calibrates its activation ranges on. None: not offered."""
    reshape: tuple[int, ...] | None = None
    resize_to: int | None = None
    """Bilinear resizing of image inputs to ``resize_to x resize_to`` (no antialiasing)."""
    mean: torch.Tensor | None = None
    """Subtracted, then divided by ``std``; both broadcast over a batch of reshaped, resized inputs."""
    std: torch.Tensor | None = None
    example_path: str | None = None
    """A file or folder of this data's inputs that ``predict_onnx.py`` reads (images, or a table of
    input rows), for the command ``export`` prints; None when there is none."""


class ProjectDataModule(LightningDataModule):
    """The base class of every data module here: what the rest of the template reads from one.

    A subclass fills, in ``setup(stage)``:

    - ``train_set``, ``val_set``, ``test_set``: datasets of ``(input, target)`` pairs (``val_set``
      may be empty: training then runs without validation); ``predict_set``: what ``predict``
      labels, a dataset whose items start with the input (targets, if any, are not read).
      Prediction rows are numbered by their position in ``predict_set``, which Lightning's
      predict loop tracks beside the batch;
    - ``class_names`` for classification (its length is the class count, and
      ``multilabel = True`` when targets are multi-hot), or ``num_targets`` for regression;
    - optionally ``predict_names``: a name for each row of ``predict_set`` (a file path).
      Without new inputs, ``predict_set`` is the split ``labelled_split_to_predict`` gives
      (``data.predict_split``), whose targets ``predictions.csv`` then shows (``predict_targets``).

    and may override, where the defaults do not fit: ``fingerprint`` (what ``record.json`` says
    about the data), ``random_training_inputs`` (whether cached features would be wrong),
    ``train_targets`` (for ``balance_classes``), ``new_inputs_option`` (the option that names new
    inputs for ``predict``, shown in the command ``fit`` prints). Loaders, batch sizes, samplers,
    DDP shards and per-sample loss weights come from here; subclasses load their data and leave
    those alone.
    """

    new_inputs_option: str | None = None
    """How a user gives new inputs to ``predict``, e.g. ``"--data.predict_dir DIR (a folder of images)"``."""

    def __init__(self, loader: LoaderOptions | None = None, predict_split: str = "test") -> None:
        super().__init__()
        # The subclass's arguments too (Lightning collects the whole chain): in every checkpoint, so
        # that test, predict and export need the checkpoint alone. Not logged: the run's config.yaml
        # has them, and Lightning refuses to log a model and data that share an argument's name.
        self.save_hyperparameters(logger=False)
        self.loader = loader or LoaderOptions()
        self.training_partners = False  # pair_training_samples()
        if predict_split not in PREDICT_SPLITS:
            raise UserError(f"data.predict_split takes {' or '.join(PREDICT_SPLITS)} (the labelled split predict labels "
                            f"when given no new inputs), got {predict_split!r}")
        self.predict_split = predict_split
        self.validation_fold: dict[str, Any] | None = None  # hold_out_fold()
        if self.loader.batch_size is not None and self.loader.global_batch_size is not None:
            raise UserError(f"set data.loader.global_batch_size or data.loader.batch_size, not both (got "
                            f"{self.loader.global_batch_size} and {self.loader.batch_size}): for a fixed per-device "
                            f"batch use --data.loader '{{\"global_batch_size\": null, \"batch_size\": {self.loader.batch_size}}}'")
        for name, value in (("batch_size", self.loader.batch_size), ("global_batch_size", self.loader.global_batch_size)):
            if value is not None and value < 1:
                raise UserError(f"data.loader.{name} must be >= 1, got {value}")
        if self.loader.num_workers < 0:
            raise UserError(f"data.loader.num_workers must be >= 0 (0 loads in the main process), got {self.loader.num_workers}")
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.predict_set: Dataset | None = None
        self.class_names: list[str] | None = None
        self.multilabel = False
        self.num_targets: int | None = None
        self.predict_names: list[str] = []
        self._train_loader: ResumableLoader | None = None
        self._train_loader_state: dict[str, int] | None = None  # from a checkpoint, for the next train loader

    # -- what a subclass may say about its data ----------------------------------------------------

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names else None

    def fingerprint(self, stage: str) -> dict[str, Any]:
        """For ``record.json``: a hash of what was read, with sample counts (``engine.provenance``
        has helpers for tensors and files). The default only counts."""
        splits = {"train": self.train_set, "val": self.val_set, "test": self.test_set, "predict": self.predict_set}
        return {"sha256": None, "note": f"{type(self).__name__} does not override fingerprint(stage)",
                "samples": {name: len(s) for name, s in splits.items() if s is not None}}  # type: ignore[arg-type]

    def hold_out_fold(self, folds: int, fold: int, seed: int, validation: list[Any]) -> None:
        """Say that this run validates on fold ``fold`` of ``folds`` (cross-validation, ``data.folds``),
        which holds the samples ``validation`` (row indices, file paths): every checkpoint saves them,
        ``record.json`` their count and hash (``fold_fingerprint``)."""
        self.validation_fold = {"folds": folds, "fold": fold, "seed": seed, "validation": list(validation)}

    def fold_fingerprint(self) -> dict[str, Any]:
        """For ``fingerprint``: the fold this run validates on, or nothing without folds."""
        if self.validation_fold is None:
            return {}
        members = "\n".join(map(str, self.validation_fold["validation"])).encode()
        return {"fold": {**{k: v for k, v in self.validation_fold.items() if k != "validation"},
                         "validation_samples": len(self.validation_fold["validation"]),
                         "validation_sha256": hashlib.sha256(members).hexdigest()}}

    def labelled_split_to_predict(self) -> Dataset | None:
        """The split ``predict`` labels when given no new inputs: ``val_set`` or ``test_set``, as
        ``data.predict_split`` says."""
        return self.val_set if self.predict_split == "val" else self.test_set

    @property
    def predict_targets(self) -> bool:
        """Whether ``predict_set`` is a labelled split (the validation or test split), whose items
        carry their targets second."""
        return self.predict_set is not None and any(self.predict_set is split for split in (self.val_set, self.test_set))

    def random_training_inputs(self) -> str | None:
        """What makes a training input differ between epochs (an augmentation), or ``None`` when
        every epoch sees the same inputs: cached features are right only then. Data modules that
        change batches after loading (``on_after_batch_transfer``) must say so too. The default
        cannot tell, and says so."""
        return f"inputs that may change between epochs ({type(self).__name__} does not override random_training_inputs)"

    def mirror_refusal(self) -> str | None:
        """Why averaging a model's outputs over an input and its mirror image (``model.tta: hflip``)
        makes no sense for this data, or ``None`` when it may. The default allows it for image
        inputs (channels x height x width) only; data whose classes change when mirrored say so."""
        shape = self.sample_shape()
        if shape is None or len(shape) != 3:
            return f"its inputs are not images (one input has shape {'x'.join(map(str, shape or ()))}, not channels x height x width)"
        return None

    def train_targets(self) -> torch.Tensor:
        """Class index of every training sample, in dataset order (for ``balance_classes``)."""
        raise UserError(f"{type(self).__name__} does not support data.loader.balance_classes (it has no train_targets)")

    def sample_shape(self) -> tuple[int, ...] | None:
        """The shape of one input as the net receives it (after transforms), from the first sample
        of the first split that has one; None before ``setup``."""
        for dataset in (self.train_set, self.val_set, self.test_set, self.predict_set):
            if dataset is not None and len(dataset):  # type: ignore[arg-type]
                return tuple(dataset[0][0].shape)
        return None

    def inference_inputs(self) -> InferenceInputs:
        """What an exported model needs to read its inputs (``train.py export``); call after
        ``setup("test")``. Preprocessing that is tensor arithmetic (normalisation, standardisation)
        goes into the exported graph, the rest (reading files, resizing images) is ``reader``'s."""
        raise UserError(f"{type(self).__name__} does not say how an exported model reads its inputs: "
                        "override inference_inputs() (see project.engine.data.InferenceInputs)")

    def has_validation(self) -> bool:
        return self.val_set is None or len(self.val_set) > 0  # type: ignore[arg-type]

    # -- loaders ------------------------------------------------------------------------------------

    def _world(self) -> tuple[int, int, int]:
        """``(world_size, global_rank, accumulate_grad_batches)`` of the attached trainer, or one process."""
        trainer = self.trainer
        if trainer is None:
            return 1, 0, 1
        return trainer.world_size, trainer.global_rank, trainer.accumulate_grad_batches

    @property
    def batch_size(self) -> int:
        """Samples per batch on this device; setting it fixes that (``data.loader.batch_size``) and
        drops ``global_batch_size``. For Lightning's batch-size finder (``train.py scale_batch_size``)."""
        return self.batch_size_per_device()

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.loader = replace(self.loader, batch_size=value, global_batch_size=None)

    def batch_size_per_device(self) -> int:
        """Samples in one batch on this device, derived from ``global_batch_size`` when that is set."""
        if self.loader.global_batch_size is None:
            return self.loader.batch_size or 64
        world_size, _, accumulate = self._world()
        shares = world_size * accumulate
        if self.loader.global_batch_size % shares:
            raise UserError(
                f"data.loader.global_batch_size={self.loader.global_batch_size} does not divide into "
                f"{world_size} device(s) x {accumulate} accumulation step(s): make it a multiple of {shares}"
            )
        return self.loader.global_batch_size // shares

    def train_dataloader(self) -> DataLoader:
        world_size, _, accumulate = self._world()
        global_batch = self.batch_size_per_device() * world_size * accumulate
        if self.loader.drop_last and self.train_set is not None and len(self.train_set) < global_batch:  # type: ignore[arg-type]
            raise UserError(
                f"data.loader.drop_last would drop every training sample: the training split has {len(self.train_set)}"  # type: ignore[arg-type]
                f" samples, fewer than one global batch of {global_batch}"
            )
        sampler = self._train_sampler()
        # ResumableSampler drops the last incomplete batch itself, alike on 1 and N processes.
        loader = self._loader(self.train_set, sampler, drop_last=self.loader.drop_last and not isinstance(sampler, ResumableSampler))
        if isinstance(loader, ResumableLoader):
            self._train_loader = loader
            if self._train_loader_state is not None:
                loader.load_state_dict(self._train_loader_state)
                self._train_loader_state = None
        return loader

    def pair_training_samples(self) -> None:
        """From now on each training batch holds its samples, then each one's partner in the same
        order (twice as many inputs and targets): the sample before it in the epoch's shuffled
        order, whichever rank or accumulated batch that one is in. What mixes samples (MixUp,
        CutMix) then pairs them alike on 1 or N devices, with or without accumulation."""
        if self.loader.balance_classes:
            raise UserError("mixing samples (model.mixup_alpha, model.cutmix_alpha) does not work with data.loader.balance_classes")
        self.training_partners = True

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: how far the train loader is into its epoch.

        Lightning saves a stateful train loader's state too, but hands it back only when it builds
        the loader after restoring a checkpoint; the lr schedule needs the epoch's length in
        ``configure_optimizers``, which makes Lightning build the loader before. The data module's
        state is restored before that (Lightning 2.6.6, engine.internals), so it carries the position."""
        state = {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}
        return {**state, "validation_fold": self.validation_fold} if self.validation_fold is not None else state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_loader_state = state_dict.get("train_loader")

    def val_dataloader(self) -> DataLoader | list:
        if not self.has_validation():
            return []  # no validation (val_fraction 0): engine.callbacks.run_checks says so
        return self._loader(self.val_set, self._evaluation_sampler(self.val_set))

    def test_dataloader(self) -> DataLoader:
        if self.test_set is not None and len(self.test_set) == 0:  # type: ignore[arg-type]
            raise UserError("the test split is empty (data.test_fraction is 0 and there is no test folder): nothing to test")
        return self._loader(self.test_set, self._evaluation_sampler(self.test_set))

    def predict_dataloader(self) -> DataLoader:
        if self.predict_targets and len(self.predict_set) == 0:  # type: ignore[arg-type]
            raise UserError(f"the {SPLIT_NAMES[self.predict_split]} split is empty: nothing to predict (data.predict_split {self.predict_split})")
        return self._loader(self.predict_set, self._evaluation_sampler(self.predict_set))

    def _train_sampler(self) -> Sampler | None:
        """``ResumableSampler``, so that DDP trains the same model as one device; Lightning calls
        ``set_epoch`` for a new order each epoch."""
        world_size, rank, accumulate = self._world()
        if self.loader.balance_classes:
            # Lightning shards this one across ranks itself (DistributedSamplerWrapper).
            targets = self.train_targets()
            class_counts = torch.bincount(targets)
            weights = 1.0 / class_counts.clamp(min=1).double()[targets]
            return WeightedRandomSampler(weights, num_samples=len(targets), replacement=True)
        if self.train_set is None:
            return None
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))  # set by seed_everything
        return ResumableSampler(self.train_set, num_replicas=world_size, rank=rank, seed=seed, batch_size=self.batch_size_per_device(),
                                accumulate=accumulate, drop_last=self.loader.drop_last, partners=self.training_partners)

    def _evaluation_sampler(self, dataset: Dataset | None) -> Sampler | None:
        """Under DDP each rank evaluates every ``world_size``-th sample, with no padding, so every
        sample is counted once and metrics equal a single device's (Lightning's own sampler would
        repeat samples to even out the ranks)."""
        world_size, rank, _ = self._world()
        if dataset is None or world_size == 1:
            return None
        return UnrepeatedDistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)

    def loader_batch_size(self, sampler: Sampler | None) -> int:
        """Items a DataLoader puts in one batch: twice the batch when it carries each sample's partner."""
        partners = isinstance(sampler, ResumableSampler) and sampler.partners
        return self.batch_size_per_device() * (2 if partners else 1)

    def _loader(self, dataset: Dataset | None, sampler: Sampler | None, drop_last: bool = False) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() did not create this split")
        if isinstance(sampler, ResumableSampler):
            dataset = SeededSamples(dataset, sampler.seed)
        return loader_class(sampler)(
            dataset,
            batch_size=self.loader_batch_size(sampler),
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.loader.num_workers,
            pin_memory=self.loader.pin_memory,
            persistent_workers=self.loader.persistent_workers and self.loader.num_workers > 0,
            worker_init_fn=leave_signals_to_the_main_process,
        )


class ResumableSampler(DistributedSampler):
    """A seeded shuffle, the same permutation on 1 or N processes, cut into one slice per rank.

    Rank ``r`` takes every ``world_size``-th sample of the permutation, so the union of the ranks'
    ``i``-th batches is exactly the ``i``-th batch of one process with the global batch size.
    Beyond ``DistributedSampler`` it

    - drops the last incomplete *global* batch (one optimizer step's samples over all ranks and
      accumulated batches) with ``drop_last``, before slicing, so 1 and N processes, with or
      without accumulation, run the same steps and leave out the same samples;
    - gives each sample of each batch its weight in the loss (``loss_weights``): one over the real
      samples of its whole optimizer step, over all ranks and accumulated batches, times the ranks
      and accumulated batches that Lightning and DDP divide by; zero for the few samples that repeat
      only to give every rank as many batches, and for partners;
    - leaves out the first ``skip`` samples of its next epoch (``ResumableLoader`` sets it);
    - yields each sample as ``(index, epoch)``, so that whoever reads it, in whichever process or
      loader worker, can draw that sample's random numbers (``SeededSamples``, ``draw_seeds``);
    - with ``partners``, follows each batch's samples with their partners, in the same order: the
      sample before each in the permutation (the last real one for the first), which a loader with
      twice the batch size delivers together (``ProjectDataModule.pair_training_samples``).
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, batch_size: int,
                 accumulate: int = 1, drop_last: bool = False, partners: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.batch_size, self.accumulate, self.partners = batch_size, accumulate, partners
        global_batch = batch_size * num_replicas * accumulate  # samples per optimizer step
        self.kept = len(dataset) // global_batch * global_batch if drop_last else len(dataset)  # type: ignore[arg-type]
        self.num_samples = math.ceil(self.kept / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)  # DistributedSampler's permutation
        order = torch.randperm(len(self.dataset), generator=generator).tolist()[: self.kept]  # type: ignore[arg-type]
        while len(order) < self.total_size:  # as DistributedSampler: repeat the first ones to even out the ranks
            order += order[: self.total_size - len(order)]
        start, self.skip = self.skip, 0
        positions = range(self.rank, self.total_size, self.num_replicas)[start:]
        mine = [(order[q], self.epoch) for q in positions]
        if not self.partners:
            return iter(mine)
        # Positions past the real samples repeat earlier ones and count zero: any partner does.
        partners = [(order[(q - 1) % self.kept] if q < self.kept else order[q - 1], self.epoch) for q in positions]
        paired = []
        for first in range(0, len(mine), self.batch_size):
            paired += mine[first : first + self.batch_size] + partners[first : first + self.batch_size]
        return iter(paired)

    def __len__(self) -> int:
        return self.num_samples * (2 if self.partners else 1)

    def batch_counts(self, batch: int) -> tuple[int, int]:
        """``(real samples in batch number batch of the epoch on this rank, real samples in its optimizer step)``."""
        real_here = math.ceil(max(0, self.kept - self.rank) / self.num_replicas)
        per_step, step = self.batch_size * self.num_replicas * self.accumulate, batch // self.accumulate
        return (max(0, min((batch + 1) * self.batch_size, real_here) - batch * self.batch_size),
                min(self.kept, (step + 1) * per_step) - step * per_step)

    def loss_weights(self, batch: int, items: int) -> torch.Tensor:
        """The weight of each of the ``items`` samples of batch number ``batch`` in its loss, such that
        the loss Lightning divides by the accumulated batches and DDP averages over the ranks is the
        mean over the real samples of the whole optimizer step: a step of k batches of b is one batch
        of k*b, also when the last batch is short, and N ranks are one process."""
        real, step_total = self.batch_counts(batch)
        weights = torch.zeros(items, dtype=torch.float64)
        weights[:real] = self.num_replicas * self.accumulate / step_total
        return weights


def mix32(x: Any) -> Any:
    """A 32-bit integer hash (xor-shift-multiply) of a Python int or an int64 tensor, elementwise.
    Values stay below 2**59, so int64 arithmetic never overflows."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & 0xFFFFFFFF
    x = ((x >> 16) ^ x) * 0x45D9F3B & 0xFFFFFFFF
    return (x >> 16) ^ x


def draw_seeds(run_seed: int, epoch: int, indices: Any) -> Any:
    """The seed of each sample's random draws in an epoch (an int, or an int64 tensor like
    ``indices``): a hash of the run's seed, the epoch and the sample's index alone, so a random
    augmentation draws the same for that sample on 1 or N processes, in any loader worker and
    any accumulated batch, and in a resumed run."""
    return mix32(mix32(mix32(run_seed & 0xFFFFFFFF) ^ (epoch & 0xFFFFFFFF)) ^ indices)


def seeded_uniforms(seeds: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` numbers in [0, 1) per seed (``len(seeds) x count``, float64), from the seeds
    alone: a whole batch's per-sample draws in a few tensor operations, on the seeds' device."""
    draws = mix32(mix32(seeds.long())[:, None] ^ torch.arange(1, count + 1, device=seeds.device))
    return draws.double() / 2**32


class SeededSamples(Dataset):
    """The training split read sample by sample under each sample's own seed: ``dataset[(index,
    epoch)]`` seeds torch's generator with ``draw_seeds`` and reads ``dataset[index]``, so the random
    transforms of an image pipeline draw from the run's seed, the epoch and the sample only (and
    leave the run's own random state as it was). A sample comes back with its seed appended, for
    augmentations applied to whole batches later (``TensorDataModule``)."""

    def __init__(self, dataset: Dataset, run_seed: int) -> None:
        self.dataset, self.run_seed = dataset, run_seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, ...]:
        index, epoch = key
        seed = draw_seeds(self.run_seed, epoch, index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sample = self.dataset[index]
        return (*sample, seed)


class ResumableLoader(DataLoader):
    """A DataLoader over a ``ResumableSampler`` that knows how far into its epoch it is.

    ``state_dict()`` is that position; ``load_state_dict`` gives a resumed run's loader the position
    of its checkpoint (``ProjectDataModule.state_dict`` carries it). Lightning restores its own
    counters but iterates a loader from its start; this one leaves out the batches that were
    trained on before the checkpoint, so a run resumed part-way through an epoch goes on with the
    batch an uninterrupted run would have trained on next. Its dataset is a ``SeededSamples``; each
    batch it yields is ``[inputs, targets, weights, seeds]``: each sample's loss weight
    (``ResumableSampler.loss_weights``) and the seed of its random draws. Lightning fetches no batch ahead from a
    loader with a length, so the batches counted here are the batches trained on (engine.internals).
    """

    sampler: ResumableSampler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch, self._batches_done = -1, 0
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches done) from a checkpoint

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches_done": self._batches_done}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume_at = (state_dict["epoch"], state_dict["batches_done"])

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # A generator: the epoch is read when the first batch is asked for, after Lightning's set_epoch.
        epoch = self.sampler.epoch
        skip = self._resume_at[1] if self._resume_at is not None and self._resume_at[0] == epoch else 0
        self._resume_at = None
        self.sampler.skip = skip * self.sampler.batch_size  # samples, without their partners
        self._epoch, self._batches_done = epoch, skip
        random_state = torch.get_rng_state()
        batches = super().__iter__()
        if skip:
            # A new iterator draws a seed from torch's generator (torch 2.x). An uninterrupted run drew
            # it at the epoch's start, before the checkpoint saved the random state it resumes with:
            # drawn again here, every random augmentation after it would differ.
            torch.set_rng_state(random_state)
        for *batch, seeds in batches:
            weights = self.sampler.loss_weights(self._batches_done, len(batch[0]))
            self._batches_done += 1  # before the batch is trained on: a checkpoint after it counts it
            yield [*batch, weights, seeds]


def loader_class(sampler: Sampler | None) -> type[DataLoader]:
    """``ResumableLoader`` for the training sampler that can resume, ``DataLoader`` for any other."""
    return ResumableLoader if isinstance(sampler, ResumableSampler) else DataLoader


def leave_signals_to_the_main_process(worker_id: int) -> None:
    """Loader workers ignore SIGTERM and SIGUSR1, which schedulers send to every process of a job:
    the main process saves a checkpoint and stops (``engine.signals``), while a worker killed
    first would end the run with a loader error instead. Workers still exit with the main process."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
