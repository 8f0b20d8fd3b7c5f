"""Everything about continuing a run, in one place.

Lightning's checkpoint holds the weights, optimizer, schedulers, loops and callback states. For a
resumed run to continue exactly as an uninterrupted one, ``ResumeState`` adds three things to it:

- the random number generators (torch, CUDA, NumPy, Python), so augmentation and dropout go on
  drawing the same numbers;
- how many batches of the current epoch were done when a checkpoint was written part-way through an
  epoch, so the data module's sampler leaves them out on resume;
- the logger's run id, so ``fit --ckpt_path`` under W&B continues the same W&B run.

``prepare_checkpoint`` runs before Lightning loads anything: it picks the checkpoint for
``--resume auto``, refuses a missing or damaged file with one line, and reads the file once.
"""

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from project.errors import UserError
from project.interrupt import slurm_job_id

LIGHTNING_CHECKPOINT_NAMES = ("best", "last", "hpc", "registry")  # resolved by Lightning itself


class ResumeState(Callback):
    """Saves the random state, the position inside the epoch and the logger's run id in every
    checkpoint, and puts them back when training resumes from one. ``TrainingModule`` adds it to
    every run (``configure_callbacks``)."""

    def __init__(self) -> None:
        super().__init__()
        self._epoch = -1
        self._batches_done = 0
        self._random_state: dict[str, Any] | None = None

    # -- what goes into the checkpoint -------------------------------------------------------

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.current_epoch != self._epoch:
            self._epoch, self._batches_done = trainer.current_epoch, 0
        self._batches_done += 1

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        # Plain tensors, numbers, strings and tuples only, so checkpoints load with weights_only=True.
        trainer = self._trainer
        mid_epoch = trainer.current_epoch == self._epoch and 0 < self._batches_done < trainer.num_training_batches
        logger_version = trainer.logger.version if trainer.logger is not None else None
        return {
            "random_state": random_state(),
            "train_epoch": self._epoch if mid_epoch else None,
            "train_batches_done": self._batches_done if mid_epoch else 0,
            "logger_run_id": logger_version if isinstance(logger_version, (str, int)) else None,
            "slurm_job": slurm_job_id(),  # under SLURM, --resume auto continues only the job's own checkpoints
        }

    # -- putting it back -----------------------------------------------------------------------

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Called while Lightning restores the checkpoint, before it builds the train loader.
        self._random_state = state_dict.get("random_state")
        if state_dict.get("train_epoch") is not None:
            self._epoch, self._batches_done = state_dict["train_epoch"], state_dict["train_batches_done"]
            datamodule = self._trainer.datamodule
            if hasattr(datamodule, "skip_train_batches"):
                datamodule.skip_train_batches(self._epoch, self._batches_done)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # After the sanity check, whose loaders draw random numbers (an uninterrupted run checks
        # only once, at its start).
        if self._random_state is not None:
            set_random_state(self._random_state)
            self._random_state = None


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


# -- before Lightning loads a checkpoint --------------------------------------------------------


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents, memory-mapped (tensors are not read until used); ``UserError`` for
    a file that is not a whole checkpoint written by ``torch.save``."""
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # a truncated or foreign file: torch raises many kinds
        raise UserError(f"{path} is not a readable checkpoint (truncated, not saved by torch.save, or holding Python "
                        f"objects, which are not loaded for safety): {type(error).__name__}") from error
    if not isinstance(content, dict) or "state_dict" not in content:
        raise UserError(f"{path} is not a Lightning checkpoint (it has no state_dict)")
    return content


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


def newest_checkpoint(trainer_config: Any) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint under the run folders that reads as a whole training checkpoint, with
    its contents; damaged ones (a crash mid-write) and weights-only ones (``save_weights_only``:
    no optimizer state to continue from) are named and passed over. Under SLURM only the job's own
    checkpoints count (a requeued job keeps its id), so a new job in the same folder starts afresh."""
    root = checkpoint_root(trainer_config)
    job = slurm_job_id()
    candidates = [*root.glob("**/checkpoints/*.ckpt"), *lightning_hpc_checkpoints(trainer_config)]
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            content = read_checkpoint(path)
        except UserError:
            rank_zero_info(f"Skipping unreadable checkpoint {path}")
            continue
        if "loops" not in content or "optimizer_states" not in content:
            rank_zero_info(f"Skipping weights-only checkpoint {path} (it cannot continue training)")
            continue
        writer = slurm_job_of(content)
        if job is not None and writer != job:
            by = f"SLURM job {writer}" if writer else "a run outside SLURM"
            rank_zero_info(f"Skipping checkpoint {path}: written by {by}, not by this job ({job}); --ckpt_path continues it")
            continue
        rank_zero_info(f"Resuming from {path}")
        return path, content
    rank_zero_info(f"No checkpoint under {root} to resume from: starting afresh")
    return None


def prepare_checkpoint(config: Any, subcommand: str) -> None:
    """Settle ``ckpt_path`` before Lightning reads it: for ``fit --resume auto`` the newest readable
    checkpoint; a missing or damaged file is refused with one line. Under W&B, ``fit`` continues the
    run that wrote the checkpoint."""
    content = None
    ckpt_path = config.get("ckpt_path")
    if ckpt_path is None and subcommand == "fit" and config.get("resume") == "auto":
        found = newest_checkpoint(config["trainer"])
        if found is not None:
            config["ckpt_path"], content = str(found[0]), found[1]
    elif ckpt_path is not None and ckpt_path not in LIGHTNING_CHECKPOINT_NAMES:
        if not Path(ckpt_path).is_file():
            raise UserError(f"checkpoint not found: {ckpt_path}")
        content = read_checkpoint(Path(ckpt_path))
    if content is not None and subcommand == "fit":
        continue_logger_run(config["trainer"], content)
    if config.get("ckpt_path") is None and slurm_job_id() is not None:
        set_aside_other_jobs_hpc_checkpoints(config["trainer"])


def resume_state_of(content: dict[str, Any]) -> dict[str, Any]:
    """What ``ResumeState`` saved in a checkpoint's contents (empty for checkpoints without it)."""
    return content.get("callbacks", {}).get(ResumeState.__qualname__, {})


def slurm_job_of(content: dict[str, Any]) -> str | None:
    return resume_state_of(content).get("slurm_job")


def lightning_hpc_checkpoints(trainer_config: Any) -> list[Path]:
    """Lightning's own requeue checkpoints, ``hpc_ckpt_N.ckpt`` in ``default_root_dir``. This project
    does not write them (``project.interrupt``), but Lightning restores one by itself under SLURM
    whenever no ``ckpt_path`` is given, whichever job wrote it."""
    return sorted(Path(trainer_config.get("default_root_dir") or ".").glob("hpc_ckpt_*.ckpt"))


def set_aside_other_jobs_hpc_checkpoints(trainer_config: Any) -> None:
    """Rename the ``hpc_ckpt_N.ckpt`` files of other jobs to ``job-<id>.hpc-ckpt-N.ckpt`` (Lightning
    reads any name that contains ``hpc_ckpt_``), so that Lightning does not silently continue them
    in this job; they stay available to ``--ckpt_path``."""
    job = slurm_job_id()
    for path in lightning_hpc_checkpoints(trainer_config):
        try:
            writer = slurm_job_of(read_checkpoint(path))
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


def continue_logger_run(trainer_config: Any, content: dict[str, Any]) -> None:
    logger = trainer_config.get("logger")
    if not hasattr(logger, "get") or not str(logger.get("class_path", "")).endswith("WandbLogger"):
        return
    run_id = resume_state_of(content).get("logger_run_id")
    if isinstance(run_id, str) and not logger["init_args"].get("id"):
        logger["init_args"]["id"] = run_id
        logger["init_args"]["resume"] = "allow"
