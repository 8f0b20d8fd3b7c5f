"""``train.py lr_find`` and ``train.py scale_batch_size``: Lightning's ``Tuner`` on the run's model and
data, its answer printed as a ``train.py fit`` command to paste.

Both run in one process (Lightning's tuner does not run under DDP) and write nothing but their
run folder (config, record, and lr_find's plot and CSV): Lightning saves the model in a temporary
checkpoint before it tries anything and restores and deletes it after.
"""

import csv
import shlex
import sys

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.tuner import Tuner
from lightning.pytorch.utilities import rank_zero_info

from project.engine.data import ProjectDataModule
from project.errors import UserError
from project.engine.loggers import run_folder
from project.engine.paths import train_command

LR_OPTION = "--model.init_args.optimizer.init_args.lr"
LR_FIND_OPTIONS = ("--min_lr", "--max_lr", "--num_training", "--early_stop_threshold")  # ProjectTrainer.lr_find's own
BATCH_OPTIONS = ("--mode", "--steps_per_trial", "--init_val", "--max_trials")  # ProjectTrainer.scale_batch_size's own


def fit_command(subcommand: str, own_options: tuple[str, ...], *extra: str) -> str:
    """The ``train.py fit`` command for what this process was started with, ``subcommand`` and its
    own options (``--num_training 50``, ``--num_training=50``) left out and ``extra`` added."""
    args, kept, skip = sys.argv[1:], [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == subcommand and not kept:
            continue
        elif arg.split("=")[0] in own_options:
            skip = "=" not in arg
        else:
            kept.append(arg)
    return shlex.join(train_command("fit", [*kept, *extra]))


def check_one_process(trainer: Trainer, command: str) -> None:
    if trainer.world_size > 1:
        raise UserError(f"{command} runs in one process ({trainer.world_size} here): run it without torchrun, "
                        "--trainer.devices > 1 or --trainer.num_nodes > 1, then train with DDP on what it found")


def find_lr(trainer: Trainer, model: LightningModule, datamodule: ProjectDataModule, min_lr: float, max_lr: float,
            num_training: int, early_stop_threshold: float | None) -> float:
    """The learning-rate range test: ``num_training`` optimizer steps with the lr rising exponentially
    from ``min_lr`` to ``max_lr``; suggests the lr where the loss falls fastest."""
    check_one_process(trainer, "lr_find")
    if not 0 < min_lr < max_lr:
        raise UserError(f"lr_find needs 0 < --min_lr < --max_lr, got {min_lr} and {max_lr}")
    if num_training < 2:
        raise UserError(f"--num_training must be >= 2 steps, got {num_training}")
    finder = Tuner(trainer).lr_find(model, datamodule=datamodule, min_lr=min_lr, max_lr=max_lr, num_training=num_training,
                                    early_stop_threshold=early_stop_threshold, update_attr=False)
    suggestion = finder.suggestion() if finder is not None else None
    if suggestion is None:
        raise UserError(f"lr_find found no lr where the loss falls over {num_training} steps from {min_lr:g} to {max_lr:g}: "
                        "widen the range (--min_lr, --max_lr) or raise --num_training")
    folder = run_folder(trainer)
    folder.mkdir(parents=True, exist_ok=True)
    figure = finder.plot(suggest=True, show=False)
    figure.savefig(folder / "lr_find.png", dpi=120)
    with (folder / "lr_find.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["lr", "loss"])
        writer.writerows(zip(finder.results["lr"], finder.results["loss"], strict=True))
    rank_zero_info("\n".join([
        (f"Suggested lr: {suggestion:.3g} (where the smoothed loss fell fastest, {len(finder.results['lr'])} steps "
         f"from {min_lr:g} to {max_lr:g}); plot: {folder / 'lr_find.png'}"),
        "Train with it:", "  " + fit_command("lr_find", LR_FIND_OPTIONS, f"{LR_OPTION}={suggestion:.3g}"),
    ]))
    return suggestion


def find_batch_size(trainer: Trainer, model: LightningModule, datamodule: ProjectDataModule, mode: str, steps_per_trial: int,
                    init_val: int, max_trials: int) -> int:
    """The largest batch per device that trains without running out of memory: doubled from
    ``init_val`` (``power``), then narrowed (``binsearch``), ``steps_per_trial`` steps each."""
    check_one_process(trainer, "scale_batch_size")
    if mode not in ("power", "binsearch"):
        raise UserError(f"--mode must be power or binsearch, got {mode!r}")
    if init_val < 1 or steps_per_trial < 1 or max_trials < 1:
        raise UserError("--init_val, --steps_per_trial and --max_trials must be >= 1")
    uses_global_batch = datamodule.loader.global_batch_size is not None  # the finder sets the per-device batch
    found = Tuner(trainer).scale_batch_size(model, datamodule=datamodule, mode=mode, steps_per_trial=steps_per_trial,
                                            init_val=init_val, max_trials=max_trials, batch_arg_name="batch_size")
    if found is None:
        raise UserError("scale_batch_size found no batch size that trains")
    check_loader_follows(trainer, datamodule)
    limit = len(datamodule.train_set) if datamodule.train_set is not None else None  # type: ignore[arg-type]
    if limit is not None and found >= limit:  # Lightning stops doubling past the data set, not at it
        found = limit
        how = "the whole training set: memory did not run out before it"
    else:
        how = (f"from {init_val}, {'doubled' if mode == 'power' else 'doubled, then narrowed'} while it trained, "
               f"at most {max_trials} tries of {steps_per_trial} steps")
    option = (f"--data.loader.global_batch_size={found * trainer.accumulate_grad_batches}" if uses_global_batch
              else f"--data.loader.batch_size={found}")
    rank_zero_info("\n".join([
        f"Largest batch per device that trained: {found} ({how})",
        "The lr that suits a batch changes with it: run lr_find with the new batch before a long run.",
        "Train with it:", "  " + fit_command("scale_batch_size", BATCH_OPTIONS, option),
    ]))
    return found


def check_loader_follows(trainer: Trainer, datamodule: ProjectDataModule) -> None:
    """Refuse a data module whose train loader ignores the batch size the finder sets (one that
    builds its own ``DataLoader`` instead of the base class's): every try would have measured one size."""
    loader = trainer.train_dataloader  # rebuilt by Lightning at the size found
    if loader is None:
        return
    given, expected = getattr(loader, "batch_size", None), datamodule.loader_batch_size(getattr(loader, "sampler", None))
    if given != expected:
        raise UserError(f"scale_batch_size sets the batch size of {type(datamodule).__name__}, but its train_dataloader() does not "
                        f"follow it (batches of {given}, not {expected}): build the loader with "
                        "ProjectDataModule's train_dataloader() or batch_size_per_device(), or set the batch size by hand")
