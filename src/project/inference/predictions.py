"""Predictions from a net's outputs, and ``predictions.csv``: one format for ``train.py predict`` and an exported model.

A row is ``{"pred": ..., "prob": ...}`` per input: for multiclass the class index and its
probability; for binary the class (0/1) and its probability; for multilabel a 0/1 flag and a
probability per label; for regression ``pred`` alone, the outputs. A row of a labelled split also
has ``target``, in the form of ``pred``.
"""

import csv
from pathlib import Path
from typing import Any

import numpy as np

TASKS = ("multiclass", "binary", "multilabel", "regression")


def probabilities(logits: np.ndarray, task: str) -> np.ndarray:
    """Softmax over the classes (multiclass) or a sigmoid per output (binary, multilabel)."""
    logits = logits.astype(np.float64)
    if task == "multiclass":
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    return 1 / (1 + np.exp(-logits))


def prediction_rows(outputs: np.ndarray, task: str) -> list[dict[str, Any]]:
    """The rows ``predict_step`` of the training modules gives, from a batch of net outputs."""
    if task == "regression":
        return [{"pred": row.tolist()} for row in outputs.reshape(len(outputs), -1)]
    probs = probabilities(outputs, task)
    if task == "multiclass":
        return [{"pred": int(p.argmax()), "prob": float(p.max())} for p in probs]
    if task == "binary":
        return [{"pred": int(p[0] > 0.5), "prob": float(p[0] if p[0] > 0.5 else 1 - p[0])} for p in probs]
    return [{"pred": (p > 0.5).astype(int).tolist(), "prob": p.tolist()} for p in probs]


def predicted_classes(outputs: np.ndarray, task: str) -> np.ndarray:
    """The class of each row (multiclass), or its 0/1 flags (binary, multilabel); None for regression."""
    if task == "multiclass":
        return outputs.argmax(axis=1)
    return (outputs > 0).astype(int) if task != "regression" else None


def csv_header(rows: list[dict[str, Any]]) -> list[str]:
    if rows and "prob" not in rows[0]:
        width = len(rows[0]["pred"]) if isinstance(rows[0]["pred"], list) else 1
        names = ["prediction"] if width == 1 else [f"prediction_{i}" for i in range(width)]
        targets = [name.replace("prediction", "target") for name in names]
    elif rows and isinstance(rows[0]["pred"], list):
        names, targets = ["predicted_labels", "probabilities"], ["target_labels"]
    else:
        names, targets = ["predicted_class", "probability"], ["target"]
    return ["input", *names, *(targets if rows and "target" in rows[0] else [])]


def csv_cells(row: dict[str, Any], class_names: list[str] | None) -> list[Any]:
    def name(index: int) -> str:
        return class_names[index] if class_names and index < len(class_names) else str(index)

    def flagged(flags: list[int]) -> str:
        return ";".join(name(i) for i, flag in enumerate(flags) if flag)

    if "prob" not in row:
        cells = row["pred"] if isinstance(row["pred"], list) else [row["pred"]]
        targets = (row["target"] if isinstance(row["target"], list) else [row["target"]]) if "target" in row else []
    elif isinstance(row["pred"], list):  # multilabel: a 0/1 flag per label
        cells = [flagged(row["pred"]), ";".join(f"{p:.4f}" for p in row["prob"])]
        targets = [flagged(row["target"])] if "target" in row else []
    else:
        cells = [name(row["pred"]), f"{row['prob']:.4f}"]
        targets = [name(int(row["target"]))] if "target" in row else []
    return [*cells, *targets]


def write_predictions(path: Path, names: list[str], rows: list[dict[str, Any]], class_names: list[str] | None) -> None:
    """``predictions.csv``: a header, then ``input`` (the row's name) and its prediction cells."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(csv_header(rows))
        for label, row in zip(names, rows):
            writer.writerow([label, *csv_cells(row, class_names)])
