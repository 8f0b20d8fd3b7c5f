"""``record.json`` in every run folder: what produced the run (``engine.provenance``) and what it gave."""

import json
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from project.engine.loggers import run_folder
from project.engine.paths import REPOSITORY
from project.engine.provenance import run_record, unused_name
from project.errors import UserError
from project.files import write_whole


class RunRecord(Callback):
    """Writes ``record.json`` when a run starts (after the data is read) and adds its results at the
    end: the command, git commit and diff, package versions, processes and devices, and a data
    fingerprint (see ``project.engine.provenance``); then ``status`` and ``results``: the last epoch's metrics,
    the best checkpoint and its score for ``fit``, the test metrics for ``test``. Under W&B the
    record is also the run config's ``record`` entry. Only rank 0 writes. A run continued in the
    folder of an earlier one (W&B resuming its run) adds ``record_resumed_N.json``.
    """

    def __init__(self, filename: str = "record.json") -> None:
        super().__init__()
        self.filename = filename
        self.path: Path | None = None
        self.record: dict[str, Any] = {}

    @rank_zero_only
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        folder = run_folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = unused_name(folder, self.filename)
        stage = str(getattr(stage, "value", stage))  # Lightning passes its TrainerFn enum: "fit", "test", ...
        self.record = {**run_record(REPOSITORY, folder, trainer, trainer.datamodule, stage), "status": "running", "results": None}
        self._write()
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.config.update({"record": self.record}, allow_val_change=True)

    @rank_zero_only
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        score = getattr(checkpoint, "best_model_score", None)
        self._finish({
            "metrics": scalar_metrics(trainer),
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            "best_checkpoint": absolute(getattr(checkpoint, "best_model_path", None)),
            "monitor": getattr(checkpoint, "monitor", None),
            "best_score": float(score) if score is not None else None,
        })

    @rank_zero_only
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish({"metrics": scalar_metrics(trainer), "checkpoint": absolute(trainer.ckpt_path)})

    @rank_zero_only
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._finish({"metrics": scalar_metrics(trainer), "checkpoint": absolute(trainer.ckpt_path)})

    @rank_zero_only
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish({"checkpoint": absolute(trainer.ckpt_path)})

    @rank_zero_only
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if self.path is not None:
            self.record["status"] = f"stopped: {type(exception).__name__}: {exception}"
            try:
                self._write()
            except UserError:  # the disk that stopped the run may refuse this too: the run's own error is the one to say
                pass

    def _finish(self, results: dict[str, Any]) -> None:
        if self.path is not None:
            self.record["status"], self.record["results"] = "finished", results
            self._write()

    def _write(self) -> None:
        assert self.path is not None
        text = json.dumps(self.record, indent=2) + "\n"
        write_whole(self.path, lambda partial: partial.write_text(text))


def scalar_metrics(trainer: Trainer) -> dict[str, float]:
    """The metrics of the last epoch (or of the test), as Lightning holds them for callbacks."""
    return {key: float(value) for key, value in sorted(trainer.callback_metrics.items())
            if value.numel() == 1 and not key.endswith("_step")}


def absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None
