"""``predict`` results as a CSV file, one row per input."""

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from project.engine.loggers import run_folder
from project.files import write_whole
from project.inference.predictions import write_predictions


class PredictionCSVWriter(BasePredictionWriter):
    """Writes ``predict`` results as a CSV: one row per input, in input order.

    Classification rows are ``input, predicted_class, probability`` (the class *name* saved
    in the checkpoint); multilabel rows list every label above 0.5; regression rows are
    ``input, prediction`` or ``input, prediction_0, prediction_1, ...``
    (``project.inference.predictions``, which an exported model's predictions share). ``input`` is the name the data module gives the
    row (``predict_names``: an image path, a row number), else its position in ``predict_set``,
    which Lightning's predict loop tracks beside each batch (``batch_indices``). A labelled split
    (the data module's ``predict_targets``) adds each row's ``target`` (class name, labels or
    values), taken from the batch. Under DDP every rank predicts its own share of the inputs;
    rank 0 gathers them and writes each input once.

    Args:
        output_file: where to write; by default ``predictions.csv`` in the run's log folder.
    """

    def __init__(self, output_file: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output_file = output_file
        self._rows: list[dict[str, Any]] = []

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rows = []

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: dict[str, torch.Tensor],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        targets = batch[1] if trainer.datamodule.predict_targets else None
        self._rows.extend({"index": index, **{key: value[i].tolist() for key, value in prediction.items()},
                           **({"target": targets[i].tolist()} if targets is not None else {})}
                          for i, index in enumerate(batch_indices))

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rows = self._rows
        if trainer.world_size > 1:
            gathered: list[list[dict[str, Any]]] = [[] for _ in range(trainer.world_size)]
            torch.distributed.all_gather_object(gathered, rows)
            rows = [row for rank_rows in gathered for row in rank_rows]
        if not trainer.is_global_zero:
            return
        names, class_names = trainer.datamodule.predict_names, getattr(pl_module, "class_names", None)  # classification only
        path = Path(self.output_file) if self.output_file else run_folder(trainer) / "predictions.csv"
        rows = sorted(rows, key=lambda row: row["index"])
        labels = [names[row["index"]] if row["index"] < len(names) else str(row["index"]) for row in rows]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_whole(path, lambda partial: write_predictions(partial, labels, rows, class_names))
        rank_zero_info(f"Wrote {len(rows)} predictions to {path}")
