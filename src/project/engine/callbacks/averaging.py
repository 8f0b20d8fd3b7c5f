"""Weight averaging (``--weight_averaging EMA`` or ``SWA``): an averaged copy of the net, kept by
torch's ``AveragedModel``, that validation, the best checkpoint, ``test``, ``predict`` and
``export`` use.

After every optimizer step the copy is updated from the weights being trained. Validation swaps it
in and back out; a checkpoint holds it as its ``state_dict`` (what test, predict and export load)
and the weights being trained as ``current_model_state`` (what a resumed fit trains on), with the
average's step count; when training ends the averaged weights stay in the model. This is the
design of Lightning's ``WeightAveraging``, which is not used as is: it deep-copies the whole
LightningModule in ``setup``, trainer and data included, before the module has built its net from
the data and before a float64 run casts it (Lightning 2.6.6). Here only ``module.net`` is copied,
in ``on_fit_start``.

Every parameter of the net is averaged, frozen ones too: the average of a weight that does not
move is that weight, exactly (``lerp(w, w)`` and the running mean of ``w`` both give ``w``), and a
backbone unfrozen later is averaged from then on, as the optimizer sees it. Buffers (BatchNorm's
running statistics) are not averaged: they follow the trained model.
"""

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from project.errors import UserError

CURRENT_WEIGHTS = "current_model_state"  # checkpoint key of the weights being trained (Lightning's name for it)
AVERAGED_STEPS = "averaged_steps"  # checkpoint key: how many steps the average holds


class AveragedWeights(Callback):
    """The averaged copy of the net; subclasses say how it averages and after which steps."""

    def __init__(self) -> None:
        super().__init__()
        self._average: AveragedModel | None = None
        self._updated_at_step = 0  # the trainer's global_step at the last update; 0: none yet
        self._loaded: dict[str, Any] | None = None  # a checkpoint read before the copy existed

    def averaged_model(self, net: torch.nn.Module) -> AveragedModel:
        """A torch ``AveragedModel`` of ``net`` with this kind of average."""
        raise NotImplementedError

    def updates_after(self, trainer: Trainer, step: int) -> bool:
        """Whether to update the average after optimizer step ``step`` (0-based)."""
        raise NotImplementedError

    @property
    def started(self) -> bool:
        """Whether the average holds any step: before that, the weights being trained are used."""
        return self._updated_at_step > 0

    # -- training ------------------------------------------------------------------------------

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # By now the module's setup has built the net from the data, and it is on its device, in its dtype.
        self._average = self.averaged_model(pl_module.net)
        if self._loaded is not None:
            self._load(pl_module, self._loaded)
            self._loaded = None

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        # Once per optimizer step: the batches that only accumulate gradients leave global_step as it was.
        if trainer.global_step > self._updated_at_step and self.updates_after(trainer, trainer.global_step - 1):
            self._average.update_parameters(pl_module.net)
            self._updated_at_step = trainer.global_step

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._swap(pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._swap(pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._average is not None and self.started:
            for average, current in zip(self._average.module.parameters(), pl_module.net.parameters(), strict=True):
                current.data.copy_(average.data)

    def _swap(self, pl_module: LightningModule) -> None:
        if self._average is None or not self.started:
            return
        for average, current in zip(self._average.module.parameters(), pl_module.net.parameters(), strict=True):
            kept = current.data.clone()
            current.data.copy_(average.data)
            average.data.copy_(kept)

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"updated_at_step": self._updated_at_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._updated_at_step = state_dict["updated_at_step"]

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._average is None or not self.started:
            return  # outside fit, or before the first update: state_dict holds the weights to use
        state = checkpoint["state_dict"]
        checkpoint[CURRENT_WEIGHTS] = state
        averaged = {f"net.{name}": p.detach().clone() for name, p in self._average.module.named_parameters()}
        checkpoint["state_dict"] = {**state, **averaged}
        checkpoint[AVERAGED_STEPS] = int(self._average.n_averaged)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn != TrainerFn.FITTING or CURRENT_WEIGHTS not in checkpoint:
            return  # test, predict: state_dict holds the averaged weights, which they use
        if self._average is None:  # read before on_fit_start (the usual order): loaded once the copy exists
            self._loaded = checkpoint
        else:
            self._load(pl_module, checkpoint)

    def _load(self, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        averaged = {name.removeprefix("net."): v for name, v in checkpoint["state_dict"].items() if name.startswith("net.")}
        self._average.module.load_state_dict(averaged)
        self._average.n_averaged.fill_(checkpoint[AVERAGED_STEPS])
        pl_module.load_state_dict(checkpoint[CURRENT_WEIGHTS])


class EMA(AveragedWeights):
    """An exponential moving average of the weights, updated after every optimizer step:
    ``average = decay * average + (1 - decay) * weights``, starting from the weights after the first
    step. Its memory is about ``1 / (1 - decay)`` steps: 0.99 is 100 steps (five epochs of the
    digits recipe), 0.999 suits runs of tens of thousands of steps.

    Args:
        decay: the weight of the average so far in each update, in (0, 1).
        start_step: the first optimizer step (0-based) averaged; until then the weights themselves are used.
    """

    def __init__(self, decay: float = 0.99, start_step: int = 0) -> None:
        if not 0 < decay < 1:
            raise UserError(f"weight_averaging.decay must be in (0, 1) (0.99 is about 100 steps' memory), got {decay}")
        if start_step < 0:
            raise UserError(f"weight_averaging.start_step must be >= 0, got {start_step}")
        super().__init__()
        self.decay, self.start_step = decay, start_step

    def averaged_model(self, net: torch.nn.Module) -> AveragedModel:
        return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(self.decay))

    def updates_after(self, trainer: Trainer, step: int) -> bool:
        return step >= self.start_step


class SWA(AveragedWeights):
    """Stochastic weight averaging: the plain mean of the weights after every optimizer step from
    epoch ``start_epoch`` on, under the run's own lr schedule (no constant SWA rate).

    Args:
        start_epoch: the first averaged epoch (0-based); a float in (0, 1) is a fraction of
            ``trainer.max_epochs`` (0.75: the last quarter).
    """

    def __init__(self, start_epoch: int | float = 0.75) -> None:  # noqa: PYI041  (an int is an epoch, a float a fraction)
        if start_epoch < 0 or (isinstance(start_epoch, float) and start_epoch >= 1):
            raise UserError(f"weight_averaging.start_epoch must be an epoch >= 0 or a fraction in (0, 1), got {start_epoch}")
        super().__init__()
        self.start_epoch = start_epoch

    def first_epoch(self, trainer: Trainer) -> int:
        if isinstance(self.start_epoch, int):
            return self.start_epoch
        if trainer.max_epochs is None or trainer.max_epochs < 1:
            raise UserError("a fractional weight_averaging.start_epoch needs trainer.max_epochs")
        return int(self.start_epoch * trainer.max_epochs)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.first_epoch(trainer)  # a fraction without max_epochs is refused before the first step
        super().on_fit_start(trainer, pl_module)

    def averaged_model(self, net: torch.nn.Module) -> AveragedModel:
        return AveragedModel(net)

    def updates_after(self, trainer: Trainer, step: int) -> bool:
        return trainer.current_epoch >= self.first_epoch(trainer)
