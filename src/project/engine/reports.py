"""Human-readable reports written at the end of a stage."""

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works with no display, on every rank and in CI
import torch  # noqa: E402
from lightning.pytorch.utilities import rank_zero_info  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from torchmetrics import ConfusionMatrix  # noqa: E402

from project.files import write_figure, write_whole  # noqa: E402


def report_confusion_matrix(metric: ConfusionMatrix, matrix: torch.Tensor, class_names: list[str], folder: Path,
                            stem: str = "confusion_matrix", title: str = "Test confusion matrix") -> Path:
    """Print the confusion matrix (rows: true class, columns: predicted) and save it in ``folder`` as
    ``<stem>.csv`` and, drawn by torchmetrics, ``<stem>.png``; return the PNG's path."""
    counts = matrix.long().tolist()
    table = Table(title=f"{title} (rows: true, columns: predicted)")
    table.add_column("true \\ pred")
    for name in class_names:
        table.add_column(name, justify="right")
    for name, row in zip(class_names, counts):
        table.add_row(name, *(str(c) for c in row))
    Console().print(table)
    folder.mkdir(parents=True, exist_ok=True)

    def write_table(partial: Path) -> None:
        with partial.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["true \\ pred", *class_names])
            for name, row in zip(class_names, counts):
                writer.writerow([name, *row])

    write_whole(folder / f"{stem}.csv", write_table)
    figure, axis = metric.plot(val=matrix, labels=class_names)  # the computed matrix: no second sync
    accuracy = matrix.trace().item() / max(matrix.sum().item(), 1)
    axis.set_title(f"{title[0].lower()}{title[1:]} (accuracy {accuracy:.4f})")
    path = folder / f"{stem}.png"
    write_figure(figure, path, dpi=100, bbox_inches="tight")
    rank_zero_info(f"Wrote the confusion matrix to {folder / f'{stem}.csv'} and {path}")
    return path
