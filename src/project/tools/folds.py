"""What the k fold runs of one seed give together (``seeds.py --folds K``): the out-of-fold
predictions, their scores and confusion matrix, and the fold ensemble.

Each fold's best checkpoint predicts its own validation fold (``train.py predict
--data.predict_split val``), the samples it did not train on; the folds' predictions together
label every sample outside the test split once. The K checkpoints then export as one graph
(``train.py export --ensemble``), scored on the test split.
"""

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from project.engine.paths import train_command
from project.errors import UserError
from project.files import write_whole

PREDICTIONS = "oof_predictions.csv"
CONFUSION = "oof_confusion_matrix"  # .csv and .png
ENSEMBLE_METRIC = "fold ensemble test/"  # + the ensemble's test metric (acc, mse): a summary row beside the folds' test/acc


@dataclass
class FoldRun:
    """What one fold's runs left: the fit's config and best checkpoint, how many samples it
    validated on, and its predictions of them."""

    fold: int
    config: Path
    checkpoint: Path
    validation_samples: int
    predictions: Path


def ensemble_command(runs: list[FoldRun], output: Path) -> list[str]:
    """The export of the folds' checkpoints as one graph, in ``output``."""
    return train_command("export", ["--config", str(runs[0].config), "--ckpt_path", str(runs[0].checkpoint),
                                    "--ensemble", json.dumps([str(run.checkpoint) for run in runs[1:]]), "--output", str(output)])


def ensemble_scores(output: Path) -> dict[str, float] | None:
    """The test-split scores an earlier ensemble export in ``output`` wrote, or ``None``."""
    description = output / "ensemble.json"
    if not (output / "ensemble.onnx").is_file() or not description.is_file():
        return None
    scores = json.loads(description.read_text())["ensemble"]["test"]
    return {("acc" if name == "accuracy" else name): value for name, value in scores.items() if name != "samples"}


def out_of_fold_rows(seed: int, runs: list[FoldRun]) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` of the folds' validation predictions, a row per sample with its seed and
    fold; refused when a fold's predictions are not its validation samples, or a sample is in two."""
    header: list[str] = []
    rows: list[list[str]] = []
    for run in runs:
        with run.predictions.open(newline="") as file:
            reader = csv.reader(file)
            header = next(reader)
            predicted = [[str(seed), str(run.fold), *row] for row in reader]
        if len(predicted) != run.validation_samples:
            raise UserError(f"{run.predictions} holds {len(predicted)} predictions, but fold {run.fold} validates on "
                            f"{run.validation_samples} samples: remove that predict run's folder and run seeds.py --resume again")
        rows += predicted
    if len(names := {row[2] for row in rows}) != len(rows):
        raise UserError(f"seed {seed}: {len(rows) - len(names)} samples are in more than one validation fold: were the folds' "
                        "runs made with different data or fold settings? run them again in a new folder")
    return ["seed", "fold", *header], rows


def scores(header: list[str], rows: list[list[str]], class_names: list[str] | None) -> tuple[dict[str, float], Any]:
    """``oof/acc`` and ``oof/f1`` (torchmetrics; F1 averaged over the classes or labels, as a
    multiclass or multilabel model's ``val/f1`` is: a binary model's ``val/f1`` is the second
    class's alone) or, for regression, ``oof/mse`` and ``oof/mae``; and the confusion matrix
    metric with the class names (single-label classification) or ``None``."""
    import torch
    from torchmetrics import ConfusionMatrix
    from torchmetrics.functional import accuracy, f1_score

    column = {name: i for i, name in enumerate(header)}
    if "predicted_class" in column:
        names = class_names or sorted({row[column[c]] for row in rows for c in ("target", "predicted_class")})
        index = {name: i for i, name in enumerate(names)}
        preds = torch.tensor([index[row[column["predicted_class"]]] for row in rows])
        target = torch.tensor([index[row[column["target"]]] for row in rows])
        kwargs: dict[str, Any] = {"task": "multiclass", "num_classes": len(names)}
        confusion = ConfusionMatrix(**kwargs)
        confusion.update(preds, target)
        return {"oof/acc": float(accuracy(preds, target, average="micro", **kwargs)),
                "oof/f1": float(f1_score(preds, target, average="macro", **kwargs))}, (confusion, names)
    if "predicted_labels" in column:
        names = class_names or sorted({label for row in rows for c in ("target_labels", "predicted_labels")
                                       for label in row[column[c]].split(";") if label})

        def multi_hot(cell: str) -> list[int]:
            chosen = set(cell.split(";"))
            return [int(name in chosen) for name in names]

        preds = torch.tensor([multi_hot(row[column["predicted_labels"]]) for row in rows])
        target = torch.tensor([multi_hot(row[column["target_labels"]]) for row in rows])
        kwargs = {"task": "multilabel", "num_labels": len(names)}
        return {"oof/acc": float(accuracy(preds, target, **kwargs)), "oof/f1": float(f1_score(preds, target, average="macro", **kwargs))}, None
    predicted = [i for name, i in column.items() if name.startswith("prediction")]
    targets = [i for name, i in column.items() if name.startswith("target")]
    preds = torch.tensor([[float(row[i]) for i in predicted] for row in rows], dtype=torch.float64)
    target = torch.tensor([[float(row[i]) for i in targets] for row in rows], dtype=torch.float64)
    return {"oof/mse": float(((preds - target) ** 2).mean()), "oof/mae": float((preds - target).abs().mean())}, None


def write_out_of_fold(folder: Path, per_seed: list[tuple[int, list[FoldRun]]]) -> dict[int, dict[str, float]]:
    """``oof_predictions.csv`` (every seed's), the out-of-fold scores of each seed, and the confusion
    matrix of all seeds' predictions together (``oof_confusion_matrix.csv``, ``.png``)."""
    from project.engine.checkpoint_io import read_checkpoint
    from project.engine.reports import report_confusion_matrix

    header: list[str] = []
    every: list[list[str]] = []
    metrics = {}
    class_names = read_checkpoint(per_seed[0][1][0].checkpoint).get("class_names")  # the data's, in every fold and seed
    for seed, runs in per_seed:
        header, rows = out_of_fold_rows(seed, runs)
        metrics[seed], _ = scores(header, rows, class_names)
        every += rows

    def write_rows(partial: Path) -> None:
        with partial.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(header)
            writer.writerows(every)

    write_whole(folder / PREDICTIONS, write_rows)
    _, matrix = scores(header, every, class_names)
    if matrix is not None:
        confusion, names = matrix
        seeds = len(per_seed)
        report_confusion_matrix(confusion, confusion.compute(), names, folder, stem=CONFUSION,
                                title=f"Out-of-fold confusion matrix{f' ({seeds} seeds together)' if seeds > 1 else ''}")
    return metrics
