"""The README's path from your own data to predictions, through the real command line: fit with no
size flags, then the test and predict commands that fit prints, pasted as they are; and the record
each of those runs leaves."""

import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, make_image_tree, read_csv, train_py, write_png

CLASSES = ("blue", "green", "red")


def image_data(root: Path) -> tuple[list[str], list[str]]:
    """A 3-class image folder and a folder of 4 new images; the fit and predict arguments for them."""
    make_image_tree(root / "mydata", classes=CLASSES, per_class=12)
    for i in range(4):
        write_png(root / "new_images" / f"new{i}.png", i % 2, "RGB", seed=50 + i)
    return (["--config", str(REPO / "configs" / "lenet_imagefolder.yaml"), "--data.data_dir", "mydata", "--trainer.max_epochs=2"],
            ["--data.predict_dir", "new_images"])


def table_class(features: np.ndarray) -> np.ndarray:
    return np.digitize(features[:, 0] - features[:, 1], [-2.0, 2.0])


def table_data(root: Path) -> tuple[list[str], list[str]]:
    """A CSV of 4 feature columns and a class column (3 classes), far from zero so that predict is
    only right with the training statistics from the checkpoint; and 4 new rows without a class,
    well inside their classes."""
    features = np.random.default_rng(0).normal(size=(300, 4)) * 3 + 100
    np.savetxt(root / "table.csv", np.c_[features, table_class(features)], delimiter=",", header="a,b,c,d,class", comments="")
    new = np.array([[91.0, 100, 100, 100], [100, 100, 97, 103], [109, 100, 100, 100], [100, 110, 100, 100]])
    np.savetxt(root / "new.csv", new, delimiter=",", header="a,b,c,d", comments="")
    return (["--config", str(REPO / "configs" / "two_layer_table.yaml"), "--data.path", "table.csv"],
            ["--data.predict_path", "new.csv"])


def printed_command(output: str, after: str) -> list[str]:
    """The command on the line after the line that starts with ``after``."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(after))
    return shlex.split(lines[start + 1])


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, env=os.environ)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.parametrize("make_data", [image_data, table_data], ids=["image folder", "csv table"])
def test_fit_then_the_printed_test_and_predict_commands_run_as_pasted(make_data, tmp_path):
    fit_args, new_inputs = make_data(tmp_path)
    fit = train_py("fit", *fit_args, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    output = fit.stdout + fit.stderr
    for noise in ("💡 Tip", "Total FLOPs", "Modules in train mode", "1 epochs", "Trainer already configured"):
        assert noise not in output

    test_command = printed_command(output, "Test it:")
    assert test_command[0] == sys.executable  # the interpreter that ran fit, not whichever `python` is first on PATH
    test = run(test_command, tmp_path)
    assert "test/acc" in test.stdout

    predict_command = printed_command(output, "Predict the test split")
    run(predict_command, tmp_path)  # the test split
    if make_data is image_data:  # new images need only the checkpoint: class names and sizes come from it
        (tmp_path / "mydata").rename(tmp_path / "moved")
    run([*predict_command, *new_inputs], tmp_path)

    runs = sorted((tmp_path / "runs").glob("*/version_*"))
    assert [r.name for r in runs] == ["version_0", "version_1", "version_2", "version_3"]
    assert sorted(p.name for p in (runs[0] / "checkpoints").iterdir())[-1] == "last.ckpt"
    assert (runs[1] / "confusion_matrix.csv").is_file()
    test_split_rows = read_csv(runs[2] / "predictions.csv")
    new_rows = read_csv(runs[3] / "predictions.csv")
    assert len(new_rows) == 4 and len(test_split_rows) >= 3
    if make_data is image_data:
        assert {row["predicted_class"] for row in new_rows} <= set(CLASSES)
        assert [Path(row["input"]).name for row in new_rows] == [f"new{i}.png" for i in range(4)]
    else:  # right only if predict standardises with the training split's statistics
        expected = table_class(np.loadtxt(tmp_path / "new.csv", delimiter=",", skiprows=1))
        assert [int(row["predicted_class"]) for row in new_rows] == expected.tolist()
    check_records(runs, fit_args, make_data is image_data)


@pytest.mark.slow
def test_a_checkpoint_alone_is_enough_to_test_predict_and_export_with_the_data_moved(tmp_path):
    """The checkpoint holds the model's and the data's arguments; the data's location is overridden
    on the command line; the results go beside the run's own (its logger name)."""
    fit_args, _ = image_data(tmp_path)
    fit = train_py("fit", *fit_args, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "--config" not in printed_command(fit.stdout + fit.stderr, "Test it:")
    best = str(next((tmp_path / "runs" / "lenet_imagefolder" / "version_0" / "checkpoints").glob("best-*.ckpt")))
    with_config = train_py("test", "--config", "runs/lenet_imagefolder/version_0/config.yaml", "--ckpt_path", best, cwd=tmp_path)
    (tmp_path / "mydata").rename(tmp_path / "moved")
    alone = train_py("test", "--ckpt_path", best, "--data.data_dir", "moved", cwd=tmp_path)
    assert with_config.returncode == 0 and alone.returncode == 0, alone.stderr[-3000:]
    metrics = [read_csv(tmp_path / "runs" / "lenet_imagefolder" / f"version_{n}" / "metrics.csv")[-1] for n in (1, 2)]
    assert metrics[0]["test/acc"] == metrics[1]["test/acc"] and metrics[0]["test/loss"] == metrics[1]["test/loss"]
    for subcommand in ("predict", "export"):
        done = train_py(subcommand, "--ckpt_path", best, "--data.data_dir", "moved", cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "runs" / "lenet_imagefolder" / "version_3" / "predictions.csv").is_file()
    assert Path(best).with_suffix(".onnx").is_file()
    missing = train_py("test", "--ckpt_path", best, cwd=tmp_path)  # the data is not where the checkpoint says
    assert missing.returncode == 2 and "mydata" in missing.stderr.strip().splitlines()[-1]


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout


def check_records(runs: list[Path], fit_args: list[str], image_folder: bool) -> None:
    """Each run's record.json: what produced it (command, code, packages, devices, data) and what it gave."""
    fitted, tested, predicted, predicted_new = (json.loads((run / "record.json").read_text()) for run in runs)
    assert fitted["command"] == shlex.join([sys.executable, str(REPO / "train.py"), "fit", *fit_args])
    assert fitted["subcommand"] == "fit" and fitted["launcher"] == "direct" and fitted["seed"] == 0
    assert fitted["git"]["commit"] == git("rev-parse", "HEAD").strip()
    assert fitted["git"]["dirty"] == bool(git("status", "--porcelain").strip())
    if fitted["git"]["changed"]:
        assert (runs[0] / fitted["git"]["diff"]).read_text() == git("diff", "HEAD", "--binary")
    for package in ("torch", "lightning", "torchvision", "torchmetrics"):
        assert fitted["versions"][package] == importlib.metadata.version(package)
    assert fitted["versions"]["python"] == platform.python_version() and fitted["versions"]["cuda_build"] == torch.version.cuda
    assert fitted["devices"] == {"processes": 1, "devices_per_node": 1, "nodes": 1, "accelerator": "CPUAccelerator",
                                 "strategy": "SingleDeviceStrategy", "precision": "32-true", "gpus": [], "driver": None}
    assert fitted["data"]["kind"] == ("file names and sizes" if image_folder else "tensors")
    assert sum(fitted["data"]["samples"].values()) == (36 if image_folder else 300)

    assert fitted["status"] == tested["status"] == "finished"
    best = fitted["results"]["best_checkpoint"]
    assert best == str(next((runs[0] / "checkpoints").glob("best-*.ckpt")).resolve())
    last_epoch = [row for row in read_csv(runs[0] / "metrics.csv") if row.get("val/acc")][-1]
    assert fitted["results"]["metrics"]["val/acc"] == pytest.approx(float(last_epoch["val/acc"]), abs=1e-7)
    assert tested["results"]["checkpoint"] == best
    assert tested["results"]["metrics"]["test/acc"] == pytest.approx(float(read_csv(runs[1] / "metrics.csv")[-1]["test/acc"]), abs=1e-7)
    assert tested["data"] == predicted["data"] == fitted["data"]  # the same data, the same fingerprint
    assert predicted_new["data"]["sha256"] != fitted["data"]["sha256"]  # new inputs


def test_sizes_and_standardisation_come_back_from_the_checkpoint(tmp_path):
    """The class count and input shape are hyperparameters, so load_from_checkpoint rebuilds the net."""
    from lightning.pytorch import Trainer

    from project.datamodules import LoaderOptions, TensorDataModule
    from project.lightning_modules import ClassificationModule
    from project.nets import TwoLayerNet

    features = np.random.default_rng(0).normal(size=(60, 5)) + 50
    np.savetxt(tmp_path / "table.csv", np.c_[features, np.arange(60) % 3], delimiter=",")
    data = TensorDataModule(dataset=None, path=str(tmp_path / "table.csv"), standardize=True,
                            loader=LoaderOptions(batch_size=16))
    module = ClassificationModule(TwoLayerNet)
    trainer = Trainer(max_epochs=1, logger=False, default_root_dir=tmp_path, enable_progress_bar=False,
                      enable_model_summary=False)
    trainer.fit(module, datamodule=data)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    restored = ClassificationModule.load_from_checkpoint(path, net=TwoLayerNet)
    assert restored.hparams["num_classes"] == 3 and restored.hparams["input_shape"] == [5]
    assert torch.equal(restored.net.linear1.weight, module.net.linear1.weight)
    np.savetxt(tmp_path / "new.csv", features[:3], delimiter=",")
    new = TensorDataModule(dataset=None, path="unused.csv", predict_path=str(tmp_path / "new.csv"), standardize=True)
    trainer.predict(restored, datamodule=new, ckpt_path=path)
    assert torch.equal(new.mean, data.mean) and torch.equal(new.std, data.std)


def test_a_column_constant_in_training_is_left_unscaled_so_new_rows_where_it_differs_are_still_read(tmp_path, monkeypatch):
    """Divided by its ~0 training std, a column that is constant in the training file (a flag that is
    always 0) would turn a 1 in new rows into ~1e8 and decide every prediction alone."""
    from sklearn.datasets import load_digits

    from project.__main__ import main

    monkeypatch.chdir(tmp_path)
    digits = load_digits()
    flag = np.zeros((len(digits.target), 1))
    np.savetxt("digits.csv", np.c_[digits.data, flag, digits.target], delimiter=",")
    np.savetxt("new.csv", np.c_[digits.data[:200], flag[:200] + 1], delimiter=",")
    config = ["--config", str(REPO / "configs" / "two_layer_table.yaml"), "--data.path=digits.csv", "--trainer.max_epochs=3",
              "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    with pytest.warns(UserWarning, match=r"4 input column\(s\) constant in the training split, left unscaled \(centred only\): 0, 32, 39, 64$"):
        main(["fit", *config])
    run = tmp_path / "runs" / "two_layer_table"
    assert float([r for r in read_csv(run / "version_0" / "metrics.csv") if r["val/loss"]][-1]["val/loss"]) < 1.0
    main(["predict", *config, f"--ckpt_path={run / 'version_0' / 'checkpoints' / 'last.ckpt'}", "--data.predict_path=new.csv"])
    rows = read_csv(run / "version_1" / "predictions.csv")
    right = np.mean([int(r["predicted_class"]) == t for r, t in zip(rows, digits.target[:200])])
    assert right > 0.85 and len({r["predicted_class"] for r in rows}) == 10, right


@pytest.mark.slow
def test_python_m_project_runs_the_cli_and_prints_commands_that_name_it(tmp_path):
    """``python -m project`` is ``train.py``; what fit prints to run next names ``-m project`` and runs when pasted."""
    import project

    assert project.__version__ and project.__version__ != "0+unknown"  # the installed package's version
    fit = subprocess.run([sys.executable, "-m", "project", "fit", "--config", str(REPO / "configs" / "two_layer_digits.yaml"),
                          "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert fit.returncode == 0, fit.stderr
    lines = (fit.stdout + fit.stderr).splitlines()
    test_command = shlex.split(lines[lines.index("Test it:") + 1])
    assert test_command[:3] == [sys.executable, "-m", "project"]
    test = subprocess.run(test_command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert test.returncode == 0, test.stderr
    tested = [row for row in read_csv(tmp_path / "runs" / "two_layer_digits" / "version_1" / "metrics.csv") if row.get("test/acc")]
    assert float(tested[-1]["test/acc"]) > 0.5  # one epoch of the digits: far above chance (0.1)
