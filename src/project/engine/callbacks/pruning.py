"""Reports each epoch's validation metric to an Optuna trial; stops the run when the study prunes it."""

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn


class OptunaPruning(Callback):
    """``search.py`` adds this to the ``fit`` of each trial (a separate ``train.py`` process).

    After every validation it reports ``monitor`` at that epoch to trial ``trial_number`` of the
    study, and when the study's pruner says so the run stops at the end of the epoch, as an
    ordinary run: its checkpoints, metrics and record are all there. ``search.py`` then marks the
    trial pruned, and takes its score and best checkpoint from the run's ``record.json``.
    (Optuna's own Lightning callback raises ``TrialPruned`` inside ``fit`` instead, which would end
    the run as a crash.) Only rank 0 talks to the study; under DDP it tells the others.

    Rerunning a finished trial's ``config.yaml`` reports nothing (a warning says so); ``test`` and
    ``predict`` never open the study.
    """

    def __init__(self, storage: str, study_name: str, trial_number: int, monitor: str,
                 pruner: str, startup_trials: int, warmup_epochs: int) -> None:
        super().__init__()
        self.storage, self.study_name, self.trial_number, self.monitor = storage, study_name, trial_number, monitor
        self.pruner = (pruner, startup_trials, warmup_epochs)
        self.trial = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        from project.engine.study import open_trial  # Optuna only where a search uses it

        self.trial = open_trial(self.storage, self.study_name, self.trial_number, *self.pruner)
        if self.trial is None:
            rank_zero_warn(f"trial {self.trial_number} of study {self.study_name!r} is finished: this run reports nothing to it")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        value = trainer.callback_metrics.get(self.monitor)
        if self.trial is not None and value is not None:
            self.trial.report(float(value), step=trainer.current_epoch)
            prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune, src=0):
            trainer.should_stop = True
            rank_zero_info(f"pruned by the search after epoch {trainer.current_epoch} ({self.monitor} {float(value):.4f})")
            if self.trial is not None:
                self.trial.set_user_attr("pruned_at_epoch", trainer.current_epoch)
