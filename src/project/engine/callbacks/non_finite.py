"""Stop, or skip the update, when a step's gradients hold NaN or inf (as they do after a NaN or inf loss)."""

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from project.errors import UserError


class NonFiniteGradients(Callback):
    """Stops training, or skips the update, when a step's gradients hold NaN or inf.

    Every rank takes the same decision: a step is stopped or skipped when the gradients of any rank
    are non-finite (under DDP, one all-reduce of a flag per step). Gradients that are not averaged
    by DDP (a backbone unfrozen mid-run is averaged later, by ``FineTuningModule``) can differ
    between ranks here, and ranks that decided alone would wait for each other forever.
    ``stop`` ends the run with a message naming the step (checkpoints written before it stay);
    ``skip`` drops that optimizer step and goes on, counting the skips in ``train/skipped_steps``.
    """

    def __init__(self, action: str = "stop") -> None:
        super().__init__()
        if action not in ("stop", "skip"):
            raise UserError(f"NonFiniteGradients action must be stop or skip, got {action!r}")
        self.action = action
        self.skipped = 0
        self._batch_idx = 0
        self._epoch_steps = self._epoch_skipped = 0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_steps = self._epoch_skipped = 0

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """An epoch whose every step was skipped trained nothing: its checkpoints and metrics would
        judge the initial weights (or NaN ones), so the run stops here."""
        if self._epoch_steps and self._epoch_skipped == self._epoch_steps:
            raise UserError(f"every one of the {self._epoch_steps} steps of epoch {trainer.current_epoch} had NaN/inf gradients "
                            "and was skipped: nothing trained. Check the data for NaN/inf (data.skip_non_finite leaves such "
                            "samples out) and lower the learning rate")

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch_idx = batch_idx

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # One norm per tensor and one sync: NaN and inf survive the norm.
        finite = not grads or bool(torch.stack([torch.linalg.vector_norm(g) for g in grads]).isfinite().all())
        self._epoch_steps += 1
        if trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        where = f"step {trainer.global_step} (epoch {trainer.current_epoch}, batch {self._batch_idx})"
        if self.action == "stop":
            raise UserError(
                f"the loss or its gradients are NaN/inf at {where}: lower the learning rate, check the data "
                "for NaN/inf, or skip such steps with the NonFiniteGradients callback's action: skip"
            )
        self.skipped += 1
        self._epoch_skipped += 1
        optimizer.zero_grad(set_to_none=True)  # optimizers leave parameters without gradients alone
        rank_zero_info(f"skipped the update at {where}: NaN/inf gradients ({self.skipped} skipped so far)")
        pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)
