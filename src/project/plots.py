"""Training curves as a PNG picture (matplotlib, no display needed)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works with no display, on every rank and in CI
import matplotlib.pyplot as plt  # noqa: E402

Series = dict[str, list[tuple[int, float]]]


def plot_training_curves(series: Series, path: Path, title: str = "") -> Path:
    """Loss (left) and accuracy-like metrics (right) against optimizer step: per-step training loss
    as a thin line, epoch values as markers."""
    panels = [("loss", [k for k in series if k.endswith("loss") or k.endswith("loss_step")]),
              ("accuracy", [k for k in series if k.endswith("acc")])]
    panels = [(label, keys) for label, keys in panels if keys]
    figure, axes = plt.subplots(1, max(1, len(panels)), figsize=(6 * max(1, len(panels)), 4), squeeze=False)
    for axis, (label, keys) in zip(axes[0], panels):
        for key in sorted(keys):
            steps, values = zip(*series[key])
            # Step values get a small marker too: a series of one point would otherwise draw nothing
            # and leave an empty entry in the legend.
            style = {"linewidth": 0.8, "alpha": 0.6, "marker": ".", "markersize": 2} if key.endswith("_step") else {"marker": "o", "markersize": 3}
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
