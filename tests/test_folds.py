"""K-fold cross-validation in the data modules: ``--data.folds K --data.fold I``."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import QUIET, REPO, make_image_tree, read_csv, write_png
from project.datamodules import ImageFolderDataModule, ImageTransforms, LoaderOptions, TensorDataModule
from project.errors import UserError

K = 5


def digits_fold(fold: int, **options) -> TensorDataModule:
    data = TensorDataModule(dataset="digits", val_fraction=0.0, folds=K, fold=fold, **options)
    data.setup("fit")
    return data


def test_the_folds_of_the_digits_partition_every_sample_outside_the_test_split_stratified_by_class():
    modules = [digits_fold(i) for i in range(K)]
    test = modules[0].test_set.indices
    assert all(m.test_set.indices == test for m in modules)  # the test split is held out, the same for every fold
    plain = TensorDataModule(dataset="digits")  # and the same as without folds (val_fraction 0.1)
    plain.setup("fit")
    assert sorted(plain.test_set.indices) == sorted(test)
    validation = [set(m.val_set.indices) for m in modules]
    outside_test = set(range(1797)) - set(test)
    assert set().union(*validation) == outside_test and sum(map(len, validation)) == len(outside_test)  # each once
    for m, held_out in zip(modules, validation, strict=True):
        assert set(m.train_set.indices) == outside_test - held_out
    targets = modules[0].train_set.dataset.tensors[1]
    per_class = Counter(targets[sorted(outside_test)].tolist())
    for held_out in validation:
        counts = Counter(targets[sorted(held_out)].tolist())
        assert all(abs(counts[c] - n / K) < 1 for c, n in per_class.items()), counts


def test_the_folds_follow_the_fold_seed_alone(monkeypatch):
    first = digits_fold(2).val_set.indices
    monkeypatch.setenv("PL_GLOBAL_SEED", "123")  # another training seed
    assert digits_fold(2).val_set.indices == first
    for rank in (0, 1):  # either rank of 2 DDP processes

        class TwoRanks:
            world_size, global_rank, accumulate_grad_batches = 2, rank, 1

        data = TensorDataModule(dataset="digits", val_fraction=0.0, folds=K, fold=2)
        data.trainer = TwoRanks()  # type: ignore[assignment]
        data.setup("fit")
        assert data.val_set.indices == first
    assert digits_fold(2, fold_seed=1).val_set.indices != first


def test_a_checkpoint_and_the_record_say_which_fold_validated(tmp_path, monkeypatch):
    from project.__main__ import main

    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--trainer.max_epochs=1", "--data.val_fraction=0",
          "--data.folds=5", "--data.fold=3", "--data.fold_seed=7", *QUIET])
    run = tmp_path / "runs" / "two_layer_digits" / "version_0"
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["TensorDataModule"]
    fold = state["validation_fold"]
    assert (fold["folds"], fold["fold"], fold["seed"]) == (5, 3, 7)
    assert sorted(fold["validation"]) == digits_fold(3, fold_seed=7).val_set.indices
    recorded = json.loads((run / "record.json").read_text())["data"]["fold"]
    assert recorded["fold"] == 3 and recorded["validation_samples"] == len(fold["validation"])


def test_image_folds_keep_each_group_in_one_fold_and_refuse_a_fixed_validation_folder(tmp_path):
    for label, name in enumerate(("cat", "dog")):
        for group in range(6):
            for i in range(3):
                write_png(tmp_path / "pets" / name / f"owner{group}" / f"{i}.png", label, "RGB", seed=group * 10 + i)
    seen = {}
    for fold in range(3):
        data = ImageFolderDataModule(data_dir=str(tmp_path / "pets"), transforms=ImageTransforms(image_size=12), val_fraction=0.0,
                                     test_fraction=0.0, folds=3, fold=fold, fold_group_level=1, loader=LoaderOptions(batch_size=4))
        data.setup("fit")
        for path, _ in data.split_samples["val"]:
            seen.setdefault(path.rsplit("/", 1)[0], set()).add(fold)
    assert len(seen) == 12 and all(len(folds) == 1 for folds in seen.values())  # every owner's images in one fold
    make_image_tree(tmp_path / "split" / "train")
    make_image_tree(tmp_path / "split" / "val", per_class=4)
    data = ImageFolderDataModule(data_dir=str(tmp_path / "split"), val_fraction=0.0, folds=3)
    with pytest.raises(UserError, match=r"val/ is a validation split of its own: move its files into the class folders"):
        data.setup("fit")


@pytest.mark.parametrize(("options", "says"), [
    ({"folds": 1}, "data.folds must be 2 or more"),
    ({"folds": 5, "fold": 5}, "data.fold must be one of 0..4 for data.folds 5, got 5"),
    ({"fold": 2}, "data.fold 2 needs data.folds K"),
    ({"folds": 5, "val_fraction": 0.1}, "data.folds makes fold 0 the validation split, so data.val_fraction 0.1 would cut a second one: "
                                        "add --data.val_fraction 0"),
])
def test_fold_options_that_cannot_make_folds_are_refused_in_one_line(options, says):
    with pytest.raises(UserError, match=says.replace(".", r"\.")):
        TensorDataModule(dataset="digits", **{"val_fraction": 0.0, **options})


def test_more_folds_than_a_class_or_the_groups_hold_is_refused(tmp_path):
    iris = TensorDataModule(dataset="iris", val_fraction=0.0, test_fraction=0.9, folds=6)  # 15 samples: 5 a class at most
    with pytest.raises(UserError, match=r"data.folds 6 is more than the \d sample\(s\) of class \w+ outside the test split"):
        iris.setup("fit")
    make_image_tree(tmp_path / "pets", per_class=6)  # no group folders below the classes
    flat = ImageFolderDataModule(data_dir=str(tmp_path / "pets"), val_fraction=0.0, folds=2, fold_group_level=1)
    with pytest.raises(UserError, match=r"data.fold_group_level 1 needs each image 1 folder\(s\) below its class folder"):
        flat.setup("fit")


@pytest.mark.slow
def test_cross_validation_goes_on_after_sigkill_and_in_slurm_array_tasks_without_rerunning_a_finished_fold(tmp_path):
    """seeds.py --folds 3 is killed once fold 0 has finished; an array task of scripts/cv.sbatch then
    runs fold 2 alone in the same folder, and seeds.py --resume runs fold 1, reads the others and
    sums up all three as their own metrics files say, with the out-of-fold predictions (every
    sample outside the test split once) and the fold ensemble's test accuracy."""
    import math
    import os
    import signal
    import statistics
    import subprocess
    import sys
    import time

    options = ["--folds", "3", "--seeds", "0", "--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--trainer.max_epochs=2",
               f"--trainer.default_root_dir={tmp_path / 'runs'}", *QUIET]
    seeds_py = [sys.executable, str(REPO / "seeds.py"), "--resume", "--name", "cv-7", *options]
    folder = tmp_path / "runs" / "seeds" / "cv-7" / "version_0"
    first = subprocess.Popen(seeds_py, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (folder / "fold_1" / "seed_0").is_dir():  # fold 0 fit and tested, fold 1 started
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read() if first.stdout else ""
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    fold_0 = sorted(str(p) for p in (folder / "fold_0").rglob("record.json"))
    assert len(fold_0) == 3  # its fit, test and validation fold's predictions

    slurm = {"SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "2", "SLURM_SUBMIT_DIR": str(REPO)}
    task = subprocess.run(["bash", str(REPO / "scripts" / "cv.sbatch"), *options], env={**os.environ, **slurm},
                          capture_output=True, text=True, timeout=600)
    assert task.returncode == 0, task.stdout + task.stderr
    assert "1 seeds (0) x 1 folds (2)" in task.stdout and not list((folder / "fold_1").rglob("record.json"))

    def still_training(home: Path) -> bool:  # the killed runner's fit got SIGTERM with its parent's death
        marker = f"--trainer.default_root_dir={home}".encode()
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if marker in cmdline.read_bytes():
                    return True
            except OSError:  # the process ended meanwhile
                continue
        return False

    while still_training(folder / "fold_1" / "seed_0") and time.monotonic() < deadline:
        time.sleep(0.5)
    again = subprocess.run(seeds_py, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted(str(p) for p in (folder / "fold_0").rglob("record.json")) == fold_0  # not run again
    assert "1 seeds (0) x 3 folds (0 1 2)" in again.stdout

    per_run = read_csv(folder / "seeds.csv")
    assert [row["fold"] for row in per_run] == ["0", "1", "2", "all"]
    recorded = [json.loads((Path(row["runs"].split()[0]) / "record.json").read_text())["data"]["fold"] for row in per_run[:3]]
    assert [fold["fold"] for fold in recorded] == [0, 1, 2] and {fold["folds"] for fold in recorded} == {3}
    accuracies = []
    for row in per_run[:3]:  # the summary is the runs' own metrics: the last epoch's validation accuracy
        fit_run = Path(row["runs"].split()[0])
        accuracies.append(float([r for r in read_csv(fit_run / "metrics.csv") if r.get("val/acc")][-1]["val/acc"]))
        assert float(row["val/acc"]) == pytest.approx(accuracies[-1], abs=1e-6)
    summary = {row["metric"]: row for row in read_csv(folder / "summary.csv")}
    assert float(summary["val/acc"]["mean"]) == pytest.approx(statistics.fmean(accuracies), abs=1e-6)
    assert math.isclose(float(summary["val/acc"]["std"]), statistics.stdev(accuracies), abs_tol=1e-6)
    per_fold = [row for row in read_csv(folder / "folds.csv") if row["metric"] == "val/acc"]
    assert [float(row["mean"]) for row in per_fold] == pytest.approx(accuracies, abs=1e-6)

    predicted = read_csv(folder / "oof_predictions.csv")  # each sample outside the test split once, by the fold that validated on it
    test = TensorDataModule(dataset="digits", val_fraction=0.0, folds=3)
    test.setup("fit")
    assert sorted(int(row["input"].split()[1]) for row in predicted) == sorted(set(range(1797)) - set(test.test_set.indices))
    names = test.class_names
    for fold, row in enumerate(per_run[:3]):  # what each fold's best checkpoint scored on its validation fold, when fit saved it
        right = [p["predicted_class"] == p["target"] for p in predicted if p["fold"] == str(fold)]
        assert sum(right) / len(right) == pytest.approx(float(row["val/acc (best checkpoint)"]), abs=1e-6)
        assert {p["target"] for p in predicted if p["fold"] == str(fold)} == set(names)
    every = [p["predicted_class"] == p["target"] for p in predicted]
    assert float(summary["oof/acc"]["mean"]) == pytest.approx(sum(every) / len(every), abs=1e-6)  # torchmetrics, in float32
    assert (folder / "oof_confusion_matrix.png").is_file() and len(read_csv(folder / "oof_confusion_matrix.csv")) == 10
    ensemble = json.loads((folder / "ensemble_seed_0" / "ensemble.json").read_text())["ensemble"]
    assert float(summary["fold ensemble test/acc"]["mean"]) == pytest.approx(ensemble["test"]["accuracy"], abs=1e-9)
    assert per_run[3]["fold"] == "all" and "fold ensemble of seed 0, to serve:" in again.stdout


def test_the_runs_of_one_seeds_py_folder_share_a_w_and_b_group_unless_the_config_names_one():
    from project.tools.cli import parse_fit_arguments
    from project.tools.seeds import wandb_group

    recipe = ["--config", str(REPO / "configs" / "lenet_digits.yaml")]
    folder = Path("runs/seeds/lenet_digits/version_3")
    wandb = [*recipe, "--config", str(REPO / "configs" / "logger" / "wandb.yaml")]
    assert wandb_group(parse_fit_arguments(wandb), folder) == ["--trainer.logger.init_args.group=lenet_digits-version_3"]
    assert wandb_group(parse_fit_arguments([*wandb, "--trainer.logger.init_args.group=mine"]), folder) == []
    assert wandb_group(parse_fit_arguments(recipe), folder) == []  # the CSV logger has no groups


# -- out-of-fold predictions -----------------------------------------------------------------------


def test_predict_split_val_labels_the_validation_fold_with_its_targets():
    data = TensorDataModule(dataset="digits", val_fraction=0.0, folds=K, fold=1, predict_split="val")
    data.setup("predict")
    assert data.predict_set is data.val_set and data.predict_targets
    assert data.predict_names == [f"row {i}" for i in data.val_set.indices]
    test = TensorDataModule(dataset="digits")
    test.setup("predict")
    assert test.predict_set is test.test_set and test.predict_targets  # the default: the test split, labelled too


@pytest.mark.parametrize(("make", "says"), [
    (lambda: TensorDataModule(dataset="digits", predict_split="train"), "data.predict_split takes test or val"),
    (lambda: TensorDataModule(dataset="digits", predict_split="val", predict_path="new.csv"),
     "data.predict_split val labels the validation split, and data.predict_path names new inputs: give one of the two"),
    (lambda: ImageFolderDataModule(data_dir="pets", predict_split="val", predict_dir="new"),
     "data.predict_split val labels the validation split, and data.predict_dir names new inputs"),
])
def test_a_predict_split_that_cannot_be_predicted_is_refused_in_one_line(make, says):
    with pytest.raises(UserError, match=says.replace(".", r"\.")):
        make()


def test_an_empty_validation_split_is_refused_before_predict_labels_nothing():
    data = TensorDataModule(dataset="digits", val_fraction=0.0, predict_split="val")
    data.setup("predict")
    with pytest.raises(UserError, match=r"the validation split is empty: nothing to predict \(data.predict_split val\)"):
        data.predict_dataloader()


@pytest.mark.parametrize(("row", "header", "cells"), [
    ({"pred": 2, "prob": 0.9, "target": 1}, ["input", "predicted_class", "probability", "target"], ["c", "0.9000", "b"]),
    ({"pred": [1, 0, 1], "prob": [0.9, 0.1, 0.6], "target": [1, 1, 0]}, ["input", "predicted_labels", "probabilities", "target_labels"],
     ["a;c", "0.9000;0.1000;0.6000", "a;b"]),
    ({"pred": [1.5, 2.0], "target": [1.0, 2.5]}, ["input", "prediction_0", "prediction_1", "target_0", "target_1"], [1.5, 2.0, 1.0, 2.5]),
    ({"pred": 2, "prob": 0.9}, ["input", "predicted_class", "probability"], ["c", "0.9000"]),  # new inputs: no target
])
def test_predictions_of_a_labelled_split_show_each_target_in_the_form_of_the_prediction(row, header, cells):
    from project.inference.predictions import csv_cells, csv_header

    assert csv_header([row]) == header and csv_cells(row, ["a", "b", "c"]) == cells


def write_fold_predictions(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.write_text("input,predicted_class,probability,target\n" + "".join(f"{n},{p},0.9,{t}\n" for n, p, t in rows))
    return path


def test_out_of_fold_scores_are_torchmetrics_and_a_sample_in_two_folds_is_refused(tmp_path):
    from project.tools.folds import FoldRun, out_of_fold_rows, scores

    first = write_fold_predictions(tmp_path / "0.csv", [("row 1", "cat", "cat"), ("row 2", "dog", "cat")])
    second = write_fold_predictions(tmp_path / "1.csv", [("row 3", "dog", "dog"), ("row 4", "dog", "dog")])
    runs = [FoldRun(0, Path("c"), Path("k"), 2, first), FoldRun(1, Path("c"), Path("k"), 2, second)]
    header, rows = out_of_fold_rows(7, runs)
    assert header[:3] == ["seed", "fold", "input"] and [row[:3] for row in rows][2] == ["7", "1", "row 3"]
    metrics, (confusion, names) = scores(header, rows, ["cat", "dog"])
    assert metrics["oof/acc"] == pytest.approx(0.75)
    assert metrics["oof/f1"] == pytest.approx((2 / 3 + 0.8) / 2)  # cat: P 1, R 1/2; dog: P 2/3, R 1
    assert confusion.compute().tolist() == [[1, 1], [0, 2]] and names == ["cat", "dog"]
    write_fold_predictions(second, [("row 2", "dog", "cat"), ("row 4", "dog", "dog")])
    with pytest.raises(UserError, match="seed 7: 1 samples are in more than one validation fold"):
        out_of_fold_rows(7, runs)
    runs[1].validation_samples = 3
    with pytest.raises(UserError, match="holds 2 predictions, but fold 1 validates on 3 samples"):
        out_of_fold_rows(7, runs)


# -- the fold ensemble ---------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel", "regression"])
def test_the_ensemble_outputs_read_as_one_models_give_the_mean_of_the_members_probabilities(task):
    from project.inference.predictions import probabilities
    from project.tools.export import combined

    outputs = torch.randn(3, 5, 4) * 6  # 3 members, 5 inputs, 4 outputs (confident ones too)
    together = combined(outputs, task).numpy()
    if task == "regression":
        assert np.allclose(together, outputs.mean(0).numpy())
    else:
        members = np.mean([probabilities(member.numpy(), task) for member in outputs], axis=0)
        assert np.allclose(probabilities(together, task), members, atol=1e-6)


@pytest.mark.slow
def test_the_fold_ensemble_export_is_the_fold_models_averaged_and_serves_unchanged(tmp_path, monkeypatch, capsys):
    """Three folds of the digits table model (standardized: each fold's statistics differ), exported
    as one graph: its probabilities are the mean of the three checkpoints' (``load_predictor``, the
    data module's path), ``predict_onnx.py`` and ``serve.py`` read it as any export; bad members are
    refused in one line."""
    import subprocess
    import sys
    import urllib.request

    from sklearn.datasets import load_digits

    from project.__main__ import main
    from project.inference.model import ExportedModel
    from project.tools.predictor import load_predictor

    monkeypatch.chdir(tmp_path)
    checkpoints = []
    for fold in range(3):
        main(["fit", "--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--trainer.max_epochs=1", "--data.val_fraction=0",
              "--data.folds=3", f"--data.fold={fold}", f"--trainer.logger.init_args.name=fold_{fold}", *QUIET])
        checkpoints.append(next((tmp_path / "runs" / f"fold_{fold}" / "version_0" / "checkpoints").glob("best-*.ckpt")))
    config = tmp_path / "runs" / "fold_0" / "version_0" / "config.yaml"
    export = ["export", "--config", str(config), "--ckpt_path", str(checkpoints[0]), *QUIET]
    main([*export, "--ensemble", json.dumps([str(c) for c in checkpoints[1:]]), "--output", "ensemble"])

    description = json.loads((tmp_path / "ensemble" / "ensemble.json").read_text())
    means = [steps["mean"] for steps in description["preprocessing"]["in_graph"]]
    assert len(means) == 3 and means[0] != means[1]  # each member behind its own fold's standardization
    assert [m["validation_fold"]["fold"] for m in description["ensemble"]["members"]] == [0, 1, 2]
    rows = (load_digits().data[:40] / 16.0).astype(np.float32)
    np.savetxt(tmp_path / "rows.csv", rows, delimiter=",", fmt="%.6f")
    rows = np.loadtxt(tmp_path / "rows.csv", delimiter=",", dtype=np.float32)
    test = TensorDataModule(dataset="digits", val_fraction=0.0, folds=3)  # the test split, the same for every fold
    test.setup("fit")
    raw, targets = test.raw_inputs[test.test_set.indices].numpy(), test.test_set.tensors[1].numpy()
    members = [load_predictor(c).probabilities(np.concatenate([rows, raw])) for c in checkpoints]
    averaged, on_test = np.mean(members, axis=0)[: len(rows)], np.mean(members, axis=0)[len(rows) :]
    ensemble = ExportedModel(tmp_path / "ensemble" / "ensemble.onnx")
    assert np.abs(ensemble.probabilities(rows) - averaged).max() < 1e-5
    right = on_test.argmax(1) == targets
    assert description["ensemble"]["test"] == {"accuracy": pytest.approx(right.mean(), abs=1e-9), "samples": len(targets)}

    done = subprocess.run([sys.executable, str(REPO / "predict_onnx.py"), "ensemble/ensemble.onnx", "rows.csv", "--output", "p.csv"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [int(row["predicted_class"]) for row in read_csv(tmp_path / "p.csv")] == averaged.argmax(1).tolist()
    server = subprocess.Popen([sys.executable, str(REPO / "serve.py"), "ensemble/ensemble.onnx", "--port", "0"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert "Serving" in line, server.stderr.read()
        request = urllib.request.Request(line.split(" at ")[1].split()[0] + "/predict", method="POST",
                                         data=json.dumps({"inputs": rows[:3].tolist()}).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            served = json.loads(answer.read())["predictions"]
        assert [p["probability"] for p in served] == pytest.approx(averaged[:3].max(1), abs=1e-5)
    finally:
        server.terminate()
        server.wait(timeout=30)

    main(["fit", "--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--trainer.max_epochs=1", "--model.net.init_args.hidden=16",
          "--trainer.logger.init_args.name=smaller", *QUIET])
    smaller = next((tmp_path / "runs" / "smaller" / "version_0" / "checkpoints").glob("best-*.ckpt"))
    capsys.readouterr()
    for members, more, says in (([smaller], [], f"error: --ensemble {smaller} is not a checkpoint of the model of --ckpt_path: "),
                                ([checkpoints[1], checkpoints[1]], [], "error: --ensemble names a checkpoint twice"),
                                ([checkpoints[1]], ["--quantize", "int8"], "error: --quantize int8 takes one checkpoint, not an --ensemble")):
        with pytest.raises(SystemExit) as stop:
            main([*export, "--ensemble", json.dumps([str(c) for c in members]), *more, "--output", "refused"])
        error = capsys.readouterr().err.strip()
        assert stop.value.code == 2 and error.startswith(says) and "\n" not in error, error
        assert not (tmp_path / "refused").exists()


def test_out_of_fold_scores_of_multilabel_and_regression_rows():
    from project.tools.folds import scores

    labels = ["seed", "fold", "input", "predicted_labels", "probabilities", "target_labels"]
    rows = [["0", "0", "row 1", "a;b", "0.9;0.8", "a;b"], ["0", "1", "row 2", "a", "0.9;0.1", "b"]]
    metrics, matrix = scores(labels, rows, ["a", "b"])
    assert metrics["oof/acc"] == pytest.approx(0.5) and matrix is None  # label-wise, averaged over the labels: a 1/2, b 1/2
    values = ["seed", "fold", "input", "prediction_0", "prediction_1", "target_0", "target_1"]
    metrics, matrix = scores(values, [["0", "0", "row 1", "1.0", "2.0", "1.5", "2.0"], ["0", "1", "row 2", "0.0", "0.0", "0.0", "-1.0"]], None)
    assert metrics == {"oof/mse": pytest.approx((0.25 + 1) / 4), "oof/mae": pytest.approx(1.5 / 4)} and matrix is None
