"""Classification: multiclass (cross-entropy, NLL), binary and multilabel (BCE with logits)."""

import os
from typing import Any

import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torchmetrics import Accuracy, ConfusionMatrix, F1Score, MetricCollection

from project.engine.data import ProjectDataModule
from project.engine.loggers import log_picture, run_folder
from project.engine.reports import report_confusion_matrix
from project.engine.schedules import LRSchedule
from project.engine.sizing import NetFactory
from project.engine.speed import SpeedOptions
from project.errors import UserError
from project.lightning_modules.base import TrainingModule
from project.lightning_modules.losses import CLASSIFICATION_LOSSES, build_loss, per_sample
from project.lightning_modules.mixing import SampleMixing


class ClassificationModule(TrainingModule):
    """Trains a net whose outputs are class logits.

    The task follows from the loss: ``cross_entropy``, ``nll`` or any other ``nn.Module`` loss given
    by ``class_path`` are multiclass (targets are class indices); ``bce_with_logits`` is binary
    (one output, targets 0/1) for data with two classes and multilabel otherwise (multi-hot
    targets). Logged metrics: ``{train,val,test}/loss``, ``{train,val,test}/acc``, and for val/test
    also ``f1`` (macro) and ``top{k}_acc`` (multiclass with more than ``top_k`` classes). ``test``
    also writes a confusion matrix.

    Args:
        net: the net, without its number of outputs and input shape (see ``NetFactory``).
        num_classes: leave it out to take the class count from the data; a count given here must
            match the data's (1 for a binary task with ``bce_with_logits``).
        input_shape: the shape of one input; leave it out to take it from the data.
        loss: ``cross_entropy``, ``nll`` (on ``log_softmax`` of the outputs), ``bce_with_logits``, or
            any ``nn.Module`` loss by ``class_path``, called as ``loss(logits, targets)``.
        class_weights: per-class weights (cross_entropy, nll) or per-label ``pos_weight`` (bce).
        label_smoothing: for cross_entropy.
        top_k: also report top-k accuracy for this k.
        tta: ``hflip``: test, predict and export average the logits of each image and its mirror
            image (refused for data where mirroring changes the class, such as digits).
        mixup_alpha: MixUp each training image with another, the ratio drawn from Beta(alpha,
            alpha) (0.2 is usual; 0: off).
        cutmix_alpha: CutMix likewise (1.0 is usual); with both, one or the other per step. The
            loss takes the soft targets; ``train/acc`` then counts a mixed image as right when the
            prediction is the class with the larger share of it.
    """

    outputs_option = "num_classes"

    def __init__(
        self,
        net: NetFactory,
        num_classes: int | None = None,
        input_shape: list[int] | None = None,
        loss: str | nn.Module = "cross_entropy",
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        top_k: int = 5,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_schedule: LRSchedule = LRSchedule(),  # noqa: B008  (read-only; shown whole by --print_config)
        speed: SpeedOptions = SpeedOptions(),  # noqa: B008
        tta: str | None = None,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
    ) -> None:
        super().__init__(net, optimizer, lr_schedule, speed, tta)
        self.save_hyperparameters()  # with the net's config: a checkpoint rebuilds its own net
        if num_classes is not None and num_classes < 1:
            raise UserError(f"num_classes must be >= 1, got {num_classes}")
        if num_classes == 1 and loss != "bce_with_logits":
            raise UserError("num_classes: 1 is a binary task: use loss: bce_with_logits")
        if not 0 <= label_smoothing < 1:
            raise UserError(f"label_smoothing must be in [0, 1) (0.1 is usual), got {label_smoothing}")
        if top_k < 1:
            raise UserError(f"top_k must be >= 1, got {top_k}")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise UserError(f"mixup_alpha and cutmix_alpha must be >= 0 (0: off), got {mixup_alpha} and {cutmix_alpha}")
        if (mixup_alpha or cutmix_alpha) and loss == "bce_with_logits":
            raise UserError("mixup_alpha and cutmix_alpha mix class-index targets: use loss cross_entropy or nll, not bce_with_logits")
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.mixing: SampleMixing | None = None
        self.num_classes = num_classes
        self.loss_fn = build_loss(loss, CLASSIFICATION_LOSSES, class_weights, label_smoothing)
        self.multilabel_loss = loss == "bce_with_logits"
        self.class_weights, self.top_k = class_weights, top_k
        self.class_names: list[str] | None = None  # the data's, saved in checkpoints
        self._output_width_checked = False
        if num_classes is not None and input_shape is not None:
            self.build_net(num_classes, input_shape)

    def outputs_for(self, datamodule: ProjectDataModule) -> tuple[int | None, str]:
        names = datamodule.class_names
        if not names:
            return None, ""
        if len(names) == 1 and not datamodule.multilabel:
            raise UserError(f"the data has one class ({names[0]}): a classifier needs at least two; "
                            "check the label column (data.num_target_columns) or the class folders")
        what = f"{len(names)} classes ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})"
        if self.multilabel_loss and len(names) == 2 and not datamodule.multilabel:
            return 1, what + " (a binary task: num_classes 1)"  # one logit, the probability of the second class
        return len(names), what

    def build_metrics(self, outputs: int) -> None:
        if self.class_weights is not None and len(self.class_weights) != outputs:
            raise UserError(f"class_weights has {len(self.class_weights)} entries but num_classes is {outputs}")
        self.num_classes = outputs
        if not self.multilabel_loss:
            self.task = "multiclass"
        else:
            self.task = "binary" if outputs == 1 else "multilabel"
        kwargs: dict[str, Any] = {"task": self.task}
        if self.task == "multiclass":
            kwargs["num_classes"] = outputs
        elif self.task == "multilabel":
            kwargs["num_labels"] = outputs
        self.train_metrics = MetricCollection({"acc": Accuracy(**kwargs)}, prefix="train/", compute_groups=False)
        eval_metrics: dict[str, Any] = {"acc": Accuracy(**kwargs), "f1": F1Score(average="macro", **kwargs)}
        if self.task == "multiclass" and outputs > self.top_k > 1:
            eval_metrics[f"top{self.top_k}_acc"] = Accuracy(top_k=self.top_k, **kwargs)
        # No compute groups: torchmetrics would merge top-1 and top-k accuracy whenever their
        # states happen to match after the first batch, and report top-1 for both from then on.
        self.val_metrics = MetricCollection(eval_metrics, prefix="val/", compute_groups=False)
        self.test_metrics = self.val_metrics.clone(prefix="test/")
        self.test_confusion = ConfusionMatrix(**kwargs) if self.task != "multilabel" else None

    def configure_model(self) -> None:
        super().configure_model()
        if (trainer := self.attached_trainer()) is None:
            return
        if isinstance(trainer.datamodule, ProjectDataModule) and trainer.datamodule.class_names:
            self.class_names = list(trainer.datamodule.class_names)
        if trainer.state.fn == TrainerFn.FITTING and (self.mixup_alpha or self.cutmix_alpha):
            self.mix_training_samples(trainer.datamodule)

    def mix_training_samples(self, datamodule: ProjectDataModule) -> None:
        """Have the data module pair training samples, and mix each pair in every training step."""
        if not isinstance(datamodule, ProjectDataModule):
            raise UserError("mixup_alpha and cutmix_alpha pair training samples in the loader: they need a ProjectDataModule")
        shape = datamodule.sample_shape()
        if shape is None or len(shape) != 3:
            raise UserError(f"mixup_alpha and cutmix_alpha mix images (channels x height x width), but one input of this data has "
                            f"shape {'x'.join(map(str, shape or ()))}")
        datamodule.pair_training_samples()
        self.mixing = SampleMixing(self.mixup_alpha, self.cutmix_alpha, self.num_classes)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.mixing is not None:  # each sample, then its partner (pair_training_samples)
            x, target, weights, *_ = batch  # the seeds were used by the data module
            n = len(x) // 2
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) * 1_000_003 + self.global_step
            batch = (*self.mixing(x[:n], x[n:], target[:n], target[n:], seed), weights[:n])
        return super().training_step(batch, batch_idx)

    def evaluate(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self(x)
        if not self._output_width_checked:
            if logits.ndim != 2 or logits.shape[1] != self.num_classes:
                raise UserError(
                    f"the net outputs shape {tuple(logits.shape[1:])} per sample but model.num_classes is "
                    f"{self.num_classes}: a net class takes its number of outputs as its first argument"
                )
            self._output_width_checked = True
        if self.task == "multiclass":  # soft targets (mixed samples): scored against the class with the larger share
            return per_sample(self.loss_fn(logits, target)), logits, target.argmax(-1) if target.is_floating_point() else target
        if self.task == "binary":
            logits = logits.squeeze(-1)
        # Probabilities, not logits: torchmetrics would read logits that all fall in [0, 1] as probabilities.
        return per_sample(self.loss_fn(logits, target.float())), logits.sigmoid(), target.long()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        preds, target = self.evaluation_step(batch, batch_idx, "test", self.test_loss, self.test_metrics)
        if self.test_confusion is not None:
            self.test_confusion.update(preds, target)

    def on_test_epoch_end(self) -> None:
        if self.test_confusion is None:
            return
        matrix = self.test_confusion.compute()
        names = self.class_names or [str(i) for i in range(len(matrix))]
        if self.trainer.is_global_zero:
            picture = report_confusion_matrix(self.test_confusion, matrix, names, run_folder(self.trainer))
            log_picture(self.logger, "test/confusion_matrix", picture)
        self.test_confusion.reset()

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """Return ``pred`` (class index, or multi-hot for multilabel) and ``prob`` per sample of the
        batch's inputs (``batch[0]``); Lightning tracks which rows they are."""
        logits = self(batch[0])
        if self.task == "multiclass":
            prob, pred = logits.softmax(dim=-1).max(dim=-1)
        elif self.task == "binary":
            p1 = logits.squeeze(-1).sigmoid()
            pred = (p1 > 0.5).long()
            prob = torch.where(pred == 1, p1, 1 - p1)
        else:
            probs = logits.sigmoid()
            pred, prob = (probs > 0.5).long(), probs
        return {"pred": pred, "prob": prob}

    def export_outputs(self) -> dict[str, Any]:
        """Logits; softmax (multiclass) or a sigmoid per output (binary: of the second class) make them probabilities."""
        names = self.class_names or [str(i) for i in range(max(2, self.num_classes or 0))]
        return {"task": self.task, "kind": "logits", "class_names": names, "top_k": self.top_k}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["class_names"] = self.class_names

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.class_names = checkpoint.get("class_names")
