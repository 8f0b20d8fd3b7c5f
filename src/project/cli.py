"""The command line: LightningCLI with the project's base config, and one-line errors for bad input."""

import copy
import logging
import os
import shlex
import shutil
import signal
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import torch.distributed as dist
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from rich.console import Console
from rich.table import Table

import project.datamodules  # noqa: F401  (imported so that --data.help and --data can name its classes briefly)
import project.lightning_modules  # noqa: F401  (the same for --model.help ClassificationModule)
from project.callbacks import LatestBestCheckpoint
from project.callbacks.record import scalar_metrics
from project.distributed import match_torchrun, warn_if_restarts_share_the_store
from project.errors import UserError, find_user_error
from project.interrupt import Interrupted
from project.launch import BASE_SAVE_DIR, REPOSITORY, train_command
from project.loggers import run_folder
from project.options import full_key, keep_command_line_values, misspelt_option, model_options_given, with_class_defaults
from project.record import unused_name
from project.resume import checkpoint_root, prepare_checkpoint

BASE_CONFIG = REPOSITORY / "configs" / "base.yaml"
RUN_START_FILES = ("config.yaml", "hparams.yaml", "record.json", "git.diff")  # what a run writes before any work
SUBCOMMANDS = ("fit", "validate", "test", "predict")
LIGHTNING_NOISE = (
    "💡 Tip",  # advertisements for Lightning's cloud services
    "Trainer already configured with model summary callbacks",  # ours, ParameterSummary, is in the base config
    "Loading `train_dataloader` to estimate",  # the lr schedule counts the steps of an epoch
)


class ProjectArgumentParser(LightningArgumentParser):
    """Prints a config error as one ``error:`` line: our own message when one of our classes refused a
    value, else jsonargparse's, without the usage text."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        ours = find_user_error(ex)
        misspelt = None if ours else misspelt_option(message, self)
        if misspelt:
            print(f"error: unknown option --{misspelt[0]}: did you mean --{misspelt[1]}?", file=sys.stderr)
        else:
            print(f"error: {ours or message.strip()}\n(see: python train.py <subcommand> --help)", file=sys.stderr)
        sys.exit(2)


class SaveConfigToRun(SaveConfigCallback):
    """Saves the resolved config as ``config.yaml`` in the run folder and, under W&B, as the W&B run
    config. Lightning calls ``save_config`` on rank 0 only.

    A run continued in the folder of an earlier one (W&B resuming its run) keeps the first
    ``config.yaml`` and adds ``config_resumed_N.yaml``.
    """

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        folder = run_folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        path = unused_name(folder, self.config_filename)
        self.parser.save(self.config, str(path), skip_none=False, multifile=self.multifile)
        if isinstance(trainer.logger, WandbLogger):
            trainer.logger.experiment.config.update(self.config.as_dict(), allow_val_change=True)


class ProjectCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict`` for any model and data module named in a config.

    Every subcommand reads ``configs/base.yaml`` first (trainer, callbacks and logger defaults), then
    each ``--config`` on top of it, then the command line. Configs name classes with ``class_path``
    (subclass mode), so one entry point serves every recipe in ``configs/``.
    """

    def __init__(self, **kwargs) -> None:
        base = {"default_config_files": [str(BASE_CONFIG)]}
        with_subcommands = kwargs.get("run", True)
        kwargs.setdefault("parser_kwargs", {name: base for name in SUBCOMMANDS} if with_subcommands else base)
        kwargs.setdefault("parser_class", ProjectArgumentParser)
        kwargs.setdefault("save_config_callback", SaveConfigToRun)
        kwargs.setdefault("save_config_kwargs", {"save_to_log_dir": False})  # SaveConfigToRun writes it
        try:
            super().__init__(
                LightningModule,
                LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                auto_configure_optimizers=False,  # the optimizer and schedule live in --model.*
                **kwargs,
            )
        except BaseException:
            if getattr(self, "trainer", None) is not None:
                remove_empty_run_folder(self.trainer)
            raise

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Callbacks whose options recipes and users change get keys of their own (--early_stopping.patience 5);
        # the others are listed in trainer.callbacks. Their defaults are in configs/base.yaml.
        parser.add_lightning_class_args(LatestBestCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(EarlyStopping, "early_stopping")
        parser.add_argument(
            "--resume", choices=["auto", "never"], default="never",
            help="(fit only) auto: continue from the newest readable checkpoint under the logger's folder, "
            "for restarted jobs; ignored when --ckpt_path is given",
        )
        # Without a terminal a live progress bar prints nothing until the end; EpochLines then
        # prints one line per epoch instead.
        parser.set_defaults({"trainer.enable_progress_bar": sys.stdout.isatty()})

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        save_runs_under_default_root_dir(config["trainer"])
        check_output_folder(checkpoint_root(config["trainer"]))
        if subcommand:  # before LightningCLI and the Trainer read the checkpoint
            prepare_checkpoint(config, subcommand)
        # LightningCLI next applies a checkpoint's model hyperparameters over the whole config. The
        # command line is the user's latest word: its model options are put back afterwards.
        keys = [full_key(config, key) for key in model_options_given(args if isinstance(args, list) else [])]
        self.command_line_model_options = {key: copy.deepcopy(config[key]) for key in keys if key is not None}

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        for line in keep_command_line_values(config, self.command_line_model_options, self.subcommand == "fit"):
            rank_zero_info(line)
        match_torchrun(config["trainer"])
        if self.subcommand == "fit":
            warn_if_restarts_share_the_store()

    def after_fit(self) -> None:
        print_final_metrics(self.trainer)
        print_next_commands(self.trainer)


@rank_zero_only
def print_final_metrics(trainer: Trainer) -> None:
    """A table of the last epoch's metrics (``test`` prints Lightning's own table)."""
    metrics = scalar_metrics(trainer)
    if not metrics:
        return
    epochs, steps = trainer.current_epoch, trainer.global_step
    table = Table(title="Final metrics", caption=f"{epochs} epoch{'s' * (epochs != 1)}, {steps} step{'s' * (steps != 1)}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        table.add_row(key, f"{metrics[key]:.6g}")
    Console().print(table)


@rank_zero_only
def print_next_commands(trainer: Trainer) -> None:
    """The commands that test and predict with this run's best checkpoint, ready to paste: this
    interpreter, this ``train.py``, and the config this run saved (with every override it had)."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    config = run_folder(trainer) / "config.yaml"  # written by SaveConfigToRun
    if not best or not config.is_file():
        return

    def command(subcommand: str) -> str:
        return shlex.join(train_command(subcommand, ["--config", str(config), "--ckpt_path", best]))

    which = "Best" if trainer.checkpoint_callback.monitor else "Last"  # no validation split: the last one
    lines = [f"{which} checkpoint: {best}", "Test it:", "  " + command("test")]
    data = trainer.datamodule
    new_inputs = "--data.predict_dir DIR (a folder of images)" if hasattr(data, "predict_dir") else (
        "--data.predict_path FILE (inputs without targets)" if hasattr(data, "predict_path") else "")
    if new_inputs:
        lines += [f"Predict the test split, or new inputs with {new_inputs} added (predictions.csv in a new run folder):",
                  "  " + command("predict")]
    rank_zero_info("\n".join(lines))


def save_runs_under_default_root_dir(trainer_config: Any) -> None:
    """``--trainer.default_root_dir DIR`` moves the whole run: a logger whose ``save_dir`` is still
    the base config's ``runs`` writes under DIR instead. (Lightning's loggers keep their own
    ``save_dir``, so without this DIR would only receive SLURM's requeue checkpoints.) A ``save_dir``
    given explicitly is kept."""
    root = trainer_config.get("default_root_dir")
    logger = trainer_config.get("logger")
    init_args = logger.get("init_args") if hasattr(logger, "get") else None
    if root and init_args is not None and init_args.get("save_dir") == BASE_SAVE_DIR:
        init_args["save_dir"] = str(root)


def check_output_folder(root: Path) -> None:
    """Refuse, before any work, a run folder that cannot be made: under a file, or in a folder
    this user may not write to."""
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot write runs under {root}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write runs under {root}: {existing} is not writable")


def remove_empty_run_folder(trainer: Trainer) -> None:
    """After a run that failed before it trained or predicted anything, remove the run folder if it
    holds nothing but what every run writes at its start (config, record), so that the next run is
    not numbered after an empty one."""
    if trainer.logger is None or not trainer.is_global_zero:
        return
    folder = run_folder(trainer)
    if not folder.is_dir() or any(p.is_dir() or p.name not in RUN_START_FILES for p in folder.iterdir()):
        return
    shutil.rmtree(folder)
    if not any(folder.parent.iterdir()):
        folder.parent.rmdir()


def is_not_lightning_noise(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(LIGHTNING_NOISE)


def quiet_known_noise() -> None:
    """Leave out warnings and lines Lightning gives on every run that a user can do nothing about."""
    # Lightning 2.6 calls a torch API that torch 2.14 deprecates, once per run: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # test, predict and resumed runs write to a new run folder; Lightning warns each time that the
    # checkpoint's folder differs, which is expected here.
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
    # main hands LightningCLI the command line itself (after with_class_defaults), which it warns about.
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended to run from within Python")
    # A run without a validation split says so itself (TrainingModule.train_without_validation).
    warnings.filterwarnings("ignore", message=r"Total length of `list` across ranks is zero")
    # Lines Lightning prints on every run that say nothing about it (rank_zero_info logs them here).
    # The same function each call: addFilter adds it once, however often main runs in one process.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(is_not_lightning_noise)


def main(args: list[str] | None = None) -> None:
    """Run the CLI; a problem in the user's input ends it with one ``error:`` line and exit status 2."""
    quiet_known_noise()
    try:
        with exit_on_user_error():
            ProjectCLI(args=with_class_defaults(sys.argv[1:] if args is None else args))
    except Interrupted as stop:  # a scheduler's signal, seen by every rank alike: a checkpoint is saved
        print_once(str(stop))
        sys.exit(stop.exit_code)
    except SIGTERMException:  # Lightning's own SIGTERM handling (outside training): a SystemExit with status 0
        print_once("stopped by SIGTERM")
        sys.exit(128 + signal.SIGTERM)
    finally:
        close_process_group()


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """A problem in the user's input (a ``UserError``, also one wrapped by another exception)
    ends the program with one ``error:`` line and exit status 2; anything else is raised."""
    try:
        yield
    except Exception as error:
        ours = find_user_error(error)
        if ours is None:
            raise
        print_error(f"error: {ours}")
        sys.exit(2)


@rank_zero_only
def print_once(line: str) -> None:
    print(line, file=sys.stderr)


def print_error(line: str) -> None:
    """Print ``line`` to stderr on rank 0. Before DDP starts every rank meets the same problem and it
    is said once; during training another rank's problem may be its own, so ranks 1.. say theirs too.
    The rank is Lightning's (``rank_zero_only.rank``: torchrun's, its own launcher's, or SLURM's)."""
    if rank_zero_only.rank == 0:
        print(line, file=sys.stderr)
    elif dist.is_available() and dist.is_initialized():
        print(f"(rank {rank_zero_only.rank}) {line}", file=sys.stderr)


def close_process_group() -> None:
    """Shut down the DDP process group before the interpreter exits.

    Lightning leaves it open. Left to interpreter shutdown, gloo's worker threads are sometimes
    destroyed while still joinable, and that rank dies with SIGABRT ("terminate called without an
    active exception") after an otherwise finished run.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
