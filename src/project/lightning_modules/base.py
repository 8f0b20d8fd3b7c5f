"""The base of every training module here: a net sized by the data, trained with plain Lightning steps."""

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torchmetrics import MeanMetric, MetricCollection

from project.engine.callbacks.run_checks import RunChecks
from project.engine.checkpoint_io import check_same_model, keep_plain_hyperparameters
from project.engine.data import ProjectDataModule
from project.engine.kinds import check_checkpoint_file
from project.engine.preflight import check_monitors, monitors_of
from project.engine.resume import ResumeState
from project.engine.schedules import LRSchedule, with_schedule
from project.engine.signals import StopOnSignal
from project.engine.sizing import NetFactory, mirror_averaged, net_sizes
from project.engine.speed import SpeedOptions
from project.errors import UserError

TEST_TIME_FLIPS = ("hflip",)  # model.tta


class TrainingModule(LightningModule):
    """A net built from the data's sizes in ``configure_model``, trained on each sample's loss.

    A batch is ``(inputs, targets, weights, seeds)``: the project's loaders give each sample its
    weight in the loss, so that a step of accumulated batches, or of N ranks, equals one batch of
    them all, and the seed its random augmentation drew from (``engine.data``); a loader that gives
    ``(inputs, targets)`` weighs the samples of a batch alike.
    A subclass (``classification.py``, ``regression.py``) says what its task is in four places:

    - ``outputs_for(datamodule)``: the net's number of outputs for this data, and what the data has;
    - ``build_metrics(outputs)``: ``train_metrics``, ``val_metrics``, ``test_metrics``;
    - ``evaluate(x, target)``: each sample's loss, and the predictions and targets the metrics take;
    - ``predict_step`` and ``export_outputs()`` (what the outputs mean, for an exported model).

    The net's sizes are saved among the checkpoint's hyperparameters (``outputs_option``,
    ``input_shape``), so ``test``, ``predict`` and ``load_from_checkpoint`` rebuild the same net.
    Epoch losses and metrics are means over every sample of the epoch and every rank; the optimizer
    (any ``torch.optim`` class) gets the parameters that require gradients; ``tta: hflip`` makes
    test, predict and export average the outputs of each input and its mirror image.
    """

    outputs_option = "num_outputs"  # the hyperparameter that holds the net's number of outputs
    flops_per_batch = None  # read by Lightning's ThroughputMonitor: unknown here

    def __init__(
        self,
        net: NetFactory,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_schedule: LRSchedule = LRSchedule(),  # noqa: B008  (read-only; shown whole by --print_config)
        speed: SpeedOptions = SpeedOptions(),  # noqa: B008
        tta: str | None = None,
    ) -> None:
        super().__init__()
        if tta is not None and tta not in TEST_TIME_FLIPS:
            raise UserError(f"model.tta must be one of {', '.join(TEST_TIME_FLIPS)} or null, got {tta!r}")
        self.net_factory, self.optimizer_factory = net, optimizer
        self.lr_schedule, self.speed, self.tta = lr_schedule, speed, tta
        self.net: nn.Module | None = None  # built by build_net, once its sizes are known
        self.net_sizes: tuple[int, tuple[int, ...]] | None = None
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.clipped_steps = MeanMetric()  # the fraction of optimizer steps whose gradient clipping changed
        self.train_metrics: MetricCollection
        self.val_metrics: MetricCollection
        self.test_metrics: MetricCollection
        self._logged_epoch = {"train": -1, "clipping": -1}  # the epoch whose epoch metrics went to self.log

    # -- what a subclass says --------------------------------------------------------------------

    def outputs_for(self, datamodule: ProjectDataModule) -> tuple[int | None, str]:
        """The number of outputs the net needs for this data (None: the data does not say, as for
        inputs to predict), and what the data has, for a mismatch ("3 classes (a, b, c)")."""
        raise NotImplementedError

    def build_metrics(self, outputs: int) -> None:
        """Create ``train_metrics``, ``val_metrics`` and ``test_metrics`` for a net of ``outputs`` outputs."""
        raise NotImplementedError

    def evaluate(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss of each sample, predictions, targets)`` for inputs ``x``, in the form the metrics take."""
        raise NotImplementedError

    def export_outputs(self) -> dict[str, Any]:
        """What the net's outputs mean, for an exported model's JSON: ``{"task": ...}`` with one of
        ``project.inference.predictions.TASKS`` and what else a caller needs (class names)."""
        raise UserError(f"{type(self).__name__} does not say what its outputs mean for export: override export_outputs()")

    # -- the net ----------------------------------------------------------------------------------

    def configure_model(self) -> None:
        """Lightning calls this in every stage once the data is set up: build the net for the data.
        ``load_from_checkpoint`` calls it too, with no trainer: the net is built from the checkpoint's sizes."""
        if (trainer := self.attached_trainer()) is not None:
            self.size_net_for(trainer.datamodule)

    def size_net_for(self, datamodule: LightningDataModule) -> None:
        """Build the net with the data's sizes, or check that the sizes it was given (options, a
        checkpoint) fit the data. A data module that is not a ``ProjectDataModule`` does not say
        its sizes: the model's options (``num_classes``, ``input_shape``) then must."""
        given = self.net_sizes or (self.hparams.get(self.outputs_option), self.hparams.get("input_shape"))
        data_outputs, what, data_shape = None, "", None
        if isinstance(datamodule, ProjectDataModule):
            (data_outputs, what), data_shape = self.outputs_for(datamodule), datamodule.sample_shape()
            if self.tta is not None and (reason := datamodule.mirror_refusal()):
                raise UserError(f"model.tta {self.tta} averages over mirrored inputs, which makes no sense here: {reason}")
        outputs, shape = net_sizes(given, (data_outputs, data_shape), self.outputs_option, what, type(datamodule).__name__)
        if self.net is None:
            self.build_net(outputs, shape)

    def build_net(self, outputs: int, input_shape: Sequence[int]) -> None:
        """``self.net`` with ``outputs`` outputs for inputs of ``input_shape``, and the metrics for it."""
        self.net_sizes = (outputs, tuple(input_shape))
        self.net = self.net_factory(outputs, tuple(input_shape))
        self.speed.apply_to_net(self.net)
        self.build_metrics(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.speed.apply_to_input(x)
        if self.tta is not None and not self.fitting_or_validating():
            return mirror_averaged(self.net, x)
        return self.net(x)

    def fitting_or_validating(self) -> bool:
        trainer = self.attached_trainer()
        return trainer is not None and trainer.state.fn in (TrainerFn.FITTING, TrainerFn.VALIDATING)

    def attached_trainer(self) -> Trainer | None:
        """The Trainer running this module, or None (load_from_checkpoint, an export, a notebook)."""
        try:
            return self.trainer
        except RuntimeError:  # Lightning's "not attached to a Trainer"
            return None

    # -- steps ------------------------------------------------------------------------------------
    # Lightning's `self.log` costs about 0.5 ms a call on CPU, more than a small net's whole step:
    # metric objects are updated every step but handed to `self.log` once per epoch (Lightning keeps
    # the reference, computes and resets them at epoch end).

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, target, *extras = batch  # the project's loaders add weights and seeds (used before this step)
        weights = extras[0] if extras else torch.full((len(x),), 1 / len(x), device=x.device)
        losses, preds, target = self.evaluate(x, target)
        real = int(torch.count_nonzero(weights))  # the samples repeated to give every rank a batch weigh 0
        self.train_loss.update(losses[:real].detach())
        self.train_metrics.update(preds[:real], target[:real])
        if self._logged_epoch["train"] != self.current_epoch:  # batch 0, or the batch a mid-epoch resume starts at
            self._logged_epoch["train"] = self.current_epoch
            self.log("train/loss", self.train_loss, on_step=False, on_epoch=True)
            self.log_dict(self.train_metrics, on_step=False, on_epoch=True, prog_bar=True)
        if (self.trainer.global_step + 1) % self.trainer.log_every_n_steps == 0:  # only when the logger writes it
            self.log("train/loss_step", losses.detach().mean(), on_step=True, on_epoch=False, prog_bar=True)
        return (losses * weights.to(losses.dtype)).sum()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.evaluation_step(batch, batch_idx, "val", self.val_loss, self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.evaluation_step(batch, batch_idx, "test", self.test_loss, self.test_metrics)

    def evaluation_step(self, batch: Any, batch_idx: int, stage: str, mean_loss: MeanMetric,
                        metrics: MetricCollection) -> tuple[torch.Tensor, torch.Tensor]:
        losses, preds, target = self.evaluate(batch[0], batch[1])
        mean_loss.update(losses)
        metrics.update(preds, target)
        if batch_idx == 0:  # every rank has a first batch, also with uneven shards under DDP
            self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=True)
            self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)
        return preds, target

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        return with_schedule(optimizer, self.lr_schedule, self.trainer)

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clip as ``trainer.gradient_clip_val`` and ``gradient_clip_algorithm`` say (once per
        optimizer step, after accumulation and DDP's averaging), and log ``train/grad_norm`` (the
        2-norm before clipping) and ``train/clipped_steps`` (the fraction of steps clipping changed)."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not gradient_clip_val or not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads)
        bites = (torch.stack([g.abs().max() for g in grads]).max() if gradient_clip_algorithm == "value" else norm) > gradient_clip_val
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        self.clipped_steps.update(bites.to(norm.dtype))
        if self._logged_epoch["clipping"] != self.current_epoch:
            self._logged_epoch["clipping"] = self.current_epoch
            self.log("train/clipped_steps", self.clipped_steps, on_step=False, on_epoch=True)
        if (self.trainer.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    # -- around the steps -------------------------------------------------------------------------

    def configure_callbacks(self) -> list[Callback]:
        # Exact resume, a clean stop on a scheduler's signal and the set-up checks belong to every
        # run, whatever callbacks the config lists.
        return [RunChecks(), ResumeState(), StopOnSignal()]  # the checks first: a refused resume writes nothing

    def on_fit_start(self) -> None:
        monitors = monitors_of(self.trainer.callbacks)
        if self.lr_schedule.name == "plateau":
            monitors["model.lr_schedule.monitor"] = self.lr_schedule.monitor
        check_monitors(monitors, self.logged_metric_names())

    def logged_metric_names(self) -> set[str]:
        """What this module logs, which checkpoint and early-stopping monitors must name."""
        names = {f"{stage}/loss" for stage in ("train", "val", "test")} | {"train/loss_step"}
        if self.trainer.gradient_clip_val:
            names |= {"train/grad_norm", "train/clipped_steps"}
        return names.union(*(metrics.keys() for metrics in (self.train_metrics, self.val_metrics, self.test_metrics)))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        sizes = {self.outputs_option: self.net_sizes[0], "input_shape": list(self.net_sizes[1])} if self.net_sizes else {}
        keep_plain_hyperparameters(checkpoint, sizes)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_same_model(checkpoint.get("state_dict", {}), self.state_dict())

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, trusted_packages: Sequence[str] = (), **kwargs: Any) -> Any:
        """Lightning's ``load_from_checkpoint``, after checking what the checkpoint's hyperparameters
        name: classes from project, torch, torchvision, lightning and ``trusted_packages`` only, each
        of the kind its argument takes (``engine.kinds``). Arguments given here replace the checkpoint's."""
        check_checkpoint_file(checkpoint_path, cls, trusted_packages, kwargs)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
