"""Checks of a run's set-up that no single class can make alone: the callbacks against the data."""

import shlex
import sys
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, StochasticWeightAveraging, WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info

from project.engine.data import ProjectDataModule
from project.engine.paths import train_command
from project.errors import UserError


class RunChecks(Callback):
    """Before a fit: Lightning's own weight averaging is refused (it copies the module before its
    net is built: ``--weight_averaging`` does it), and data with no validation split trains without
    the callbacks that watch a validation metric (``last.ckpt`` is still written). The training
    module adds it to every run (``configure_callbacks``)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        for callback in trainer.callbacks:
            if isinstance(callback, (WeightAveraging, StochasticWeightAveraging)):
                kind = "SWA" if isinstance(callback, StochasticWeightAveraging) or type(callback) is WeightAveraging else "EMA"
                raise UserError(f"Lightning's {type(callback).__name__} copies the whole module before its net is built from the "
                                f"data: leave it out of trainer.callbacks and use --weight_averaging {kind} (project.engine.callbacks)")
        datamodule = trainer.datamodule
        if isinstance(datamodule, ProjectDataModule) and not datamodule.has_validation():
            watching = [c for c in trainer.callbacks if isinstance(c, (EarlyStopping, ModelCheckpoint))
                        and str(c.monitor or "").startswith("val/")]
            trainer.callbacks = [c for c in trainer.callbacks if c not in watching]
            rank_zero_info("no validation split (data.val_fraction is 0): training without validation; early stopping "
                           "and the best checkpoint are off, checkpoints/last.ckpt is written every epoch")

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """A one-cycle schedule continued from a checkpoint spans the steps that checkpoint's run was
        sized for (``total_steps`` in torch's ``OneCycleLR`` state): a longer run would step past its
        end (torch's "Tried to step N times"). Refused before anything of the new run is written."""
        if trainer.state.fn != TrainerFn.FITTING:
            return
        planned = trainer.estimated_stepping_batches
        for state in checkpoint.get("lr_schedulers") or []:
            if isinstance(state.get("total_steps"), int) and state["total_steps"] < planned:
                command = shlex.join(train_command("fit", [
                    *without_options(sys.argv[2:], ("--ckpt_path", "--resume")),
                    "--trainer.callbacks+=project.engine.callbacks.InitialWeights", f"--trainer.callbacks.checkpoint={trainer.ckpt_path}"]))
                raise UserError(f"the one-cycle lr schedule of {trainer.ckpt_path} ends at step {state['total_steps']} and this "
                                f"run would take {int(planned)}: a schedule sized by its total steps does not stretch. To train "
                                f"longer, start a new fit from its weights: {command}")


def without_options(args: list[str], options: tuple[str, ...]) -> list[str]:
    """``args`` without ``options`` and their values (``--ckpt_path X``, ``--resume=auto``)."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif not arg.startswith(tuple(f"{option}=" for option in options)):
            kept.append(arg)
    return kept
