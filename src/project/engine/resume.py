"""Continuing a run: what a checkpoint carries beyond Lightning's own state, and which checkpoint to continue.

Lightning's checkpoint holds the weights, optimizer, schedulers, loops, callback states and the
train loader's position in its epoch (``engine.data.ResumableLoader``). ``ResumeState`` adds:

- the random number generators (torch, CUDA, NumPy, Python), so augmentation and dropout go on
  drawing the same numbers;
- the logger's run id, so ``fit --ckpt_path`` under W&B continues the same W&B run;
- the SLURM job that wrote it, so ``--resume auto`` under SLURM continues only the job's own.

A resumed run writes into a new ``version_N`` folder (Lightning's CSV logger would delete the
``metrics.csv`` of a folder it writes into again); its ``metrics.csv`` starts with the rows the
checkpoint's run logged before the checkpoint's step, so the newest folder holds the whole run's
curve, and the earlier folder is left as it was.

``find_checkpoint`` settles which file a run continues from, before anything is built: the one
``--ckpt_path`` names, or the newest readable one for ``fit --resume auto``.
"""

import csv
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_info

from project.engine.checkpoint_io import read_checkpoint
from project.errors import UserError
from project.engine.signals import slurm_job_id

LIGHTNING_CHECKPOINT_NAMES = ("best", "last", "hpc", "registry")  # ckpt_path values Lightning resolves itself
LIGHTNING_HPC_CHECKPOINTS = "hpc_ckpt_*.ckpt"  # Lightning's own requeue checkpoints (engine.internals)


class ResumeState(Callback):
    """Saves the random state, the logger's run name and id and the SLURM job in every checkpoint, and puts
    the random state back when training resumes. ``TrainingModule`` (``lightning_modules.base``) adds it to every run."""

    def __init__(self) -> None:
        super().__init__()
        self._random_state: dict[str, Any] | None = None
        self._logger_version: str | int | None = None
        self._logger_name: str | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        version = trainer.logger.version if trainer.logger is not None else None
        self._logger_version = version if isinstance(version, (str, int)) else None
        name = trainer.logger.name if trainer.logger is not None else None
        self._logger_name = name if isinstance(name, str) else None

    def state_dict(self) -> dict[str, Any]:
        # Plain tensors, numbers, strings and tuples only, so checkpoints load with weights_only=True.
        return {"random_state": random_state(), "logger_run_id": self._logger_version, "logger_name": self._logger_name,
                "slurm_job": slurm_job_id()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._random_state = state_dict.get("random_state")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # After the sanity check, whose loaders draw random numbers (an uninterrupted run checks
        # only once, at its start).
        if self._random_state is not None:
            set_random_state(self._random_state)
            self._random_state = None
        if trainer.ckpt_path and trainer.is_global_zero and isinstance(trainer.logger, CSVLogger):
            log_earlier_metrics(trainer.logger, Path(trainer.ckpt_path), trainer.global_step)


def log_earlier_metrics(logger: CSVLogger, checkpoint: Path, step: int) -> None:
    """Log again the rows that the run which saved ``checkpoint`` (in ``<run>/checkpoints/``) wrote
    to its ``metrics.csv`` before ``step``, the step this run continues from."""
    earlier = checkpoint.resolve().parent.parent / "metrics.csv"
    if not earlier.is_file() or earlier.parent == Path(logger.log_dir).resolve():
        return
    with earlier.open(newline="") as file:
        rows = [row for row in csv.DictReader(file) if row.get("step", "").isdigit() and int(row["step"]) < step]
    for row in rows:
        values = {key: int(value) if value.lstrip("-").isdigit() else float(value)  # "epoch" stays 0, not 0.0
                  for key, value in row.items() if key != "step" and value != ""}
        logger.log_metrics(values, step=int(row["step"]))
    if rows:
        rank_zero_info(f"metrics.csv starts with the {len(rows)} row(s) {earlier} logged before step {step}")


def random_state() -> dict[str, Any]:
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gauss),
        "python": random.getstate(),
    }


def set_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, position, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    random.setstate(state["python"])


@dataclass
class Checkpoint:
    """A checkpoint a run continues from (or tests, or predicts with), read once."""

    path: Path
    content: dict[str, Any]
    found_by_resume_auto: bool = False

    @property
    def saved_state(self) -> dict[str, Any]:
        """What ``ResumeState`` saved in it (empty for checkpoints without it)."""
        return self.content.get("callbacks", {}).get(ResumeState().state_key, {})

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return self.content.get("hyper_parameters") or {}

    @property
    def data_hyperparameters(self) -> dict[str, Any]:
        """The data module's arguments (``ProjectDataModule`` saves them), or {}."""
        return self.content.get("datamodule_hyper_parameters") or {}


def read_named_checkpoint(ckpt_path: str) -> Checkpoint | None:
    """The checkpoint file ``--ckpt_path`` names, read; None for the names Lightning resolves itself
    (``last``, ``best``, ...). A missing or damaged file is refused with one line."""
    if ckpt_path in LIGHTNING_CHECKPOINT_NAMES:
        return None
    if not Path(ckpt_path).is_file():
        raise UserError(f"checkpoint not found: {ckpt_path}")
    return Checkpoint(Path(ckpt_path), read_checkpoint(Path(ckpt_path)))


def find_checkpoint(config: Any, subcommand: str, refusal: Callable[[Checkpoint], str | None]) -> Checkpoint | None:
    """The checkpoint ``config`` names (``ckpt_path``), or for ``fit --resume auto`` the newest
    readable one, if ``refusal`` finds nothing against it (another run's settings); a missing or
    damaged named file is refused with one line. Under SLURM without a checkpoint, other jobs'
    Lightning requeue files are set aside first."""
    ckpt_path = config.get("ckpt_path")
    found = None
    if ckpt_path is None and subcommand == "fit" and config.get("resume") == "auto":
        found = newest_checkpoint(config["trainer"])
        if found is not None and (reason := refusal(found)) is not None:
            rank_zero_info(f"Not resuming from {found.path}: {reason}; starting afresh (--ckpt_path continues it regardless)")
            found = None
        elif found is not None:
            rank_zero_info(f"Resuming from {found.path}")
    elif ckpt_path is not None:
        found = read_named_checkpoint(ckpt_path)
    if found is None and ckpt_path is None and slurm_job_id() is not None:
        set_aside_other_jobs_hpc_checkpoints(config["trainer"])
    return found


def checkpoint_root(trainer_config: Any) -> Path:
    """The folder ``--resume auto`` searches: where the configured logger puts its runs."""
    logger = trainer_config.get("logger")
    if isinstance(logger, list):
        logger = logger[0] if logger else None
    default_root = Path(trainer_config.get("default_root_dir") or ".")
    if not hasattr(logger, "get"):  # no logger: Lightning writes under default_root_dir
        return default_root
    init_args = logger.get("init_args") or {}
    root = Path(init_args.get("save_dir") or default_root)
    name = init_args.get("project") if "WandbLogger" in str(logger.get("class_path", "")) else init_args.get("name")
    return root / name if name else root


def newest_checkpoint(trainer_config: Any) -> Checkpoint | None:
    """The newest checkpoint under the run folders that reads as a whole training checkpoint; damaged
    ones (a crash mid-write) and weights-only ones (``save_weights_only``: no optimizer state to
    continue from) are named and passed over. Under SLURM only the job's own checkpoints count (a
    requeued job keeps its id), so a new job in the same folder starts afresh."""
    root = checkpoint_root(trainer_config)
    job = slurm_job_id()
    candidates = [*root.glob("**/checkpoints/*.ckpt"), *lightning_hpc_checkpoints(trainer_config)]
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            checkpoint = Checkpoint(path, read_checkpoint(path), found_by_resume_auto=True)
        except UserError:
            rank_zero_info(f"Skipping unreadable checkpoint {path}")
            continue
        if "loops" not in checkpoint.content or "optimizer_states" not in checkpoint.content:
            rank_zero_info(f"Skipping weights-only checkpoint {path} (it cannot continue training)")
            continue
        writer = checkpoint.saved_state.get("slurm_job")
        if job is not None and writer != job:
            by = f"SLURM job {writer}" if writer else "a run outside SLURM"
            rank_zero_info(f"Skipping checkpoint {path}: written by {by}, not by this job ({job}); --ckpt_path continues it")
            continue
        return checkpoint
    rank_zero_info(f"No checkpoint under {root} to resume from: starting afresh")
    return None


def lightning_hpc_checkpoints(trainer_config: Any) -> list[Path]:
    """Lightning's own requeue checkpoints, ``hpc_ckpt_N.ckpt`` in ``default_root_dir``. This project
    does not write them (``engine.signals``), but Lightning continues from one by itself under SLURM
    whenever no ``ckpt_path`` is given, whichever job wrote it."""
    return sorted(Path(trainer_config.get("default_root_dir") or ".").glob(LIGHTNING_HPC_CHECKPOINTS))


def set_aside_other_jobs_hpc_checkpoints(trainer_config: Any) -> None:
    """Rename the ``hpc_ckpt_N.ckpt`` files of other jobs to ``job-<id>.hpc-ckpt-N.ckpt`` (Lightning
    reads any name that holds ``hpc_ckpt_``), so that Lightning does not silently continue them
    in this job; they stay available to ``--ckpt_path``."""
    job = slurm_job_id()
    for path in lightning_hpc_checkpoints(trainer_config):
        try:
            writer = Checkpoint(path, read_checkpoint(path)).saved_state.get("slurm_job")
        except UserError:
            writer = None
        if writer == job:
            continue
        aside = path.with_name(f"job-{writer or 'unknown'}.{path.name.replace('hpc_ckpt_', 'hpc-ckpt-')}")
        try:
            os.replace(path, aside)  # every rank tries; the first one moves it
        except FileNotFoundError:
            continue
        rank_zero_info(f"Set {path} aside as {aside}: it was written by {'SLURM job ' + writer if writer else 'another run'}, "
                       "and Lightning would continue it in this job")
