"""Fine-tuning a pretrained backbone: freeze it, unfreeze it later at a lower rate, or cache its features."""

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, TensorDataset

from project.engine.internals import BatchNormBase
from project.engine.schedules import with_schedule
from project.engine.sizing import NetFactory
from project.errors import UserError
from project.lightning_modules.classification import ClassificationModule
from project.nets import BackboneAndHead

BACKBONE_TRAINABLE = "backbone_trainable"  # checkpoint key: whether the backbone was training when it was saved


class FineTuningModule(ClassificationModule):
    """Classification with a net that has a pretrained ``backbone`` and a new ``head``
    (a ``project.nets.BackboneAndHead``, such as ``project.nets.TorchvisionClassifier``).

    Lightning's ``BackboneFinetuning`` is not used: it adds the unfrozen backbone as a new parameter
    group mid-run, which DDP then never averages (Lightning issue #20340) and schedulers never see.
    Here the backbone's group exists from the start and its gradients are averaged by hand.

    Args:
        freeze_backbone: train only the head. Done when the net is built, before DDP wraps it, so
            the backbone's parameters neither require gradients nor reach DDP's gradient buckets.
        train_bn: let the backbone's BatchNorm layers use batch statistics and update their running
            statistics while the backbone trains. Off: they stay in eval mode throughout (frozen
            statistics), the usual choice for small fine-tuning sets.
        unfreeze_at_epoch: from this epoch on, train the backbone too.
        backbone_lr_scale: the backbone's learning rate as a fraction of the head's (its own
            parameter group; the lr schedule scales both groups alike).
        cache_features: with a frozen backbone and inputs that do not change between epochs,
            run the backbone once over the training and validation sets and train the head on
            the stored features. ``test`` and ``predict`` still run the whole net.
        Other arguments: as for ``ClassificationModule``.
    """

    def __init__(
        self,
        net: NetFactory,
        freeze_backbone: bool = True,
        train_bn: bool = False,
        unfreeze_at_epoch: int | None = None,
        backbone_lr_scale: float = 0.1,
        cache_features: bool = False,
        **kwargs: Any,
    ) -> None:
        if unfreeze_at_epoch is not None and (not freeze_backbone or unfreeze_at_epoch < 1):
            raise UserError("unfreeze_at_epoch needs freeze_backbone: true and an epoch >= 1")
        if not 0 < backbone_lr_scale <= 1:
            raise UserError(f"backbone_lr_scale must be in (0, 1], got {backbone_lr_scale}")
        if cache_features and (not freeze_backbone or unfreeze_at_epoch is not None):
            raise UserError("cache_features needs a backbone that stays frozen: set freeze_backbone: true and unfreeze_at_epoch: null")
        if cache_features and (kwargs.get("mixup_alpha") or kwargs.get("cutmix_alpha")):
            raise UserError("cache_features trains on stored features, which cannot be mixed as images: set cache_features: false for mixup/cutmix")
        self.freeze_backbone = freeze_backbone
        self.train_bn = train_bn
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.backbone_lr_scale = backbone_lr_scale
        self.cache_features = cache_features
        self._feature_batches = False
        self._checkpoint_backbone_trainable = False
        self._live_datasets: tuple[Dataset | None, Dataset | None] = (None, None)
        super().__init__(net, **kwargs)  # builds the net now if the class count is given

    def build_net(self, outputs: int, input_shape: Sequence[int]) -> None:
        super().build_net(outputs, input_shape)
        if not isinstance(self.net, BackboneAndHead):
            raise UserError(f"fine-tuning needs a net with a backbone and a head, a project.nets.BackboneAndHead "
                            f"(e.g. project.nets.TorchvisionClassifier), got {type(self.net).__name__}")
        self._set_backbone_trainable(not self.freeze_backbone)

    @property
    def backbone_trainable(self) -> bool:
        return any(p.requires_grad for p in self.net.backbone.parameters())

    def _set_backbone_trainable(self, trainable: bool) -> None:
        self.net.backbone.requires_grad_(trainable)
        self.train(self.training)  # puts the BatchNorm layers in the mode that goes with it

    def train(self, mode: bool = True) -> "FineTuningModule":
        """Lightning calls this at every switch between training and evaluation; frozen BatchNorm
        layers go back to eval mode each time, so their running statistics never move."""
        super().train(mode)
        if mode and self.net is not None and not (self.train_bn and self.backbone_trainable):
            for module in self.net.backbone.modules():
                if isinstance(module, BatchNormBase):
                    module.eval()
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # The checkpoint holds every weight, so the net that test, predict or a resumed fit rebuilds
        # from its hyperparameters needs no pretrained file (and no download).
        net = checkpoint["hyper_parameters"].get("net")
        if isinstance(net, dict) and isinstance(net.get("init_args"), dict):
            pretrained = {key: None for key in ("weights", "weights_path") if key in net["init_args"]}
            checkpoint["hyper_parameters"]["net"] = {**net, "init_args": {**net["init_args"], **pretrained}}
        checkpoint[BACKBONE_TRAINABLE] = self.backbone_trainable

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._checkpoint_backbone_trainable = bool(checkpoint.get(BACKBONE_TRAINABLE, False))
        if self._feature_batches:
            # A resumed fit: the features cached in configure_model came from the backbone as built, and
            # Lightning loads the checkpoint's only after setup. Cached again from the checkpoint's.
            backbone = {k.removeprefix("net.backbone."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.backbone.")}
            self.net.backbone.load_state_dict(backbone)
            self._use_live_datasets()
            self._cache_training_features()

    def on_train_start(self) -> None:
        # A run resumed mid-epoch does not call on_train_epoch_start for that epoch (Lightning 2.6), so
        # the freezing state comes from the checkpoint here; the lr groups come with the optimizer's
        # state. Here and not on load: DDP has wrapped the net by now and, as in a run that was not
        # interrupted, the backbone's gradients are averaged by on_before_optimizer_step.
        if self._checkpoint_backbone_trainable and not self.backbone_trainable:
            self._set_backbone_trainable(True)
            rank_zero_info(f"epoch {self.current_epoch}: backbone trainable, as the checkpoint left it")

    # -- optimisation -------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        """Head in the first group at the configured lr; with an unfreeze scheduled, the backbone in a
        second group at ``lr * backbone_lr_scale`` from the start (it has no gradients, so no
        updates, until it is unfrozen), which keeps every scheduler's view of the groups fixed."""
        if self.unfreeze_at_epoch is None:
            return super().configure_optimizers()
        head = [p for n, p in self.named_parameters() if not n.startswith("net.backbone.")]
        optimizer = self.optimizer_factory(head)
        base_lr = optimizer.param_groups[0]["lr"]
        optimizer.add_param_group({"params": list(self.net.backbone.parameters()), "lr": base_lr * self.backbone_lr_scale})
        return with_schedule(optimizer, self.lr_schedule, self.trainer)

    def on_train_epoch_start(self) -> None:
        if self.unfreeze_at_epoch is not None and self.current_epoch >= self.unfreeze_at_epoch and not self.backbone_trainable:
            self._set_backbone_trainable(True)
            lr = self.trainer.optimizers[0].param_groups[1]["lr"]
            rank_zero_info(f"epoch {self.current_epoch}: backbone unfrozen, lr {lr:.3g} (x{self.backbone_lr_scale} of the head's)")

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # DDP only all-reduces parameters that required gradients when it wrapped the model; a
        # backbone unfrozen later is averaged here, once per optimizer step, to keep ranks equal.
        if self.trainer.world_size > 1 and self.unfreeze_at_epoch is not None and self.backbone_trainable:
            grads = [p.grad for p in self.net.backbone.parameters() if p.grad is not None]
            if grads:
                flat = torch.cat([g.reshape(-1) for g in grads])
                dist.all_reduce(flat)
                flat /= self.trainer.world_size
                offset = 0
                for g in grads:
                    g.copy_(flat[offset : offset + g.numel()].view_as(g))
                    offset += g.numel()

    # -- cached features ----------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.head(x) if self._feature_batches else super().forward(x)

    def configure_model(self) -> None:
        super().configure_model()
        trainer = self.attached_trainer()
        if trainer is not None and trainer.state.fn == TrainerFn.FITTING and self.cache_features and not self._feature_batches:
            self._cache_training_features()

    def _cache_training_features(self) -> None:
        """Swap the data module's train and val sets for backbone features. Runs in ``configure_model``,
        before Lightning builds the loaders (it does so early, to count the steps for the lr schedule)."""
        datamodule = self.trainer.datamodule
        reason = datamodule.random_training_inputs()
        if reason:
            raise UserError(f"cache_features needs the same training inputs every epoch, but the data has {reason}")
        self._live_datasets = (datamodule.train_set, datamodule.val_set)
        self.net.backbone.to(self.trainer.strategy.root_device)  # Lightning moves the rest next
        datamodule.train_set = self._features(datamodule.train_set, datamodule.batch_size_per_device())
        if datamodule.val_set is not None:
            datamodule.val_set = self._features(datamodule.val_set, datamodule.batch_size_per_device())
        self._feature_batches = True

    def on_fit_end(self) -> None:
        if self._feature_batches:
            self._use_live_datasets()

    def _use_live_datasets(self) -> None:
        self.trainer.datamodule.train_set, self.trainer.datamodule.val_set = self._live_datasets
        self._feature_batches = False

    @torch.no_grad()
    def _features(self, dataset: Dataset, batch_size: int) -> TensorDataset:
        """Backbone outputs and targets of every sample, in dataset order (so samplers index them alike)."""
        was_training = self.net.backbone.training
        self.net.backbone.eval()
        features, targets = [], []
        with torch.device("cpu"):  # where the loader makes its tensors: configure_model runs on the training device
            for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                features.append(self.net.backbone(x.to(self.device)).cpu())
                targets.append(torch.as_tensor(y))
        self.net.backbone.train(was_training)
        return TensorDataset(torch.cat(features), torch.cat(targets))
