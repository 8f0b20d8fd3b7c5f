"""K-fold cross-validation in the data modules: ``--data.folds K --data.fold I``."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from conftest import QUIET, REPO, make_image_tree, write_png
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


def read_rows(path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_cross_validation_goes_on_after_sigkill_and_in_slurm_array_tasks_without_rerunning_a_finished_fold(tmp_path):
    """seeds.py --folds 3 is killed once fold 0 has finished; an array task of scripts/cv.sbatch then
    runs fold 2 alone in the same folder, and seeds.py --resume runs fold 1, reads the others and
    sums up all three as their own metrics files say (fit only: tests/test_recipes.py covers the
    test runs seeds.py adds)."""
    import math
    import os
    import signal
    import statistics
    import subprocess
    import sys
    import time

    options = ["--folds", "3", "--seeds", "0", "--no-test", "--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--trainer.max_epochs=2",
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
    assert len(fold_0) == 1  # its fit (--no-test: the summary is of validation metrics)

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

    per_run = read_rows(folder / "seeds.csv")
    assert [row["fold"] for row in per_run] == ["0", "1", "2"]
    recorded = [json.loads((Path(row["runs"].split()[0]) / "record.json").read_text())["data"]["fold"] for row in per_run]
    assert [fold["fold"] for fold in recorded] == [0, 1, 2] and {fold["folds"] for fold in recorded} == {3}
    accuracies = []
    for row in per_run:  # the summary is the runs' own metrics: the last epoch's validation accuracy
        fit_run = Path(row["runs"].split()[0])
        accuracies.append(float([r for r in read_rows(fit_run / "metrics.csv") if r.get("val/acc")][-1]["val/acc"]))
        assert float(row["val/acc"]) == pytest.approx(accuracies[-1], abs=1e-6)
    summary = {row["metric"]: row for row in read_rows(folder / "summary.csv")}
    assert float(summary["val/acc"]["mean"]) == pytest.approx(statistics.fmean(accuracies), abs=1e-6)
    assert math.isclose(float(summary["val/acc"]["std"]), statistics.stdev(accuracies), abs_tol=1e-6)
    per_fold = [row for row in read_rows(folder / "folds.csv") if row["metric"] == "val/acc"]
    assert [float(row["mean"]) for row in per_fold] == pytest.approx(accuracies, abs=1e-6)


def test_the_runs_of_one_seeds_py_folder_share_a_w_and_b_group_unless_the_config_names_one():
    from project.tools.cli import parse_fit_arguments
    from project.tools.seeds import wandb_group

    recipe = ["--config", str(REPO / "configs" / "lenet_digits.yaml")]
    folder = Path("runs/seeds/lenet_digits/version_3")
    wandb = [*recipe, "--config", str(REPO / "configs" / "logger" / "wandb.yaml")]
    assert wandb_group(parse_fit_arguments(wandb), folder) == ["--trainer.logger.init_args.group=lenet_digits-version_3"]
    assert wandb_group(parse_fit_arguments([*wandb, "--trainer.logger.init_args.group=mine"]), folder) == []
    assert wandb_group(parse_fit_arguments(recipe), folder) == []  # the CSV logger has no groups
