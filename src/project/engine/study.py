"""The Optuna study behind ``search.py``: its storage, its pruner, and a trial opened from the
``train.py`` process that runs it (``callbacks.OptunaPruning``)."""

import warnings

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import Trial, TrialState

SQLITE_LOCK_WAIT_S = 60  # workers sharing one SQLite file wait this long for each other's writes


def open_storage(url: str) -> RDBStorage:
    """The study's database. A worker that dies mid-trial stops sending heartbeats; the next worker
    to start a trial marks that trial failed and queues its parameters again."""
    # Optuna calls its heartbeat options experimental; they are how a dead worker's trial is retried.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    connect = {"connect_args": {"timeout": SQLITE_LOCK_WAIT_S}} if url.startswith("sqlite") else None
    return RDBStorage(url, engine_kwargs=connect, heartbeat_interval=60, grace_period=180,
                      heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))


def make_pruner(kind: str, startup_trials: int, warmup_epochs: int) -> optuna.pruners.BasePruner:
    """``median``: stop a trial whose metric after an epoch is worse than the median of the finished
    trials at that epoch, once ``startup_trials`` have finished and after ``warmup_epochs`` epochs."""
    if kind == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)


def open_trial(storage: str, study_name: str, number: int, pruner: str, startup_trials: int, warmup_epochs: int) -> Trial | None:
    """Trial ``number`` of the study, for the ``train.py`` process that runs it; None once it is finished."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rdb = open_storage(storage)
    study = optuna.load_study(study_name=study_name, storage=rdb, pruner=make_pruner(pruner, startup_trials, warmup_epochs))
    trial_id = rdb.get_trial_id_from_study_id_trial_number(rdb.get_study_id_from_name(study_name), number)
    if rdb.get_trial(trial_id).state != TrialState.RUNNING:
        return None
    return Trial(study, trial_id)  # as Optuna's own integrations do for a trial run in another process
