"""What a user sees and keeps: offline W&B runs read back from their records, plots, the CSV
columns, plain console output without a terminal, the logger configs and the run record."""

import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import QUIET, REPO, read_csv, train_py
from project.engine import loggers
from wandb_records import config as wandb_config
from wandb_records import history

RECIPE = ["--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--trainer.accelerator=cpu"]
WANDB = ["--config", str(REPO / "configs" / "logger" / "wandb.yaml")]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def no_wandb_key(tmp_path, monkeypatch):
    """No API key anywhere W&B looks (environment, ~/.netrc), no mode chosen by the user."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.width > 100 and image.height > 100


def wandb_run_files(root: Path) -> list[Path]:
    return sorted(root.glob("runs/wandb/offline-run-*/run-*.wandb"))


@pytest.mark.slow
def test_offline_wandb_run_holds_metrics_config_and_pictures_and_resumes_the_same_run(no_wandb_key, tmp_path):
    fit = train_py("fit", *RECIPE, *WANDB, "--trainer.max_epochs=2", "--model.optimizer.init_args.lr=0.04",
                   *QUIET, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    output = fit.stdout + fit.stderr
    assert output.count("W&B: offline (no W&B API key") == 1
    [sync] = [line for line in output.splitlines() if "wandb sync" in line]  # once, not again by wandb itself
    assert f"{sys.executable} -m wandb sync runs/wandb/offline-run-" in sync  # runs as pasted: no bare `wandb`
    assert "\x1b[" not in output  # no colour codes where there is no terminal

    [record_file] = wandb_run_files(tmp_path)
    run_id = record_file.stem.removeprefix("run-")
    run = tmp_path / "runs" / "lightning-template" / run_id  # the run's own folder
    assert (run / "config.yaml").is_file()
    assert_png(run / "training_curves.png")

    rows = history(record_file)
    val_acc = [row["val/acc"] for row in rows if "val/acc" in row]
    assert len(val_acc) == 2  # one per epoch
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    assert max(val_acc) == pytest.approx(float(best.stem.split("val_acc=")[1]), abs=1e-4)
    assert any("train/loss_step" in row for row in rows)
    [curves] = [row["fit/training_curves"] for row in rows if "fit/training_curves" in row]
    assert curves["_type"] == "images/separated" and curves["format"] == "png"
    resolved = wandb_config(record_file)
    assert resolved["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.04
    assert resolved["trainer"]["max_epochs"] == 2 and resolved["data"]["class_path"].endswith("TensorDataModule")
    # the run record (record.json in the run folder) is in the W&B run config too
    assert resolved["record"] == json.loads((run / "record.json").read_text()) | {"status": "running", "results": None}
    assert "--model.optimizer.init_args.lr=0.04" in resolved["record"]["command"]

    resumed = train_py("fit", *RECIPE, *WANDB, "--trainer.max_epochs=3", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                       "--model.optimizer.init_args.lr=0.04", *QUIET, cwd=tmp_path)  # the recipe's 0.05 would be refused
    assert resumed.returncode == 0, resumed.stderr
    assert {f.stem for f in wandb_run_files(tmp_path)} == {f"run-{run_id}"}  # the same W&B run, continued

    test = train_py("test", *RECIPE, *WANDB, f"--ckpt_path={best}", *QUIET, cwd=tmp_path)
    assert test.returncode == 0, test.stderr
    test_files = [f for f in wandb_run_files(tmp_path) if f.stem != f"run-{run_id}"]
    assert len(test_files) == 1
    assert any(row.get("test/confusion_matrix", {}).get("format") == "png" for row in history(test_files[0]))
    assert any("test/acc" in row for row in history(test_files[0]))
    assert_png(tmp_path / "runs" / "lightning-template" / test_files[0].stem.removeprefix("run-") / "confusion_matrix.png")


@pytest.mark.xdist_group("several_processes")
@pytest.mark.slow
def test_wandb_under_two_ddp_processes_makes_exactly_one_run(no_wandb_key, tmp_path):
    fit = train_py("fit", *RECIPE, *WANDB, "--trainer.max_epochs=1", "--trainer.devices=2", "--trainer.strategy=ddp",
                   *QUIET, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    assert len(wandb_run_files(tmp_path)) == 1
    assert len(list((tmp_path / "runs" / "lightning-template").iterdir())) == 1
    [run] = (tmp_path / "runs" / "lightning-template").iterdir()
    assert_png(run / "training_curves.png")


def test_a_key_without_a_network_goes_offline(no_wandb_key, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    assert loggers.offline_reason() == "127.0.0.1 is not reachable"


def test_no_key_goes_offline_and_a_mode_the_user_set_wins(no_wandb_key, monkeypatch, tmp_path):
    assert loggers.offline_reason().startswith("no W&B API key")
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert loggers.has_api_key("https://api.wandb.ai")
    monkeypatch.setenv("WANDB_MODE", "online")
    assert loggers.offline_reason() is None


@pytest.mark.slow
def test_csv_run_without_a_terminal_has_plain_epoch_lines_documented_columns_and_plots(tmp_path):
    fit = train_py("fit", *RECIPE, "--trainer.max_epochs=2", cwd=tmp_path)  # stdout is a pipe here
    assert fit.returncode == 0, fit.stderr
    output = fit.stdout + fit.stderr
    # counted from 0 like the checkpoint names, with the count of epochs beside it
    assert re.search(r"^epoch 0 \(1 of 2\)  .*train/loss \S+.*val/acc \S+.*\(\d+\.\d s\)$", output, re.MULTILINE)
    assert re.search(r"^epoch 1 \(2 of 2\) ", output, re.MULTILINE)
    assert "\r" not in output  # no live progress bar redrawing lines
    assert "Final metrics" in fit.stdout and "val/acc" in fit.stdout

    run = tmp_path / "runs" / "two_layer_digits" / "version_0"
    columns = set(read_csv(run / "metrics.csv")[0])
    assert columns == {
        "epoch", "step", "lr-SGD", "train/loss_step", "train/loss", "train/acc", "val/loss", "val/acc", "val/f1",
        "val/top3_acc", "train/time", "train/batches", "train/samples", "train/device/batches_per_sec",
        "train/device/samples_per_sec",  # the last five from Lightning's ThroughputMonitor
    }
    assert_png(run / "training_curves.png")


def test_a_config_without_a_logger_logs_to_csv(tmp_path):
    recipe = yaml.safe_load((REPO / "configs" / "two_layer_digits.yaml").read_text())
    del recipe["trainer"]["logger"]
    (tmp_path / "no_logger.yaml").write_text(yaml.safe_dump(recipe))
    printed = train_py("fit", "--config", str(tmp_path / "no_logger.yaml"), "--print_config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout)["trainer"]["logger"]["class_path"] == "project.engine.loggers.CSVLogger"
    stacked = train_py("fit", "--config", str(tmp_path / "no_logger.yaml"), "--config",
                       str(REPO / "configs" / "logger" / "csv.yaml"), "--print_config", cwd=tmp_path)
    # the overlay changes the logger, not where its runs go: the base config's run name stays
    assert yaml.safe_load(stacked.stdout)["trainer"]["logger"]["init_args"] | {"name": "run", "save_dir": "runs"} == \
        yaml.safe_load(stacked.stdout)["trainer"]["logger"]["init_args"]


@pytest.mark.slow
def test_tensorboard_config_writes_event_files(tmp_path):
    fit = train_py("fit", *RECIPE, "--config", str(REPO / "configs" / "logger" / "tensorboard.yaml"),
                   "--trainer.max_epochs=1", *QUIET, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    run = tmp_path / "runs" / "two_layer_digits" / "version_0"  # the recipe's run name, under any logger
    assert list(run.glob("events.out.tfevents.*")) and (run / "config.yaml").is_file()


def test_runs_started_at_the_same_moment_get_folders_of_their_own(tmp_path):
    from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger

    from project.engine.loggers import CSVLogger, TensorBoardLogger

    # Lightning lists the folder and creates version_N only when it first writes: two runs that
    # start together both take version_0.
    assert [LightningCSVLogger(tmp_path / "lightning", name="x").version for _ in range(2)] == [0, 0]
    loggers = [CSVLogger(tmp_path / "ours", name="x"), CSVLogger(tmp_path / "ours", name="x"),
               TensorBoardLogger(tmp_path / "ours", name="x")]
    assert [logger.version for logger in loggers] == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "ours" / "x").iterdir()) == ["version_0", "version_1", "version_2"]
    assert CSVLogger(tmp_path / "ours", name="x", version="named").version == "named"
