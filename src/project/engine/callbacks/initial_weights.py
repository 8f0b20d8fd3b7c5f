"""Start a new fit from another run's weights (to train longer than its schedule, or on new data)."""

from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from project.engine.checkpoint_io import check_same_model, read_checkpoint


class InitialWeights(Callback):
    """The module starts from the weights of ``checkpoint`` (another run's); the optimizer, the lr
    schedule, the epoch and the step start afresh. A fit that continues a checkpoint (``--ckpt_path``,
    ``--resume auto``) takes that checkpoint's weights instead.

        python train.py fit --config ... --trainer.callbacks+=project.engine.callbacks.InitialWeights \\
            --trainer.callbacks.checkpoint runs/<name>/version_N/checkpoints/last.ckpt
    """

    def __init__(self, checkpoint: str) -> None:
        super().__init__()
        self.checkpoint = checkpoint

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.ckpt_path is not None:  # Lightning has restored the continued checkpoint already
            return
        saved = read_checkpoint(Path(self.checkpoint))["state_dict"]  # weights only: nothing in it runs
        check_same_model(saved, pl_module.state_dict())
        pl_module.load_state_dict(saved)
        rank_zero_info(f"Starting from the weights of {self.checkpoint}")
