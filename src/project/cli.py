"""The command line: LightningCLI with the project's base config, and one-line errors for bad input."""

import os
import sys
import warnings
from pathlib import Path
from typing import NoReturn

import torch.distributed as dist
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from rich.console import Console
from rich.table import Table

from project.callbacks import LatestBestCheckpoint
from project.distributed import match_torchrun, warn_if_restarts_share_the_store
from project.errors import find_user_error
from project.loggers import run_folder
from project.resume import prepare_checkpoint

BASE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "base.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")


class ProjectArgumentParser(LightningArgumentParser):
    """Prints a config error as one ``error:`` line: our own message when one of our classes refused a
    value, else jsonargparse's, without the usage text."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        ours = find_user_error(ex)
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
        path, n = folder / self.config_filename, 0
        while path.exists():
            n += 1
            path = folder / f"config_resumed_{n}.yaml"
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
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,  # the optimizer and schedule live in --model.*
            **kwargs,
        )

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
        if subcommand:  # before LightningCLI and the Trainer read the checkpoint
            prepare_checkpoint(self.config[subcommand], subcommand)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        match_torchrun(config["trainer"])
        if self.subcommand == "fit":
            warn_if_restarts_share_the_store()

    def after_fit(self) -> None:
        print_final_metrics(self.trainer)
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        if best:
            rank_zero_info(f"Best checkpoint: {best}\nTest it with: python train.py test --config <config> --ckpt_path {best}")


@rank_zero_only
def print_final_metrics(trainer: Trainer) -> None:
    """A table of the last epoch's metrics (``test`` prints Lightning's own table)."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1 and not k.endswith("_step")}
    if not metrics:
        return
    table = Table(title="Final metrics", caption=f"{trainer.current_epoch} epochs, {trainer.global_step} steps")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        table.add_row(key, f"{metrics[key]:.6g}")
    Console().print(table)


def main(args: list[str] | None = None) -> None:
    """Run the CLI; a problem in the user's input ends it with one ``error:`` line and exit status 2."""
    # Lightning 2.6 calls a torch API that torch 2.14 deprecates, once per run: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    try:
        ProjectCLI(args=args)
    except Exception as error:
        ours = find_user_error(error)
        if ours is None:
            raise
        if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0:  # every rank fails alike: say it once
            print(f"error: {ours}", file=sys.stderr)
        sys.exit(2)
    finally:
        close_process_group()


def close_process_group() -> None:
    """Shut down the DDP process group before the interpreter exits.

    Lightning leaves it open. Left to interpreter shutdown, gloo's worker threads are sometimes
    destroyed while still joinable, and that rank dies with SIGABRT ("terminate called without an
    active exception") after an otherwise finished run.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
