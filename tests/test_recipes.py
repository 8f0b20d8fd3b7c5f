"""The default recipe keeps its promise: LeNet on the real digits reaches >= 99.0% test accuracy on every seed."""

import pytest

from conftest import REPO
from project.cli import ProjectCLI


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lenet_digits_reaches_99_percent_test_accuracy(seed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = ProjectCLI(args=["fit", "--config", str(REPO / "configs" / "lenet_digits.yaml"), f"--seed_everything={seed}",
                           "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    result = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False)[0]
    assert len(cli.datamodule.test_set) == 359
    assert result["test/acc"] >= 0.99
