"""PNG pictures of a run: training curves and a confusion matrix (matplotlib, no display needed)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works with no display, on every rank and in CI
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

Series = dict[str, list[tuple[int, float]]]


def plot_training_curves(series: Series, path: Path, title: str = "") -> Path:
    """Loss (left) and accuracy-like metrics (right) against optimizer step, as in the seeds'
    train/valid plot: per-step training loss as a thin line, epoch values as markers."""
    panels = [("loss", [k for k in series if k.endswith("loss") or k.endswith("loss_step")]),
              ("accuracy", [k for k in series if k.endswith("acc")])]
    panels = [(label, keys) for label, keys in panels if keys]
    figure, axes = plt.subplots(1, max(1, len(panels)), figsize=(6 * max(1, len(panels)), 4), squeeze=False)
    for axis, (label, keys) in zip(axes[0], panels):
        for key in sorted(keys):
            steps, values = zip(*series[key])
            style = {"linewidth": 0.8, "alpha": 0.6} if key.endswith("_step") else {"marker": "o", "markersize": 3}
            axis.plot(steps, values, label=key, **style)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_confusion_matrix(matrix: torch.Tensor, class_names: list[str], path: Path) -> Path:
    """Counts with true classes as rows and predicted classes as columns, each cell labelled."""
    counts = matrix.cpu().numpy()
    size = max(4.0, 0.5 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(counts, cmap="Blues")
    axis.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axis.set_yticks(range(len(class_names)), class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = counts.max() / 2 if counts.size else 0
    for row in range(counts.shape[0]):
        for column in range(counts.shape[1]):
            count = counts[row, column]
            axis.text(column, row, int(count), ha="center", va="center", color="white" if count > threshold else "black")
    accuracy = counts.trace() / max(counts.sum(), 1)
    axis.set_title(f"confusion matrix (accuracy {accuracy:.4f})")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
