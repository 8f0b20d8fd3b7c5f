"""The best checkpoint, chosen so that a saturated validation metric does not freeze it."""

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint


class LatestBestCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint``, except that a score equal to the best so far counts as an
    improvement: of several equally good epochs, the latest is kept.

    A small validation set saturates (180 digits reach ``val/acc`` 1.0 halfway through training) and
    Lightning would keep the first epoch that got there, while the learning rate was still high;
    the later, annealed epochs with the same score test better.
    """

    def check_monitor_top_k(self, trainer: Trainer, current: torch.Tensor | None = None) -> bool:
        if current is None or self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return super().check_monitor_top_k(trainer, current)
        monitor_op = {"min": torch.le, "max": torch.ge}[self.mode]
        better_or_equal = bool(monitor_op(current, self.best_k_models[self.kth_best_model_path]))
        return trainer.strategy.reduce_boolean_decision(better_or_equal)  # every rank takes the same decision
