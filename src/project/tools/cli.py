"""The command line: LightningCLI with the project's base config, and one-line errors for bad input."""

import importlib
import logging
import pkgutil
import shlex
import shutil
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from rich.console import Console
from rich.table import Table

from project.tools.arguments import (
    checkpoint_defaults,
    checkpoint_named_in,
    checkpoint_override_lines,
    context_settings,
    given_configs,
    kept_options,
    options_start,
    refusal_line,
    resume_refusal,
    trusted_in,
)
from project.engine.callbacks import LatestBestCheckpoint
from project.engine.callbacks.averaging import AveragedWeights
from project.engine.callbacks.run_record import scalar_metrics
from project.engine.checkpoint_io import AtomicCheckpointIO
from project.engine.data import ProjectDataModule
from project.engine.distributed import torchrun_counts, warn_if_restarts_share_the_store
from project.errors import find_user_error
from project.engine.internals import SEED_LOGGER, ShortHelpFormatter, SkipLightningCheckpointHparams, quiet_known_noise
from project.engine.kinds import TRUSTED_PACKAGES, check_checkpoint_hyperparameters, check_given_configs, check_kinds, packages_named
from project.engine.loggers import run_folder
from project.engine.paths import base_config, check_folder_can_be_written, train_command
from project.engine.preflight import check_accelerator, check_seed, trainer_options_checked
from project.engine.provenance import unused_name
from project.engine.resume import Checkpoint, checkpoint_root, find_checkpoint
from project.engine.signals import Interrupted
from project.tools.trainer import ProjectTrainer

RUN_START_FILES = ("config.yaml", "hparams.yaml", "record.json", "git.diff")  # what a run writes before any work
CALLBACK_OPTIONS = {"checkpoint": LatestBestCheckpoint, "last_checkpoint": ModelCheckpoint, "early_stopping": EarlyStopping}
SUBCOMMANDS = ("fit", "validate", "test", "predict", "export", "lr_find", "scale_batch_size")


def import_rooms(rooms: Sequence[str]) -> None:
    """Import every module of the packages ``rooms`` (the entry script names the folders a user
    edits), so that a class a user adds to one of them can be named by its name alone
    (``--data MyData``, ``--model.net MyNet``, ``--data.help MyData``)."""
    for name in rooms:
        package = importlib.import_module(name)
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)


class Refused(Exception):
    """jsonargparse refused the command line (``ProjectArgumentParser.error``): its message, and the
    exception behind it. Answered by ``ProjectCLI.parse_arguments`` once the parse has unwound."""

    def __init__(self, message: str, cause: Exception | None) -> None:
        super().__init__(message)
        self.message, self.cause = message, cause


class ProjectArgumentParser(LightningArgumentParser):
    """Raises ``Refused`` where jsonargparse would print its message and exit, so that the CLI can
    answer it in one line (``exit_refused``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", ShortHelpFormatter)  # --model.help: 40 lines, not 1,500
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        raise Refused(message, ex)


def exit_refused(refused: Refused, parser: ArgumentParser, args: list[str], option_types: dict[str, Any]) -> NoReturn:
    """One ``error:`` line and exit status 2: our own message when one of our classes refused a
    value, else the option or config jsonargparse refused (``tools.arguments.refusal_line``), else
    its message, cut to its start where a value runs to thousands of characters."""
    ours = find_user_error(refused.cause)
    line = f"error: {ours}" if ours else refusal_line(parser, args, refused.message, option_types)
    if line is None:
        message = "\n".join(text[:400] + " ..." if len(text) > 400 else text for text in refused.message.strip().splitlines())
        line = f"error: {message}\n(see: python train.py <subcommand> --help)"
    print(line, file=sys.stderr)
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


class ProjectCLI(SkipLightningCheckpointHparams, LightningCLI):
    """``fit``, ``validate``, ``test``, ``predict`` and ``export`` for any training module and data module named in a config.

    Every subcommand reads ``configs/base.yaml`` first (trainer, callbacks and logger defaults), then
    each ``--config`` on top of it, then the command line. Configs name classes with ``class_path``
    (subclass mode), so one entry point serves every recipe in ``configs/``. What a run takes from its
    context (a checkpoint's hyperparameters, ...) goes under the command line (``tools.arguments``).
    """

    def __init__(self, rooms: Sequence[str] = (), **kwargs: Any) -> None:
        # What each --config and the options say, read once: for the base config here, for the checks before parsing.
        self.given_sources = given_configs(kwargs.get("args") or sys.argv[1:])
        found = base_config([where.removesuffix(": ") for where, _ in self.given_sources if where])
        base = {"default_config_files": [str(found)] if found else []}
        with_subcommands = kwargs.get("run", True)
        kwargs.setdefault("parser_kwargs", {name: dict(base) for name in SUBCOMMANDS} if with_subcommands else base)
        kwargs.setdefault("parser_class", ProjectArgumentParser)
        kwargs.setdefault("trainer_class", ProjectTrainer)
        kwargs.setdefault("save_config_callback", SaveConfigToRun)
        kwargs.setdefault("save_config_kwargs", {"save_to_log_dir": False})  # SaveConfigToRun writes it
        import_rooms(rooms)
        try:
            super().__init__(
                LightningModule,
                ProjectDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                auto_configure_optimizers=False,  # the optimizer and schedule live in --model.*
                **kwargs,
            )
        except BaseException:
            if getattr(self, "trainer", None) is not None:
                remove_empty_run_folder(self.trainer)
            raise

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), **{name: {"model", "datamodule"} for name in ("export", "lr_find", "scale_batch_size")}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Callbacks whose options recipes and users change get keys of their own (--early_stopping.patience 5);
        # the others are listed in trainer.callbacks. Their defaults are in configs/base.yaml.
        for key, callback in CALLBACK_OPTIONS.items():
            parser.add_lightning_class_args(callback, key)
        parser.add_subclass_arguments(  # off unless a config or --weight_averaging EMA (or SWA) names one
            AveragedWeights, "weight_averaging", required=False, fail_untyped=False,
            help="EMA or SWA (project.engine.callbacks): validation, checkpoints, test, predict and export use the averaged weights",
        )
        parser.add_argument(
            "--resume", choices=["auto", "never"], default="never",
            help="(fit only) auto: continue from the newest readable checkpoint under the logger's folder, "
            "for restarted jobs; ignored when --ckpt_path is given",
        )
        parser.add_argument(
            "--trusted_packages", type=list[str], default=[],
            help="packages a checkpoint's hyperparameters may name classes from, beyond project, torch, torchvision, "
            "lightning and the packages the config names classes from (docs/security.md)",
        )
        # Without a terminal a live progress bar prints nothing until the end; EpochLines then
        # prints one line per epoch instead.
        parser.set_defaults({"trainer.enable_progress_bar": sys.stdout.isatty()})

    def parse_arguments(self, parser: LightningArgumentParser, args: list[str]) -> None:
        """Parse the command line once. A checkpoint that ``ckpt_path`` names is read first, once, and
        what it saved of its model and data become the parser's defaults, under the base config, the
        configs and the command line (``tools.arguments.checkpoint_defaults``); the one step after
        parsing sets what the run takes from its context (``tools.arguments.context_settings``: the
        checkpoint ``--resume auto`` found, the run's name, W&B's run id, ``default_root_dir``)."""
        # Read as given (YAML alias bombs refused), then a class of the wrong kind refused in one line,
        # before jsonargparse expands the configs or imports what they name.
        sources = self.given_sources  # of these same args
        check_given_configs(sources, self.option_types())
        subcommand = args[0] if options_start(args) else None
        named = checkpoint_named_in(sources)
        if named is not None:  # checked before its hyperparameters reach the parser, which imports what they name
            self.check_checkpoint(named, trusted_in(sources))
            parser.set_defaults({f"{subcommand}.{key}" if subcommand else key: value
                                 for key, value in checkpoint_defaults(named).items()})
        try:
            super().parse_arguments(parser, args)
        except Refused as refused:  # answered here, with no parse under way: the answer parses again
            exit_refused(refused, parser, args, self.option_types())
        config = self.config[subcommand] if subcommand else self.config
        given = config.as_dict()
        check_kinds(given, self.option_types())
        checkpoint = named
        if named is None and subcommand:
            trusted, refusal = {*config.get("trusted_packages", []), *packages_named(given)}, resume_refusal(config)

            def refusal_of_checked(found: Checkpoint) -> str | None:  # a planted checkpoint is refused, not passed over
                self.check_checkpoint(found, trusted)
                return refusal(found)

            checkpoint = find_checkpoint(config, subcommand, refusal_of_checked)
        self.checkpoint = checkpoint
        for key, value in context_settings(config, subcommand, checkpoint, sources).items():
            config[key] = value
        lines = checkpoint_override_lines(config, named, args, subcommand == "fit") if named is not None else []
        for line in [*lines, *kept_options(sources, config, args)]:
            rank_zero_info(line)
        root = checkpoint_root(config["trainer"])
        check_folder_can_be_written(root, f"cannot write runs under {root}")
        check_seed(config.get("seed_everything"))
        check_accelerator(config["trainer"].get("accelerator"))

    def check_checkpoint(self, checkpoint: Checkpoint, trusted: set[str]) -> None:
        """What the checkpoint's model and data hyperparameters name (``engine.kinds``)."""
        source = f"checkpoint {checkpoint.path}: "
        check_checkpoint_hyperparameters(checkpoint.hyperparameters, self.model_class, sorted(trusted), source)
        check_checkpoint_hyperparameters(checkpoint.data_hyperparameters, self.datamodule_class, sorted(trusted), source, option="data")

    def option_types(self) -> dict[str, Any]:
        """The type of each top-level option that names classes (``engine.kinds`` checks what they name)."""
        return {"model": self.model_class, "data": self.datamodule_class, "trainer": self.trainer_class,
                "weight_averaging": AveragedWeights, **CALLBACK_OPTIONS}

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand == "fit":
            warn_if_restarts_share_the_store()
        instantiated = self.config_init[self.subcommand] if self.subcommand else self.config_init
        averaging = instantiated.get("weight_averaging")
        if averaging is not None:  # among the callbacks the Trainer orders: before the checkpoints that save its state
            kwargs["callbacks"] = [*(instantiated["trainer"].get("callbacks") or []), averaging]
        with trainer_options_checked():
            trainer = super().instantiate_trainer(**torchrun_counts(config["trainer"]), **kwargs)
        if self.checkpoint is not None and isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO):
            trainer.strategy.checkpoint_io.hand_over(self.checkpoint.path, self.checkpoint.content)  # read once
        return trainer

    def after_fit(self) -> None:
        print_final_metrics(self.trainer)
        config = self.config[self.subcommand] if self.subcommand else self.config
        print_next_commands(self.trainer, sorted(packages_named(config.as_dict()) - set(TRUSTED_PACKAGES)))


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
def print_next_commands(trainer: Trainer, own_packages: list[str]) -> None:
    """The commands that test, predict with and export this run's best checkpoint, ready to paste:
    this interpreter, this ``train.py`` (or ``-m project``), and the checkpoint, which holds the
    model's and the data's arguments (the run's trainer options are in its ``config.yaml``). The
    packages of the user's own classes the run named are trusted by name (``--trusted_packages``)."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if not best:
        return

    trusted = ["--trusted_packages", f"[{', '.join(own_packages)}]"] if own_packages else []

    def command(subcommand: str) -> str:
        return shlex.join(train_command(subcommand, ["--ckpt_path", best, *trusted]))

    which = "Best" if trainer.checkpoint_callback.monitor else "Last"  # no validation split: the last one
    lines = [f"{which} checkpoint: {best}", "Test it:", "  " + command("test")]
    new_inputs = trainer.datamodule.new_inputs_option
    lines += [(f"Predict the test split{f', or new inputs with {new_inputs} added' if new_inputs else ''} "
               "(predictions.csv in a new run folder):"), "  " + command("predict"),
              *export_lines(trainer, command("export")),
              f"(The checkpoint holds the model's and the data's arguments; --config {run_folder(trainer) / 'config.yaml'} "
              "adds the run's trainer options too.)"]
    rank_zero_info("\n".join(lines))


def export_lines(trainer: Trainer, command: str) -> list[str]:
    """The export command, where the data module says how an exported model reads its inputs and the
    module what its outputs mean; else what to add for it (the command would only fail)."""
    missing = [f"{type(owner).__name__}.{hook}()" for owner, hook in
               ((trainer.datamodule, "inference_inputs"), (trainer.lightning_module, "export_outputs")) if only_declares(owner, hook)]
    if missing:
        return [f"(To export it, write {' and '.join(missing)}: see docs/add-your-own.md.)"]
    return ["Export it (ONNX with its preprocessing, safetensors, JSON; beside the checkpoint):", "  " + command]


def only_declares(instance: Any, hook: str) -> bool:
    """Whether ``hook`` of ``instance`` is only the base's declaration (one class in its MRO defines
    it, and a subclass of that class is what ``instance`` is): nothing says what it does."""
    definers = [cls for cls in type(instance).__mro__ if hook in vars(cls)]
    return len(definers) == 1 and definers[0] is not type(instance)


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


def main(args: list[str] | None = None, rooms: Sequence[str] = ()) -> None:
    """Run the CLI, with short class names found in the packages ``rooms``; a problem in the user's input ends it with one ``error:`` line and exit status 2."""
    quiet_known_noise()
    try:
        with exit_on_user_error():
            ProjectCLI(rooms, args=sys.argv[1:] if args is None else args)
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
    write_line(line)


def write_line(line: str) -> None:
    """``line`` to stderr in one write, so that the lines of several ranks sharing a pipe do not interleave."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def print_error(line: str) -> None:
    """Print ``line`` to stderr on rank 0. Before DDP starts every rank meets the same problem and it
    is said once; during training another rank's problem may be its own, so ranks 1.. say theirs too.
    The rank is Lightning's (``rank_zero_only.rank``: torchrun's, its own launcher's, or SLURM's)."""
    if rank_zero_only.rank == 0:
        write_line(line)
    elif dist.is_available() and dist.is_initialized():
        write_line(f"(rank {rank_zero_only.rank}) {line}")


def close_process_group() -> None:
    """Shut down the DDP process group before the interpreter exits.

    Lightning leaves it open. Left to interpreter shutdown, gloo's worker threads are sometimes
    destroyed while still joinable, and that rank dies with SIGABRT ("terminate called without an
    active exception") after an otherwise finished run.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def parse_fit_arguments(args: list[str], rooms: Sequence[str] = ()) -> Any:
    """The config ``train.py fit ARGS`` would run with, parsed but nothing built, for ``search.py``
    and ``seeds.py``. A broken config or a misspelt option ends the program here, with
    ``train.py``'s one-line error, before any run."""

    class ConfigOnly(ProjectCLI):
        def instantiate_classes(self) -> None:
            pass

    quiet_known_noise()
    seed_log = logging.getLogger(SEED_LOGGER)  # "Seed set to N": no run starts here
    level = seed_log.level
    seed_log.setLevel(logging.WARNING)
    try:
        with exit_on_user_error():
            return ConfigOnly(rooms, args=args, run=False).config
    finally:
        seed_log.setLevel(level)
