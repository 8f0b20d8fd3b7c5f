"""The training-module contract: a net sized by the data, trained with an optimizer and a schedule,
each sample's loss counted alike under gradient accumulation and DDP."""

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, StochasticWeightAveraging, WeightAveraging
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import MeanMetric, MetricCollection

from project.engine.checkpoint_io import is_plain_data, read_checkpoint
from project.engine.data import ProjectDataModule
from project.errors import UserError
from project.engine.internals import PlainHookNameWrites
from project.engine.kinds import check_checkpoint_hyperparameters
from project.engine.preflight import check_monitors, monitors_of
from project.engine.resume import ResumeState
from project.engine.schedules import LRSchedule, build_schedulers
from project.engine.signals import StopOnSignal
from project.engine.speed import SpeedOptions
from project.inference.inputs import shape_text

TEST_TIME_FLIPS = ("hflip",)  # model.tta

NetFactory = Callable[[int, tuple[int, ...]], nn.Module]
"""A net class from ``project.nets`` (or any ``nn.Module``) whose first two arguments are its number
of outputs and the shape of one input sample. The config gives its other arguments; the module
fills in these two from the data (or from the checkpoint it is loading)."""


def mirror_averaged(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The mean of ``net``'s outputs on images ``x`` and on ``x`` mirrored left to right (``model.tta: hflip``)."""
    return (net(x) + net(x.flip(-1))) / 2


class TrainingModule(PlainHookNameWrites, LightningModule):
    """The base class of every training module here: builds a net with the outputs and input shape
    the data asks for, and trains it with an optimizer and a schedule.

    Subclasses (``project.lightning_modules``) add the loss and the metrics: they implement
    ``outputs_of`` (the number of outputs a data module needs), ``evaluate`` and ``predict_step``,
    and ``build`` if their metrics depend on that number. Its data comes from a
    ``ProjectDataModule``. Checkpoints hold both sizes among the hyperparameters, so ``test``,
    ``predict`` and ``load_from_checkpoint`` rebuild the same net from a checkpoint.
    Epoch losses and metrics are averaged per sample over the whole epoch and across ranks under
    DDP (torchmetrics sums their states over ranks once, at epoch end); ``train/loss_step`` is this
    rank's batch loss. The optimizer is any ``torch.optim`` class given by ``class_path`` in the
    config; it only receives parameters that require gradients, so frozen layers cost nothing.
    ``tta: hflip`` makes ``test``, ``predict`` and ``export`` average the net's outputs over each
    input and its mirror image (validation, which picks the best checkpoint, does not); data
    modules refuse it where mirroring changes what an input is (``mirror_refusal``).
    """

    flops_per_batch = None  # read by Lightning's ThroughputMonitor; unknown here
    outputs_key = "num_outputs"  # the hyperparameter that holds the net's number of outputs

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
        self.net_factory = net
        self.tta = tta
        self.net: nn.Module | None = None
        self.optimizer_factory = optimizer
        self.lr_schedule = lr_schedule
        self.speed = speed
        self.net_sizes: tuple[int, tuple[int, ...]] | None = None  # (outputs, input shape) of the built net
        self.class_names: list[str] | None = None  # classification: the data's, saved in checkpoints
        self._train_logged_epoch = -1  # the epoch whose training metrics have been handed to self.log
        self.train_loss = MeanMetric()
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.clipped_steps = MeanMetric()  # the fraction of optimizer steps whose gradient clipping changed
        self._clipping_logged_epoch = -1
        self.train_metrics: MetricCollection
        self.val_metrics: MetricCollection
        self.test_metrics: MetricCollection

    # -- building ------------------------------------------------------------------------------

    def build_net(self, outputs: int, input_shape: Sequence[int]) -> None:
        """Create ``self.net`` with ``outputs`` outputs for inputs of ``input_shape`` (both go into
        every checkpoint's hyperparameters), in the layout and compiled form ``speed`` asks for."""
        self.net_sizes = (outputs, tuple(input_shape))
        self.net = self.net_factory(outputs, tuple(input_shape))
        self.speed.apply_to_net(self.net)
        self.build(outputs)

    def build(self, outputs: int) -> None:
        """Create what else depends on the number of outputs (metrics, for classification)."""

    def outputs_of(self, datamodule: ProjectDataModule) -> int | None:
        """How many outputs the net needs for this data module's data; None when the data does not
        say (inputs to predict, with no targets)."""
        raise NotImplementedError

    def outputs_mismatch(self, datamodule: ProjectDataModule, outputs: int, given: int) -> str:
        """The message for data that needs ``outputs`` outputs when the model was given ``given``."""
        return f"the data needs {outputs} outputs but model.{self.outputs_key} is {given}"

    def setup(self, stage: str) -> None:
        # The data module is set up by now: it knows its classes or target columns and its inputs.
        datamodule = self.trainer.datamodule
        self.fit_to(datamodule)
        if stage == "fit" and not datamodule.has_validation():
            self.train_without_validation()
        if stage == "fit":
            for callback in self.trainer.callbacks:
                if isinstance(callback, (WeightAveraging, StochasticWeightAveraging)):
                    kind = "SWA" if isinstance(callback, StochasticWeightAveraging) or type(callback) is WeightAveraging else "EMA"
                    raise UserError(f"Lightning's {type(callback).__name__} copies the whole module before its net is built from the "
                                    f"data: leave it out of trainer.callbacks and use --weight_averaging {kind} (project.engine.callbacks)")
            monitors = monitors_of(self.trainer.callbacks)
            if self.lr_schedule.name == "plateau":
                monitors["model.lr_schedule.monitor"] = self.lr_schedule.monitor
            check_monitors(monitors, self.logged_metric_names())

    def fit_to(self, datamodule: Any) -> None:
        """Check that the net's sizes (given, or from a checkpoint) fit the set-up data module's
        data, and build the net from the data's sizes if it is not built yet."""
        if not isinstance(datamodule, ProjectDataModule):
            raise UserError(f"{type(self).__name__} takes its data from a data module derived from "
                            f"project.engine.data.ProjectDataModule, got {type(datamodule).__name__}")
        given_outputs, given_shape = self.net_sizes or (self.hparams.get(self.outputs_key), self.hparams.get("input_shape"))
        data_outputs, data_shape = self.outputs_of(datamodule), datamodule.sample_shape()
        if self.tta is not None and (reason := datamodule.mirror_refusal()):
            raise UserError(f"model.tta {self.tta} averages over mirrored inputs, which makes no sense here: {reason}")
        if given_outputs is not None and data_outputs is not None and given_outputs != data_outputs:
            raise UserError(self.outputs_mismatch(datamodule, data_outputs, given_outputs))
        if given_shape is not None and data_shape is not None and tuple(given_shape) != tuple(data_shape):
            raise UserError(
                f"the data's inputs have shape {shape_text(data_shape)} but the model takes {shape_text(given_shape)} "
                "(model.input_shape; a checkpoint keeps the shape it was trained on)"
            )
        if self.net is None:
            outputs = given_outputs if given_outputs is not None else data_outputs
            shape = given_shape if given_shape is not None else data_shape
            if outputs is None or shape is None:
                missing = f"model.{self.outputs_key}" if outputs is None else "model.input_shape"
                raise UserError(f"{type(datamodule).__name__} does not say the net's size: set {missing} (or give --ckpt_path)")
            self.build_net(outputs, shape)

    def export_outputs(self) -> dict[str, Any]:
        """What the net's outputs mean, for an exported model's JSON: ``{"task": ...}`` with one of
        ``project.inference.predictions.TASKS`` and what else a caller needs (class names)."""
        raise UserError(f"{type(self).__name__} does not say what its outputs mean for export: override export_outputs()")

    def logged_metric_names(self) -> set[str]:
        """The names this module logs (``val/acc``, ...), against which checkpoint and early-stopping
        monitors are checked before the first step. A subclass that logs more adds them here."""
        names = {f"{stage}/loss" for stage in ("train", "val", "test")} | {"train/loss_step"}
        trainer = self.attached_trainer()
        if trainer is not None and trainer.gradient_clip_val:
            names |= {"train/grad_norm", "train/clipped_steps"}
        for metrics in (self.train_metrics, self.val_metrics, self.test_metrics):
            names |= set(metrics.keys())
        return names

    def train_without_validation(self) -> None:
        """No validation split: the callbacks that watch a validation metric (early stopping, the best
        checkpoint) are left out, ``last.ckpt`` is still written, and the run says so."""
        watching = [c for c in self.trainer.callbacks if isinstance(c, (EarlyStopping, ModelCheckpoint))
                    and str(c.monitor or "").startswith("val/")]
        self.trainer.callbacks = [c for c in self.trainer.callbacks if c not in watching]
        rank_zero_info("no validation split (data.val_fraction is 0): training without validation; early stopping "
                       "and the best checkpoint are off, checkpoints/last.ckpt is written every epoch")

    def configure_callbacks(self) -> list[Callback]:
        # Exact resume, and a clean stop on a scheduler's signal, belong to every run whatever callbacks the config lists.
        return [ResumeState(), StopOnSignal()]

    # -- steps ---------------------------------------------------------------------------------

    def evaluate(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(loss of each sample, predictions, targets)`` for a batch, in the form the metrics take."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.speed.apply_to_input(x)
        if self.tta is not None and not self._training_or_validating():
            return mirror_averaged(self.net, x)
        return self.net(x)

    def _training_or_validating(self) -> bool:
        trainer = self.attached_trainer()
        return trainer is not None and trainer.state.fn in (TrainerFn.FITTING, TrainerFn.VALIDATING)

    def attached_trainer(self) -> Any:
        """The Trainer running this module, or None (an export, a notebook)."""
        try:
            return self.trainer
        except RuntimeError:  # Lightning's "not attached to a Trainer"
            return None

    # Lightning's `self.log` costs about 0.5 ms a call on CPU, more than a small net's whole step.
    # Metric objects are updated every step but handed to `self.log` once per epoch (Lightning keeps
    # the reference, computes and resets them at epoch end); the step loss is logged only on the
    # steps whose metrics the logger writes (every `log_every_n_steps` optimizer steps).

    def training_batch(self, batch: Any) -> Any:
        """The batch a training step learns from (a subclass may mix its samples); the default is the batch."""
        return batch

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        losses, preds, target = self.evaluate(self.training_batch(batch))
        real, step_total = self._sample_counts(len(losses))
        if real < len(losses):  # samples repeated only to give every rank as many batches count zero
            losses, preds, target = losses[:real], preds[:real], target[:real]
        if real:
            self.train_loss.update(losses.detach())
            self.train_metrics.update(preds, target)
        if self._train_logged_epoch != self.current_epoch:  # batch 0, or the batch a mid-epoch resume starts at
            self._train_logged_epoch = self.current_epoch
            self.log("train/loss", self.train_loss, on_step=False, on_epoch=True)
            self.log_dict(self.train_metrics, on_step=False, on_epoch=True, prog_bar=True)
        if (self.trainer.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/loss_step", losses.detach().mean(), on_step=True, on_epoch=False, prog_bar=True)
        # Each sample's loss over the samples of the whole optimizer step (all accumulated batches, all
        # ranks): Lightning divides the returned loss by accumulate_grad_batches and DDP averages the
        # gradients over the ranks, so both are multiplied back. A step of k batches of b then equals
        # one batch of k*b, also when the last batch is short, and N ranks equal one process.
        return losses.sum() * (self.trainer.accumulate_grad_batches * self.trainer.world_size / step_total)

    def _sample_counts(self, batch_size: int) -> tuple[int, int]:
        """``(real samples in this batch, real samples in its optimizer step)``, from the data module's
        sampler; without one, every batch counts as full."""
        counts = self.trainer.datamodule.next_train_batch_weights()
        if counts is None:
            return batch_size, batch_size * self.trainer.accumulate_grad_batches * self.trainer.world_size
        return counts

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "val", self.val_loss, self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step(batch, batch_idx, "test", self.test_loss, self.test_metrics)

    def _evaluation_step(
        self, batch: Any, batch_idx: int, stage: str, mean_loss: MeanMetric, metrics: MetricCollection
    ) -> tuple[torch.Tensor, torch.Tensor]:
        losses, preds, target = self.evaluate(batch)
        mean_loss.update(losses)  # the mean over every sample of the epoch
        metrics.update(preds, target)
        if batch_idx == 0:  # every rank has a first batch, also with uneven shards under DDP
            self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, prog_bar=True)
            self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)
        return preds, target

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Clip as ``trainer.gradient_clip_val`` and ``trainer.gradient_clip_algorithm`` (norm or
        value) say, and log when it bites: ``train/grad_norm``, the gradient's 2-norm before
        clipping (on the steps the logger writes), and ``train/clipped_steps``, the fraction of the
        epoch's steps that clipping changed. Lightning calls this once per optimizer step, after
        accumulation and after DDP has averaged the gradients: what is clipped is the step's gradient."""
        if not gradient_clip_val:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads)
        if gradient_clip_algorithm == "value":
            bites = torch.stack([g.abs().max() for g in grads]).max() > gradient_clip_val
        else:
            bites = norm > gradient_clip_val
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        self.clipped_steps.update(bites.to(norm.dtype))
        if self._clipping_logged_epoch != self.current_epoch:
            self._clipping_logged_epoch = self.current_epoch
            self.log("train/clipped_steps", self.clipped_steps, on_step=False, on_epoch=True)
        if (self.trainer.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    # -- checkpoints ---------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # From the command line every hyperparameter is plain data (the net and optimizer as
        # class_path and init_args), which test, predict and load_from_checkpoint rebuild them from.
        # Objects given in Python (a net class, an optimizer, an LRSchedule) are left out, so that the
        # checkpoint still loads with weights_only=True; pass them to load_from_checkpoint instead.
        # The net's sizes, which came from the data, are saved with them: whatever loads the
        # checkpoint builds the same net before it loads the weights.
        hparams = checkpoint.setdefault("hyper_parameters", {})
        for key in [key for key, value in hparams.items() if not is_plain_data(value)]:
            del hparams[key]
        if self.net_sizes is not None:
            hparams[self.outputs_key], hparams["input_shape"] = self.net_sizes[0], list(self.net_sizes[1])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Name a checkpoint of another model plainly, before Lightning's long key-mismatch dump."""
        saved_state, own_state = checkpoint.get("state_dict", {}), self.state_dict()
        saved, own = set(saved_state), set(own_state)
        missing, foreign = sorted(own - saved), sorted(saved - own)
        if missing or foreign:
            raise UserError(
                f"the checkpoint was saved from a different model: {len(missing)} of this model's tensors are not in it"
                + (f" (e.g. {missing[0]})" if missing else "")
                + f" and {len(foreign)} of its tensors are not this model's" + (f" (e.g. {foreign[0]})" if foreign else "")
            )
        for key, tensor in saved_state.items():
            if tuple(tensor.shape) != tuple(own_state[key].shape):
                raise UserError(
                    f"the checkpoint's {key} has shape {tuple(tensor.shape)} but this model's has {tuple(own_state[key].shape)}: "
                    "it was trained with other sizes (classes, inputs) or another net"
                )

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, trusted_packages: Sequence[str] = (), **kwargs: Any) -> Any:
        """Lightning's ``load_from_checkpoint``, after checking what the checkpoint's hyperparameters
        name (``engine.kinds``): classes from project, torch, torchvision, lightning and
        ``trusted_packages`` only, each of the kind its argument takes. Arguments given here are
        code, not checked; they replace the checkpoint's."""
        content = read_checkpoint(Path(checkpoint_path)) if isinstance(checkpoint_path, (str, Path)) else None
        if content is None:  # a file object: read, then rewound for Lightning
            content = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
            checkpoint_path.seek(0)
        hparams = dict(content.get("hyper_parameters") or {})
        if kwargs.get("hparams_file"):  # Lightning lays its hyperparameters over the checkpoint's
            hparams.update(yaml.safe_load(Path(kwargs["hparams_file"]).read_text()) or {})
        hparams = {key: value for key, value in hparams.items() if key not in kwargs}
        check_checkpoint_hyperparameters(hparams, cls, trusted_packages, f"checkpoint {checkpoint_path}: ",
                                         trust_option="trusted_packages=[{!r}]")
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    # -- optimisation --------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        return self._with_schedule(self.optimizer_factory([p for p in self.parameters() if p.requires_grad]))

    def _with_schedule(self, optimizer: torch.optim.Optimizer) -> Any:
        """The optimizer with the configured lr schedule, in the form ``configure_optimizers`` returns."""
        if self.lr_schedule.name == "none" and not self.lr_schedule.warmup_epochs:
            return optimizer
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs < 1:
            raise UserError("an lr schedule is defined in epochs: set trainer.max_epochs")
        schedulers = build_schedulers(optimizer, self.lr_schedule, self._steps_per_epoch(), max_epochs)
        return [optimizer], schedulers

    def _steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch on this rank (after ``limit_train_batches`` and accumulation)."""
        self.trainer.estimated_stepping_batches  # noqa: B018  (sets up the train loader and its length)
        batches = self.trainer.num_training_batches
        if math.isinf(batches):
            raise UserError("an lr schedule needs a train loader with a length (the dataset has none)")
        return max(1, math.ceil(batches / self.trainer.accumulate_grad_batches))
