"""The default recipe keeps its promise: LeNet on the real digits, tested from the checkpoint that
`fit` selects, reaches >= 99.0% test accuracy on a seed it was tuned on, and holds up on seeds it
was never tuned on (chosen once, before any measurement), run by seeds.py, whose summary is checked
against the runs' own metrics files. The suite runs a few seeds of each group; the README's table
is seeds.py over all eleven."""

import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import QUIET, REPO, read_csv
from project.tools.cli import ProjectCLI

RECIPE = ["--config", str(REPO / "configs" / "lenet_digits.yaml")]
TUNED_SEEDS = [0]  # of 0, 1, 2
HELD_OUT_SEEDS = [100, 101, 102]  # of 100-107


@pytest.mark.slow
@pytest.mark.parametrize("seed", TUNED_SEEDS)
def test_lenet_digits_reaches_99_percent_test_accuracy(seed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = ProjectCLI(args=["fit", *RECIPE, f"--seed_everything={seed}", *QUIET])
    assert len(cli.datamodule.test_set) == 359
    assert cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)[0]["test/acc"] >= 0.99


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
        assert int(row["seeds"]) == 3
        for column, expected in (("mean", statistics.fmean(values)), ("std", statistics.stdev(values)),
                                 ("min", min(values)), ("max", max(values))):
            assert math.isclose(float(row[column]), expected, rel_tol=1e-6, abs_tol=1e-9), (metric, column)
    assert f"3 seeds ({' '.join(map(str, HELD_OUT_SEEDS))})" in run.stdout

    accuracies = own["test/acc"]
    assert sum(accuracy < 0.99 for accuracy in accuracies) <= 1, accuracies
    assert statistics.mean(accuracies) >= 0.993, accuracies
