"""What every data module shares: DataLoader options, batch-size arithmetic, samplers and predict indexing."""

import math
import os
import signal
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, WeightedRandomSampler

from project.datamodules.transforms import ImageTransforms
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


class ResumableSampler(DistributedSampler):
    """A seeded shuffle, the same permutation on 1 or N processes, cut into one slice per rank.

    Rank ``r`` takes every ``world_size``-th sample of the permutation, so the union of the ranks'
    ``i``-th batches is exactly the ``i``-th batch of one process with the global batch size.
    Beyond ``DistributedSampler`` it

    - drops the last incomplete *global* batch (one optimizer step's samples over all ranks and
      accumulated batches) with ``drop_last``, before slicing, so 1 and N processes, with or
      without accumulation, run the same steps and leave out the same samples;
    - says, for each batch it yields, how many of its samples are real (the few that repeat only to
      give every rank as many count zero) and how many real samples the whole optimizer step holds
      over all ranks and accumulated batches (``batch_weights``, read by the training module);
    - can begin one epoch part-way through (``resume_at``): resuming from a checkpoint written
      mid-epoch, Lightning restores its counters but iterates the loader from its start again, so
      the samples already trained on are left out here.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, batch_size: int,
                 accumulate: int = 1, drop_last: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.batch_size, self.accumulate = batch_size, accumulate
        global_batch = batch_size * num_replicas * accumulate  # samples per optimizer step
        self.kept = len(dataset) // global_batch * global_batch if drop_last else len(dataset)  # type: ignore[arg-type]
        self.num_samples = math.ceil(self.kept / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.batch_weights: deque[tuple[int, int]] = deque()
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, samples_done: int) -> None:
        self._resume = (epoch, samples_done)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)  # DistributedSampler's permutation
        order = torch.randperm(len(self.dataset), generator=generator).tolist()[: self.kept]  # type: ignore[arg-type]
        while len(order) < self.total_size:  # as DistributedSampler: repeat the first ones to even out the ranks
            order += order[: self.total_size - len(order)]
        mine = order[self.rank : self.total_size : self.num_replicas]
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = self._resume[1]
            self._resume = None
        self.batch_weights = deque(self._weights(first_batch=start // self.batch_size))
        return iter(mine[start:])

    def _weights(self, first_batch: int) -> list[tuple[int, int]]:
        """``(real samples in the batch on this rank, real samples in its optimizer step)`` per batch."""
        real_here = math.ceil(max(0, self.kept - self.rank) / self.num_replicas)
        per_step = self.batch_size * self.num_replicas * self.accumulate
        batches = math.ceil(self.num_samples / self.batch_size)
        return [(max(0, min((j + 1) * self.batch_size, real_here) - j * self.batch_size),
                 min(self.kept, (j // self.accumulate + 1) * per_step) - j // self.accumulate * per_step)
                for j in range(first_batch, batches)]


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


class BaseDataModule(LightningDataModule):
    """Loaders shared by all data modules; subclasses fill the datasets in ``setup``."""

    def __init__(self, loader: LoaderOptions | None = None) -> None:
        super().__init__()
        self.loader = loader or LoaderOptions()
        if self.loader.batch_size is not None and self.loader.global_batch_size is not None:
            raise UserError("set data.loader.global_batch_size or data.loader.batch_size, not both")
        for name in ("batch_size", "global_batch_size"):
            value = getattr(self.loader, name)
            if value is not None and value < 1:
                raise UserError(f"data.loader.{name} must be >= 1, got {value}")
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.predict_set: Dataset | None = None
        self.class_names: list[str] | None = None
        self.predict_names: list[str] = []
        self._train_sampler_in_use: ResumableSampler | None = None
        self._resume_position: tuple[int, int] | None = None  # (epoch, batches done), from ResumeState

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names else None

    def sample_shape(self) -> tuple[int, ...] | None:
        """The shape of one input as the net receives it (after transforms), from the first sample
        of the first split that has one; None before ``setup``."""
        for dataset in (self.train_set, self.val_set, self.test_set, self.predict_set):
            if dataset is not None and len(dataset):  # type: ignore[arg-type]
                return tuple(dataset[0][0].shape)
        return None

    def random_training_inputs(self) -> str | None:
        """What makes a training input differ between epochs (an augmentation), or ``None``.

        Cached features are only right when every epoch sees the same inputs. Data modules that
        change batches after loading (``on_after_batch_transfer``) must say so here too.
        """
        transforms = getattr(self, "transforms", None)
        steps = transforms.random_steps() if isinstance(transforms, ImageTransforms) else []
        return f"random augmentation (data.transforms: {', '.join(steps)})" if steps else None

    def train_targets(self) -> torch.Tensor:
        """Class index of every training sample, in dataset order (for ``balance_classes``)."""
        raise NotImplementedError(f"{type(self).__name__} does not support balance_classes")

    def _world(self) -> tuple[int, int, int]:
        """``(world_size, global_rank, accumulate_grad_batches)`` of the attached trainer, or one process."""
        trainer = self.trainer
        if trainer is None:
            return 1, 0, 1
        return trainer.world_size, trainer.global_rank, trainer.accumulate_grad_batches

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
        return self._loader(self.train_set, sampler, drop_last=self.loader.drop_last and not isinstance(sampler, ResumableSampler))

    def next_train_batch_weights(self) -> tuple[int, int] | None:
        """For the training batch about to be used: ``(its real samples, the real samples of its
        whole optimizer step over all ranks)``, or None when the sampler does not say
        (``balance_classes``), in which case every batch counts alike."""
        sampler = self._train_sampler_in_use
        return sampler.batch_weights.popleft() if sampler is not None and sampler.batch_weights else None

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is not None and len(self.val_set) == 0:  # type: ignore[arg-type]
            return []  # no validation (val_fraction 0): TrainingModule says so and trains without it
        return self._loader(self.val_set, self._evaluation_sampler(self.val_set))

    def has_validation(self) -> bool:
        return self.val_set is None or len(self.val_set) > 0  # type: ignore[arg-type]

    def test_dataloader(self) -> DataLoader:
        if self.test_set is not None and len(self.test_set) == 0:  # type: ignore[arg-type]
            raise UserError("the test split is empty (data.test_fraction is 0 and there is no test folder): nothing to test")
        return self._loader(self.test_set, self._evaluation_sampler(self.test_set))

    def predict_dataloader(self) -> DataLoader:
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
        self._train_sampler_in_use = ResumableSampler(
            self.train_set, num_replicas=world_size, rank=rank, seed=seed, batch_size=self.batch_size_per_device(),
            accumulate=accumulate, drop_last=self.loader.drop_last,
        )
        self._apply_resume_position()
        return self._train_sampler_in_use

    def skip_train_batches(self, epoch: int, batches_done: int) -> None:
        """Resuming from a checkpoint written part-way through ``epoch``: leave out its first
        ``batches_done`` batches (``project.resume.ResumeState`` calls this)."""
        self._resume_position = (epoch, batches_done)
        self._apply_resume_position()
        # Lightning warns that a plain DataLoader cannot resume mid-epoch; this one's sampler does.
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")

    def _apply_resume_position(self) -> None:
        if self._resume_position is None or self._train_sampler_in_use is None:
            return
        epoch, batches_done = self._resume_position
        self._train_sampler_in_use.resume_at(epoch, batches_done * self.batch_size_per_device())
        self._resume_position = None

    def _evaluation_sampler(self, dataset: Dataset | None) -> Sampler | None:
        """Under DDP each rank evaluates every ``world_size``-th sample, with no padding, so every
        sample is counted once and metrics equal a single device's (Lightning's own sampler would
        repeat samples to even out the ranks)."""
        world_size, rank, _ = self._world()
        if dataset is None or world_size == 1:
            return None
        return UnrepeatedDistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)

    def _loader(self, dataset: Dataset | None, sampler: Sampler | None, drop_last: bool = False) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() did not create this split")
        return DataLoader(
            dataset,
            batch_size=self.batch_size_per_device(),
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.loader.num_workers,
            pin_memory=self.loader.pin_memory,
            persistent_workers=self.loader.persistent_workers and self.loader.num_workers > 0,
            worker_init_fn=leave_signals_to_the_main_process,
        )


def leave_signals_to_the_main_process(worker_id: int) -> None:
    """Loader workers ignore SIGTERM and SIGUSR1, which schedulers send to every process of a job:
    the main process saves a checkpoint and stops (``project.interrupt``), while a worker killed
    first would end the run with a loader error instead. Workers still exit with the main process."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


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
