"""Checks of a run's set-up that no single class can make alone: the callbacks against the data."""

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, StochasticWeightAveraging, WeightAveraging
from lightning.pytorch.utilities import rank_zero_info

from project.engine.data import ProjectDataModule
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
