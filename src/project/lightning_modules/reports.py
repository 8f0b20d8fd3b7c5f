"""Human-readable reports written at the end of a stage."""

import csv
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from project.plots import plot_confusion_matrix


def report_confusion_matrix(matrix: torch.Tensor, class_names: list[str], log_dir: str | None) -> Path | None:
    """Print the confusion matrix (rows: true class, columns: predicted) and save it in ``log_dir``
    as ``confusion_matrix.csv`` and ``confusion_matrix.png``; return the PNG's path."""
    counts = matrix.long().tolist()
    table = Table(title="Test confusion matrix (rows: true, columns: predicted)")
    table.add_column("true \\ pred")
    for name in class_names:
        table.add_column(name, justify="right")
    for name, row in zip(class_names, counts):
        table.add_row(name, *(str(c) for c in row))
    Console().print(table)
    if log_dir is None:
        return None
    path = Path(log_dir) / "confusion_matrix.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ pred", *class_names])
        for name, row in zip(class_names, counts):
            writer.writerow([name, *row])
    return plot_confusion_matrix(matrix, class_names, path.with_suffix(".png"))
