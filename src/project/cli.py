"""The command line: LightningCLI with the project's modules, and one-line errors for bad input."""

import contextlib
import os
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, NoReturn

import torch.distributed as dist
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins import LayerSync
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from rich.console import Console
from rich.table import Table

from project.callbacks import EpochLines, InjectedFault, RandomState
from project.distributed import SyncBatchNormPlugin, match_torchrun, warn_if_restarts_share_the_store
from project.errors import UserError
from project.resuming import continue_wandb_run, newest_checkpoint

DEFAULT_LOGGER = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}


NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value type:")


def concise_parse_error(message: str) -> str:
    """The cause of a config error in a few lines: our own message if we raised one, else
    jsonargparse's message without the union bookkeeping and the dumps of every value it tried."""
    for ours in reversed(UserError.raised):
        if ours in message:
            return ours
    kept = []
    for line in message.strip().splitlines():
        text = line.strip()
        if not text or text.startswith(NOISE) or "<class 'NoneType'>" in text:
            continue
        if text.startswith("Given value:") and len(text) > 120:
            continue
        kept.append(text)
    return "\n  ".join(kept[:6])


class ProjectArgumentParser(LightningArgumentParser):
    """Prints config errors as one ``error:`` line instead of the usage text and a value dump."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        print(f"error: {concise_parse_error(message)}\n(see: python train.py <subcommand> --help)", file=sys.stderr)
        sys.exit(2)


class SaveConfigToRun(SaveConfigCallback):
    """Saves the resolved config as ``config.yaml`` in the run folder (Lightning's part) and, when
    W&B is the logger, as the W&B run config. Lightning calls ``save_config`` on rank 0 only.

    A run continued in its own folder (W&B resuming its run) keeps the first ``config.yaml`` and
    adds ``config_resumed_N.yaml``.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.config.get("ckpt_path") and not self.already_saved:
            log_dir = Path(trainer.log_dir or ".")  # a collective call under DDP: every rank makes it
            if (log_dir / self.config_filename).exists():
                n = 1
                while (log_dir / f"config_resumed_{n}.yaml").exists():
                    n += 1
                self.config_filename = f"config_resumed_{n}.yaml"
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if isinstance(trainer.logger, WandbLogger):
            trainer.logger.experiment.config.update(self.config.as_dict(), allow_val_change=True)


class ProjectCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict`` for any model and data module named in the config.

    Configs name the classes with ``class_path`` (subclass mode), so one entry point serves
    every recipe in ``configs/``.
    """

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": False})
        kwargs.setdefault("save_config_callback", SaveConfigToRun)
        kwargs.setdefault("parser_class", ProjectArgumentParser)
        kwargs.setdefault("trainer_defaults", {"logger": DEFAULT_LOGGER})
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,  # the optimizer and schedule live in --model.*
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--resume", choices=["auto", "never"], default="never",
            help="(fit only) auto: continue from the newest readable checkpoint under the logger's folder, "
            "for restarted jobs; ignored when --ckpt_path is given",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        match_torchrun(config["trainer"])
        if self.subcommand == "fit":
            warn_if_restarts_share_the_store()
            if config.get("resume") == "auto" and not config.get("ckpt_path"):
                config["ckpt_path"] = newest_checkpoint(config["trainer"])
            continue_wandb_run(config)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        # trainer.sync_batchnorm: Lightning's own plugin converts to torch's SyncBatchNorm, which
        # refuses CPU tensors; ours also syncs on CPU (gloo).
        plugins = config.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if config.get("sync_batchnorm") and not any(isinstance(p, LayerSync) for p in plugins):
            config["plugins"] = [*plugins, SyncBatchNormPlugin()]
        callbacks = [*callbacks, RandomState()]
        fault = InjectedFault.from_environment()
        if fault is not None:
            callbacks.append(fault)
        # Without a terminal a live progress bar turns into thousands of redrawn lines in the log.
        has_bar = any(isinstance(c, ProgressBar) for c in [*callbacks, *(config.get("callbacks") or [])])
        if config.get("enable_progress_bar", True) and not has_bar and not sys.stdout.isatty():
            config["enable_progress_bar"] = False
            callbacks = [*callbacks, EpochLines()]
        trainer = super()._instantiate_trainer(config, callbacks)
        if type(trainer.profiler) is PassThroughProfiler:  # no profiler asked for
            trainer.profiler = NoProfiler()
        return trainer

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint here, before anything else: check it first.
        if self.config.get("subcommand"):
            check_checkpoint_path(self.config[self.config.subcommand].get("ckpt_path"))
        super()._parse_ckpt_path()

    def after_fit(self) -> None:
        print_final_metrics(self.trainer)
        checkpoint = self.trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_path", "")
        if best:
            rank_zero_info(f"Best checkpoint: {best}\nTest it with: python train.py test --config <config> --ckpt_path {best}")


class NoProfiler(PassThroughProfiler):
    """Lightning's stand-in when no profiler is set, minus its cost: Lightning wraps each of the
    dozens of hook calls in a training step in ``profiler.profile(...)``, which for the stand-in still builds
    a generator-based context manager. A shared ``nullcontext`` does the same nothing for less."""

    _nothing = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.nullcontext:  # type: ignore[override]
        return self._nothing


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


def check_checkpoint_path(ckpt_path: str | None) -> None:
    """Refuse a checkpoint path that does not exist or is not a torch checkpoint, before any work.

    ``best``, ``last``, ``hpc`` and ``registry`` are Lightning's own names and are left to Lightning.
    """
    if ckpt_path is None or ckpt_path in ("best", "last", "hpc", "registry"):
        return
    path = Path(ckpt_path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is not a readable checkpoint (truncated, or not saved by torch.save)")


def user_error_message(error: BaseException) -> str | None:
    """The message of the ``UserError`` behind ``error``, if any.

    Looks through the exception chain (jsonargparse wraps errors raised while it builds the
    classes) and unwraps a DataLoader worker's re-raise, which prepends the worker traceback.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UserError):
            text = str(current)
            if "Original Traceback" in text:
                text = text.strip().splitlines()[-1].split("UserError: ", 1)[-1]
            return text
        current = current.__cause__ or current.__context__
    return None


def main(args: list[str] | None = None) -> None:
    """Run the CLI; a problem in the user's input ends it with one ``error:`` line and exit status 2."""
    # Lightning 2.6 calls a torch API that torch 2.14 deprecates, once per run: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    try:
        ProjectCLI(args=args)
    except Exception as error:
        message = user_error_message(error)
        if message is None:
            raise
        if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0:  # every rank fails alike: say it once
            print(f"error: {message}", file=sys.stderr)
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
