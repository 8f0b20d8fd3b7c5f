"""Each shipped recipe keeps its promise on data and seeds it was not tuned on, so a drop fails the
suite. LeNet on the real digits, tested from the checkpoint that `fit` selects, holds up on seeds
chosen once, before any measurement, run by seeds.py, whose summary is checked against the runs'
own metrics files (the suite runs a few of them; docs/results.md has seeds.py over all eleven). The
image-folder and two-layer recipes run with a held-out seed, the image-folder and regression ones
on data generated with another seed than the data they were tuned on. The recipes that need a download (MNIST, Fashion-MNIST, CIFAR-10) or
pretrained weights (the ResNet ones) cannot be measured offline: their tests run them on stand-ins
(test_cli.py) without pinning an accuracy."""

import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import QUIET, REPO, read_csv
from project.tools.cli import ProjectCLI

RECIPE = ["--config", str(REPO / "configs" / "lenet_digits.yaml")]
HELD_OUT_SEEDS = [100, 101]  # of 100-107


def last_value(metrics_csv: Path, column: str) -> float:
    return float([row for row in read_csv(metrics_csv) if row.get(column)][-1][column])


@pytest.mark.slow
def test_seeds_it_was_not_tuned_on_summarized_by_seeds_py_as_their_metrics_files_say(tmp_path):
    run = subprocess.run([sys.executable, str(REPO / "seeds.py"), "--seeds", *map(str, HELD_OUT_SEEDS), *RECIPE, *QUIET],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    folder = tmp_path / "runs" / "seeds" / "lenet_digits" / "version_0"
    summary = {row["metric"]: row for row in read_csv(folder / "summary.csv")}
    per_seed = {int(row["seed"]): row for row in read_csv(folder / "seeds.csv")}
    assert sorted(per_seed) == HELD_OUT_SEEDS

    # The same numbers, read from each seed's own fit and test runs
    own = {"val/acc": [], "test/acc": []}
    for seed in HELD_OUT_SEEDS:
        fit_run, test_run = per_seed[seed]["runs"].split()
        assert fit_run.startswith(str(folder / f"seed_{seed}"))
        own["val/acc"].append(last_value(Path(fit_run) / "metrics.csv", "val/acc"))
        own["test/acc"].append(last_value(Path(test_run) / "metrics.csv", "test/acc"))
    for metric, values in own.items():
        row = summary[metric]
        assert int(row["seeds"]) == len(HELD_OUT_SEEDS)
        for column, expected in (("mean", statistics.fmean(values)), ("std", statistics.stdev(values)),
                                 ("min", min(values)), ("max", max(values))):
            assert math.isclose(float(row[column]), expected, rel_tol=1e-6, abs_tol=1e-9), (metric, column)
    assert f"{len(HELD_OUT_SEEDS)} seeds ({' '.join(map(str, HELD_OUT_SEEDS))})" in run.stdout

    accuracies = own["test/acc"]
    assert sum(accuracy < 0.99 for accuracy in accuracies) <= 1, accuracies
    assert statistics.mean(accuracies) >= 0.993, accuracies


def fit_and_test(args: list[str]) -> dict[str, float]:
    """``fit`` then ``test`` on the checkpoint fit selected, as a user runs them: the test metrics."""
    cli = ProjectCLI(args=["fit", *args, "--seed_everything=100", *QUIET])
    return cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)[0]


@pytest.mark.slow
def test_the_image_folder_recipe_on_digit_folders_it_was_not_tuned_on(tmp_path, monkeypatch):
    """Tuned on make_digit_folders.py's folders of --seed 0 with seeds 0-2; folders of --seed 1 with
    seed 100 read 98.3% (docs/results.md: 98.7% mean, 97.8% min over 8 held-out runs)."""
    monkeypatch.chdir(tmp_path)
    made = subprocess.run([sys.executable, str(REPO / "scripts" / "make_digit_folders.py"), "digits", "--seed", "1"],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    metrics = fit_and_test(["--config", str(REPO / "configs" / "lenet_imagefolder.yaml"), "--data.data_dir=digits"])
    assert metrics["test/acc"] >= 0.965, metrics  # 179 test images: 0.56% each


@pytest.mark.slow
def test_the_two_layer_recipes_on_a_seed_and_data_they_were_not_tuned_on(tmp_path, monkeypatch):
    """Seed 100 read 95.3% (two_layer_digits), 97.2% (two_layer_table on the digits as a CSV) and a
    test MSE of 3.81 against the targets' variance of 12.98 (two_layer_regression on the data of
    make_regression_data.py --seed 1, not the documented --seed 0)."""
    from sklearn.datasets import load_digits

    monkeypatch.chdir(tmp_path)
    digits = load_digits()
    np.savetxt("digits.csv", np.c_[digits.data, digits.target], delimiter=",", fmt="%g")
    made = subprocess.run([sys.executable, str(REPO / "scripts" / "make_regression_data.py"), "regression.pt", "--seed", "1"],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    assert fit_and_test(["--config", str(REPO / "configs" / "two_layer_digits.yaml")])["test/acc"] >= 0.94
    assert fit_and_test(["--config", str(REPO / "configs" / "two_layer_table.yaml"), "--data.path=digits.csv"])["test/acc"] >= 0.95
    targets = torch.load("regression.pt")["y"]
    mse = fit_and_test(["--config", str(REPO / "configs" / "two_layer_regression.yaml"), "--data.path=regression.pt"])["test/mse"]
    assert mse <= 0.4 * float(targets.var(0).mean()), mse  # explains 60% of the variance or more (measured: 71%)
