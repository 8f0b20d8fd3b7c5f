"""The command line as a user runs it: fit -> test -> predict, every config, and bad input."""

import hashlib
import logging
import os
from pathlib import Path

import pytest
import torch
import torchvision

from conftest import QUIET, REPO, make_image_tree, make_mnist_files, read_csv, train_py, write_png
from project.__main__ import main
from project.nets import LeNet, TwoLayerNet

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
IMAGE_CONFIG = str(REPO / "configs" / "lenet_imagefolder.yaml")


@pytest.mark.slow
def test_fit_test_predict_end_to_end_on_an_image_folder(tmp_path):
    make_image_tree(tmp_path / "images", per_class=30)
    for i in range(6):
        write_png(tmp_path / "new" / f"sample{i}.png", i % 2, "RGB", seed=500 + i)
    common = ["--config", IMAGE_CONFIG, "--data.data_dir=images", "--data.loader.num_workers=0", *QUIET]

    fit = train_py("fit", *common, "--trainer.max_epochs=6", "--model.optimizer.lr=0.05", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    run = tmp_path / "runs" / "lenet_imagefolder" / "version_0"
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    assert torch.load(best, weights_only=False)["class_names"] == ["cat", "dog"]

    validate = train_py("validate", *common, f"--ckpt_path={best}", cwd=tmp_path)
    assert validate.returncode == 0, validate.stderr
    best_val_acc = float(best.stem.split("val_acc=")[1])  # what fit measured when it saved this checkpoint
    val_rows = read_csv(tmp_path / "runs" / "lenet_imagefolder" / "version_1" / "metrics.csv")
    assert float(val_rows[-1]["val/acc"]) == pytest.approx(best_val_acc, abs=1e-4)

    test = train_py("test", *common, f"--ckpt_path={best}", cwd=tmp_path)
    assert test.returncode == 0, test.stderr
    test_rows = [r for r in read_csv(tmp_path / "runs" / "lenet_imagefolder" / "version_2" / "metrics.csv") if r["test/acc"]]
    assert float(test_rows[-1]["test/acc"]) >= 0.9

    predict = train_py("predict", *common, f"--ckpt_path={best}", "--data.predict_dir=new", cwd=tmp_path)
    assert predict.returncode == 0, predict.stderr
    rows = read_csv(tmp_path / "runs" / "lenet_imagefolder" / "version_3" / "predictions.csv")
    assert [Path(r["input"]).name for r in rows] == [f"sample{i}.png" for i in range(6)]
    assert [r["predicted_class"] for r in rows] == ["cat", "dog"] * 3  # sample i has the pattern of class i % 2
    assert all(0.5 <= float(r["probability"]) <= 1.0 for r in rows)


@pytest.mark.slow
def test_predict_on_tensor_data_writes_one_row_per_test_sample(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = ["--config", str(REPO / "configs" / "two_layer_digits.yaml"), *QUIET]
    main(["fit", *config, "--trainer.max_epochs=2"])
    last = tmp_path / "runs" / "two_layer_digits" / "version_0" / "checkpoints" / "last.ckpt"
    main(["predict", *config, f"--ckpt_path={last}"])
    rows = read_csv(tmp_path / "runs" / "two_layer_digits" / "version_1" / "predictions.csv")
    assert len(rows) == 359 and rows[0]["input"].startswith("row ")
    assert len({r["input"] for r in rows}) == 359
    assert {r["predicted_class"] for r in rows} <= {str(d) for d in range(10)}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "class_path: project." in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "extra"),
    [
        ("lenet_digits", []),
        ("lenet_digits", ["--config", str(REPO / "configs" / "data" / "digits_60k.yaml")]),  # the MNIST-size overlay
        ("two_layer_digits", []),
        ("two_layer_regression", ["--data.path=data/regression.pt"]),
        ("lenet_imagefolder", ["--data.data_dir=images", "--data.loader.num_workers=0"]),
        ("lenet_mnist", ["--data.loader.num_workers=0"]),
        ("lenet_fashion_mnist", ["--data.loader.num_workers=0"]),
        ("resnet_finetune", ["--data.data_dir=images", "--data.loader.num_workers=0"]),
        ("resnet_finetune_unfreeze", ["--data.data_dir=images", "--data.loader.num_workers=0"]),
    ],
)
def test_configs_run_as_written_once_their_data_exists(config, extra, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # where the ResNet configs find their weights
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    make_image_tree(tmp_path / "images", per_class=10)
    make_mnist_files(tmp_path / "data", "MNIST")
    make_mnist_files(tmp_path / "data", "FashionMNIST")
    torch.save({"x": torch.randn(64, 1000), "y": torch.randn(64, 10)}, tmp_path / "data" / "regression.pt")
    main(["fit", "--config", str(REPO / "configs" / f"{config}.yaml"), "--trainer.fast_dev_run=true", *QUIET, *extra])


def tree_fingerprint(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def earlier_run(tmp_path, monkeypatch):
    """A working directory holding image data and the outputs of an earlier run."""
    monkeypatch.chdir(tmp_path)
    make_image_tree(tmp_path / "images", per_class=6)
    earlier = tmp_path / "runs" / "lenet_imagefolder" / "version_0"
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "checkpoints" / "last.ckpt").write_bytes(b"weights from yesterday")
    (earlier / "metrics.csv").write_text("epoch,val/acc\n0,0.5\n")
    return tree_fingerprint(tmp_path / "runs")


def truncated_checkpoint(tmp_path: Path) -> str:
    path = tmp_path / "truncated.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    return str(path)


def corrupt_image(tmp_path: Path) -> str:
    (tmp_path / "images" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return "images"


def empty_folder(tmp_path: Path) -> str:
    (tmp_path / "empty").mkdir()
    return "empty"


def tensor_data(tmp_path: Path, recipe: str, name: str, inputs: torch.Tensor, targets: torch.Tensor) -> list[str]:
    """The arguments that train ``configs/<recipe>.yaml`` on a tensor file ``name`` holding these tensors."""
    torch.save({"x": inputs, "y": targets}, tmp_path / name)
    return ["--config", str(REPO / "configs" / f"{recipe}.yaml"), f"--data.path={name}"]


def nan_rows(tensor: torch.Tensor, rows) -> torch.Tensor:
    tensor[list(rows)] = float("nan")
    return tensor


def labels_with_one_typo() -> torch.Tensor:
    targets = torch.arange(40) % 3
    targets[7] = 30  # meant 0..2: within the sample count, so only the empty classes tell
    return targets


def labels_with_one_far_too_large() -> torch.Tensor:
    targets = torch.arange(40) % 2
    targets[3] = 2_000_000_000
    return targets


BAD_INPUTS = {
    "missing data folder": (lambda t: ["--data.data_dir=nowhere"], "image folder not found: nowhere"),
    "empty data folder": (lambda t: [f"--data.data_dir={empty_folder(t)}"], "empty: no class folder in it"),
    "unreadable image": (lambda t: [f"--data.data_dir={corrupt_image(t)}"], "unreadable image file(s): images/dog/broken.png"),
    "class count mismatch": (
        lambda t: ["--model.num_classes=3"], "the data has 2 classes (cat, dog) but model.num_classes is 3"),
    "net width mismatch": (lambda t: ["--model.net=conftest.FixedWidthNet"], "the net outputs shape (5,) per sample but model.num_classes is 2"),
    "input shape mismatch": (
        lambda t: ["--model.input_shape=[1,8,8]"], "the data's inputs have shape 3x32x32 but the model takes 1x8x8"),
    "target column mismatch": (
        lambda t: [*tensor_data(t, "two_layer_regression", "regression.pt", torch.randn(40, 6), torch.randn(40, 2)),
                   "--model.num_outputs=3"], "the data has 2 target column(s) but model.num_outputs is 3"),
    "checkpoint with other sizes": (
        lambda t: [f"--ckpt_path={net_checkpoint(t, LeNet(3, (3, 32, 32)))}"],
        "the checkpoint's net.fc3.weight has shape (3, 84) but this model's has (2, 84)"),
    "drop_last with a batch larger than the data": (
        lambda t: ["--data.loader.drop_last=true", "--data.loader.global_batch_size=64"],
        "data.loader.drop_last would drop every training sample: the training split has 8 samples"),
    "unknown loss": (lambda t: ["--model.loss=hinge"], "unknown loss 'hinge'"),
    "unknown schedule": (lambda t: ["--model.lr_schedule.name=exponential"], "unknown lr schedule 'exponential'"),
    "uneven tensor file": (
        lambda t: tensor_data(t, "two_layer_regression", "uneven.pt", torch.zeros(10, 1000), torch.zeros(9, 10)),
        "inputs and targets differ in length (10 inputs, 9 targets)"),
    "empty tensor file": (
        lambda t: tensor_data(t, "two_layer_table", "empty.pt", torch.zeros(0, 4), torch.zeros(0)),
        "empty.pt: holds no samples (inputs of shape (0, 4))"),
    "missing checkpoint": (lambda t: ["--ckpt_path=nope.ckpt"], "checkpoint not found: nope.ckpt"),
    "truncated checkpoint": (lambda t: [f"--ckpt_path={truncated_checkpoint(t)}"], "is not a readable checkpoint"),
    "broken config": (lambda t: ["--config", str(broken_yaml(t))], "Problems parsing config"),
    "global batch that does not divide": (
        lambda t: ["--data.loader.global_batch_size=16", "--trainer.accumulate_grad_batches=3"],
        "global_batch_size=16 does not divide into 1 device(s) x 3 accumulation step(s)"),
    "unknown class in config": (lambda t: ["--model.net=project.nets.NoSuchNet"], "--model.net: no class project.nets.NoSuchNet"),
    "wrong type in config": (lambda t: ["--trainer.max_epochs=many"], "max_epochs"),
    "checkpoint of another model": (
        lambda t: [f"--ckpt_path={net_checkpoint(t, TwoLayerNet(2, (64,), 8))}"], "the checkpoint was saved from a different model"),
    "missing weights file": (
        lambda t: ["--config", str(REPO / "configs" / "resnet_finetune.yaml"), "--data.data_dir=images",
                   "--model.net.weights=null", "--model.net.weights_path=missing.pth"], "weights file not found: missing.pth"),
    "pickled object as checkpoint": (lambda t: [f"--ckpt_path={pickled_checkpoint(t)}"], "holding Python objects"),
    "class label far beyond the sample count": (
        lambda t: tensor_data(t, "two_layer_table", "huge_label.pt", torch.randn(40, 4), labels_with_one_far_too_large()),
        "the largest is 2000000000 for 40 samples (3 distinct labels)"),
    "NaN targets in the validation split": (
        lambda t: tensor_data(t, "two_layer_regression", "nan_targets.pt", torch.randn(40, 6), torch.full((40, 2), float("nan"))),
        "the validation split has 4 sample(s) with NaN/inf in inputs or targets"),
    "NaN inputs in the training split": (
        lambda t: [*tensor_data(t, "two_layer_regression", "nan_inputs.pt", nan_rows(torch.randn(40, 6), range(0, 40, 5)), torch.randn(40, 2)),
                   "--data.val_fraction=0", "--data.test_fraction=0"],
        "the training split has 8 sample(s) with NaN/inf in inputs or targets"),
    "labels that are all one class": (
        lambda t: tensor_data(t, "two_layer_table", "all_three.pt", torch.randn(40, 4), torch.full((40,), 3)),
        "the data has one class (3): a classifier needs at least two"),
    "one label far above the others": (
        lambda t: tensor_data(t, "two_layer_table", "typo.pt", torch.randn(40, 4), labels_with_one_typo()),
        "the largest label, 30, makes 31 classes, but 27 of them have no sample (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, ...)"),
    "output folder under a file": (
        lambda t: ["--trainer.logger.init_args.save_dir=images/cat/000.png/runs"],
        "cannot write runs under images/cat/000.png/runs/lenet_imagefolder: images/cat/000.png is a file"),
    "output folder on a device": (lambda t: ["--trainer.default_root_dir=/dev/full"], "/dev/full is a file, not a folder"),
    "devices that disagree with torchrun": (
        lambda t: [*torchrun_environment(), "--trainer.devices=3"], "torchrun started 1 processes"),
    "checkpoint monitor the model does not log": (
        lambda t: ["--checkpoint.monitor=val/los"], "checkpoint.monitor is 'val/los', which this model does not log (did you mean 'val/loss'?)"),
    "early stopping monitor the model does not log": (
        lambda t: ["--early_stopping.monitor=val/los"], "early_stopping.monitor is 'val/los', which this model does not log"),
    "plateau schedule monitor the model does not log": (
        lambda t: ["--model.lr_schedule.name=plateau", "--model.lr_schedule.monitor=val/accuracy"],
        "model.lr_schedule.monitor is 'val/accuracy', which this model does not log (did you mean 'val/acc'?)"),
    "a table with one class": (
        lambda t: tensor_data(t, "two_layer_table", "one_class.pt", torch.randn(40, 4), torch.zeros(40)),
        "the data has one class (0): a classifier needs at least two"),
    "a negative seed": (lambda t: ["--seed_everything=-5"], "seed_everything must be in 0..4294967295 (2^32 - 1), got -5"),
    "a seed beyond 2^32": (lambda t: ["--seed_everything=73786976294838206464"], "seed_everything must be in 0..4294967295"),
    "negative loader workers": (lambda t: ["--data.loader.num_workers=-1"], "data.loader.num_workers must be >= 0"),
    "image size 0": (lambda t: ["--data.transforms.image_size=0"], "transforms.image_size must be >= 1 (pixels), got 0"),
    "label smoothing beyond 1": (lambda t: ["--model.label_smoothing=2"], "label_smoothing must be in [0, 1)"),
    "an unknown profiler name": (lambda t: ["--trainer.profiler=fastest"], "`profiler` parameter of `Trainer`, it can only be one of"),
    "a YAML alias bomb": (lambda t: ["--config", alias_bomb(t)], "its YAML aliases (*name) expand to over 100,000 values"),
    "a YAML alias bomb given inline": (lambda t: [f"--config={(t / alias_bomb(t)).read_text()}"],
                                       "--config: its YAML aliases (*name) expand to over 100,000 values"),
    "a YAML alias bomb as an option's value": (lambda t: [f"--trainer.callbacks={flow_bomb()}"],
                                               "--trainer.callbacks: its YAML aliases (*name) expand to over 100,000 values"),
    "an empty CSV": (lambda t: csv_data(t, ""), "table.csv: holds no rows (the file is empty)"),
    "a CSV with only a header": (lambda t: csv_data(t, "a,b,label\n"), "table.csv: holds no rows below its header"),
    "a word in an input column": (
        lambda t: csv_data(t, "a,b,label\n1,2,0\n3,x,1\n"), "table.csv: input columns must be numbers, but row 1 column 1 is 'x'"),
    "a misspelt class path": (lambda t: ["--model.net=project.nets.LeNte"], "--model.net: no class project.nets.LeNte; did you mean project.nets.LeNet?"),
    "a logger version that leaves the runs folder": (
        lambda t: ["--trainer.logger.init_args.version=../../../x"], "trainer.logger.init_args.version is '../../../x'"),
    "a logger version an earlier run wrote": (
        lambda t: ["--trainer.logger.init_args.version=version_0"], "lenet_imagefolder/version_0 exists: another run wrote there"),
    "a per-device batch beside the recipe's global one": (
        lambda t: ["--data.loader.batch_size=4"], """for a fixed per-device batch use --data.loader '{"global_batch_size": null, "batch_size": 4}'"""),
}


def alias_bomb(tmp_path: Path) -> str:
    """Seven lines of YAML whose aliases expand to 9^7 (4.8 million) strings."""
    lines = ["trainer:", "  callbacks:", "    - &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"    - &{name} [{', '.join([f'*{previous}'] * 9)}]" for previous, name in zip("abcde", "bcdef")]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    return "bomb.yaml"


def flow_bomb() -> str:
    """The same bomb written on one line, as an option's value."""
    text = "[&a [x, x, x, x, x, x, x, x, x]"
    for previous, name in zip("abcde", "bcdef"):
        text += f", &{name} [{', '.join([f'*{previous}'] * 9)}]"
    return text + "]"


def csv_data(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "table.csv").write_text(text)
    return ["--config", str(REPO / "configs" / "two_layer_table.yaml"), "--data.path=table.csv"]


def pickled_checkpoint(tmp_path: Path) -> str:
    torch.save({"state_dict": {}, "callback": Path("not plain data")}, tmp_path / "pickled.ckpt")
    return "pickled.ckpt"


def net_checkpoint(tmp_path: Path, net: torch.nn.Module) -> str:
    """A Lightning checkpoint holding only ``net``'s weights (no hyperparameters)."""
    path = tmp_path / "net.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "epoch": 0, "global_step": 0,
                "pytorch-lightning_version": "2.6.6", "loops": {}, "callbacks": {}, "optimizer_states": [],
                "lr_schedulers": []}, path)
    return str(path)


def torchrun_environment() -> list[str]:
    """What torchrun --nproc_per_node=1 puts in the environment (undone by the test's monkeypatch)."""
    os.environ.update(TORCHELASTIC_RUN_ID="catalogue", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", RANK="0", LOCAL_RANK="0")
    return []


def broken_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text("model: [\n")
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_named_error_exit_2_and_keeps_earlier_runs(case, tmp_path, earlier_run, capsys, monkeypatch):
    for name in ("TORCHELASTIC_RUN_ID", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.setenv(name, "")  # records the variable, so whatever a case sets is undone afterwards
        monkeypatch.delenv(name)
    make_args, message = BAD_INPUTS[case]
    args = ["fit", "--config", IMAGE_CONFIG, "--data.data_dir=images", "--data.loader.num_workers=0",
            "--trainer.max_epochs=1", *QUIET, *make_args(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in err, err
    assert "Traceback" not in err and "Given value" not in err  # no jsonargparse dump under the line
    assert tree_fingerprint(tmp_path / "runs") == earlier_run  # kept whole
    folders = {str(p.relative_to(tmp_path / "runs")) for p in (tmp_path / "runs").rglob("*") if p.is_dir()}
    assert folders == {"lenet_imagefolder", "lenet_imagefolder/version_0", "lenet_imagefolder/version_0/checkpoints"}


def test_testing_an_empty_test_split_is_refused(image_tree, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--config", IMAGE_CONFIG, f"--data.data_dir={image_tree}", "--data.test_fraction=0", *QUIET])
    assert exit_info.value.code == 2
    assert "error: the test split is empty (data.test_fraction is 0 and there is no test folder)" in capsys.readouterr().err


def test_default_root_dir_moves_the_whole_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--trainer.default_root_dir=elsewhere",
          "--trainer.max_epochs=1", *QUIET])
    run = tmp_path / "elsewhere" / "two_layer_digits" / "version_0"
    assert {"config.yaml", "metrics.csv", "checkpoints"} <= {p.name for p in run.iterdir()}
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("given", "meant"), [
    ("--model.optimzer.lr", "--model.optimizer.lr"),
    ("--trainer.max_epocs", "--trainer.max_epochs"),
    ("--data.loader.global_batchsize", "--data.loader.global_batch_size"),
    ("--early_stoping.patience", "--early_stopping.patience"),
])
def test_a_misspelt_option_names_the_nearest_valid_one_in_one_line(given, meant, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", IMAGE_CONFIG, given, "3"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: unknown option {given}: did you mean {meant}?"


def test_help_for_the_model_and_data_classes_takes_their_short_names(capsys):
    for option, expected in (("--model.help", "--model.num_classes"), ("--data.help", "--data.predict_dir")):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", option, "ClassificationModule" if option == "--model.help" else "ImageFolderDataModule"])
        assert exit_info.value.code == 0
        assert expected in capsys.readouterr().out


def test_a_class_named_on_the_command_line_keeps_the_options_it_shares_and_says_which(capsys, caplog):
    """The digits recipe's AdamW has lr 0.003, weight_decay 0.01 and fused; SGD named over it keeps
    them (jsonargparse's rule, as in config files), the run names them, and options after it win."""
    from project.tools.cli import parse_fit_arguments

    args = ["--config", str(REPO / "configs" / "lenet_digits.yaml"), "--model.optimizer", "torch.optim.SGD",
            "--model.optimizer.momentum=0.9", "--model.optimizer.lr=0.05"]
    with caplog.at_level(logging.INFO):
        config = parse_fit_arguments(args)
    optimizer = config["model"]["init_args"]["optimizer"]
    assert optimizer["class_path"] == "torch.optim.SGD"
    assert optimizer["init_args"]["momentum"] == 0.9 and optimizer["init_args"]["lr"] == 0.05
    assert optimizer["init_args"]["weight_decay"] == 0.01 and optimizer["init_args"]["fused"] is True
    said = [r.getMessage() for r in caplog.records if "keeps" in r.getMessage()]
    assert said == ["--model.optimizer torch.optim.SGD keeps weight_decay=0.01, fused=True of torch.optim.AdamW, which it "
                    "replaces (the options they share); give them after it to change them"]


@pytest.mark.slow
def test_a_bad_input_through_the_real_command_prints_no_traceback(tmp_path):
    result = train_py("fit", "--config", IMAGE_CONFIG, "--data.data_dir=nowhere", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: image folder not found: nowhere"
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_last_checkpoint_is_the_latest_epoch_even_when_the_metric_stops_improving(tmp_path):
    # A monitored value that only gets worse after epoch 0, so only epoch 0 is "best".
    fit = train_py("fit", "--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--trainer.max_epochs=3",
                   "--checkpoint.monitor=epoch", "--checkpoint.mode=min", *QUIET, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    checkpoints = tmp_path / "runs" / "two_layer_digits" / "version_0" / "checkpoints"
    assert [p.name[:13] for p in checkpoints.glob("best-*.ckpt")] == ["best-epoch=00"]
    last = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 120)


def test_the_class_count_comes_from_the_data_and_any_loss_module_can_be_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    classes = tuple(f"kind{i}" for i in range(7))
    make_image_tree(tmp_path / "seven", classes=classes, per_class=6)
    main(["fit", "--config", IMAGE_CONFIG, "--data.data_dir=seven", "--data.loader.num_workers=0", "--trainer.max_epochs=1",
          "--model.loss=torch.nn.CrossEntropyLoss", "--model.loss.init_args.label_smoothing=0.1", *QUIET])
    checkpoint = torch.load(next(Path("runs/lenet_imagefolder/version_0/checkpoints").glob("best-*.ckpt")), weights_only=False)
    assert checkpoint["class_names"] == list(classes)
    assert checkpoint["state_dict"]["net.fc3.weight"].shape == (7, 84)  # the net was built for 7 classes
    assert checkpoint["hyper_parameters"]["num_classes"] == 7
    assert checkpoint["hyper_parameters"]["loss"]["class_path"] == "torch.nn.CrossEntropyLoss"


def test_a_regression_net_gets_as_many_outputs_as_the_targets_have_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"x": torch.randn(64, 1000), "y": torch.randn(64, 3)}, tmp_path / "three.pt")
    main(["fit", "--config", str(REPO / "configs" / "two_layer_regression.yaml"), "--data.path=three.pt",
          "--trainer.max_epochs=1", *QUIET])
    last = torch.load("runs/two_layer_regression/version_0/checkpoints/last.ckpt", weights_only=False)
    assert last["state_dict"]["net.linear2.weight"].shape == (3, 100)


@pytest.mark.parametrize("config", [c for c in CONFIGS if c.stem != "base"], ids=lambda p: p.stem)
def test_recipes_state_no_trainer_defaults_and_no_class_counts(config):
    """The base config holds the trainer, callback and logger defaults; recipes hold the rest."""
    import yaml

    recipe = yaml.safe_load(config.read_text())
    assert set(recipe.get("trainer", {})) <= {"max_epochs", "logger"}, config.name
    assert set(recipe["trainer"]["logger"]) == {"init_args"} and set(recipe["trainer"]["logger"]["init_args"]) == {"name"}
    assert "num_classes" not in config.read_text()


def test_any_callback_option_can_be_changed_from_the_command_line(capsys):
    import yaml

    with pytest.raises(SystemExit):
        main(["fit", "--config", IMAGE_CONFIG, "--early_stopping.patience=5", "--checkpoint.monitor=val/loss",
              "--checkpoint.mode=min", "--trainer.callbacks.action=skip", "--print_config"])
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["early_stopping"]["patience"] == 5 and resolved["checkpoint"]["monitor"] == "val/loss"
    assert resolved["trainer"]["callbacks"][-1]["init_args"]["action"] == "skip"


@pytest.mark.slow
def test_val_fraction_0_trains_without_validation_says_so_and_prints_commands_for_the_last_checkpoint(tmp_path):
    result = train_py("fit", "--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--data.val_fraction=0",
                      "--trainer.max_epochs=2", *QUIET, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "no validation split (data.val_fraction is 0): training without validation" in output
    assert "Traceback" not in output and "Total length of `list`" not in output
    last = "runs/two_layer_digits/version_0/checkpoints/last.ckpt"
    assert f"Last checkpoint: {last}" in output and f"--ckpt_path {last}" in output
    assert torch.load(tmp_path / last, weights_only=True)["epoch"] == 1


def test_a_sigterm_outside_training_exits_143_not_0(monkeypatch, capsys):
    """Lightning ends validate/test/predict on SIGTERM with a SystemExit of status 0; a scheduler
    must see that the job did not finish."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    import project.tools.cli

    def stopped(*args, **kwargs):
        raise SIGTERMException

    monkeypatch.setattr(project.tools.cli, "ProjectCLI", stopped)
    with pytest.raises(SystemExit) as exit_info:
        main(["test"])
    assert exit_info.value.code == 143 and "stopped by SIGTERM" in capsys.readouterr().err


def test_a_net_size_option_is_answered_with_where_sizes_come_from_never_with_itself(capsys):
    for option in ("--model.net.num_classes", "--model.net.num_outputs", "--model.net.input_shape", "--model.net.d_out"):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", str(REPO / "configs" / "lenet_digits.yaml"), option, "10"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"error: {option}: a net's number of outputs and input shape come from the data (and from a checkpoint): "
                       "leave the option out")
    with pytest.raises(SystemExit):  # AdamW has no momentum, and nothing near it: no suggestion of the option itself
        main(["fit", "--config", str(REPO / "configs" / "lenet_digits.yaml"), "--model.optimizer.momentum", "0.9"])
    assert "did you mean --model.optimizer.momentum" not in capsys.readouterr().err


@pytest.mark.parametrize("path", ["project.callbacks.NonFiniteLoss", "project.loggers.CSVLogger", "project.distributed.SyncBatchNormPlugin"])
def test_a_class_path_that_does_not_exist_is_one_line_naming_it(path, capsys):
    option = {"NonFiniteLoss": "--trainer.callbacks+=", "CSVLogger": "--trainer.logger=",
              "SyncBatchNormPlugin": "--trainer.plugins+="}[path.rpartition(".")[2]]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", IMAGE_CONFIG, option + path])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and path in lines[0], lines


def reads_of_checkpoints(monkeypatch) -> list[Path]:
    """Every checkpoint file torch.load reads from now on (by path or through an open file)."""
    reads, real = [], torch.load

    def counting(file, *args, **kwargs):
        name = str(file) if isinstance(file, (str, os.PathLike)) else str(getattr(file, "name", ""))
        if name.endswith(".ckpt"):
            reads.append(Path(name).resolve())
        return real(file, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    return reads


def test_a_resumed_fit_and_a_test_read_their_checkpoint_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = ["--config", str(REPO / "configs" / "two_layer_digits.yaml"), *QUIET]
    main(["fit", *recipe, "--trainer.max_epochs=1"])
    last = (tmp_path / "runs" / "two_layer_digits" / "version_0" / "checkpoints" / "last.ckpt").resolve()
    reads = reads_of_checkpoints(monkeypatch)
    main(["fit", *recipe, "--trainer.max_epochs=2", f"--ckpt_path={last}"])
    assert reads == [last]
    reads.clear()
    main(["test", *recipe, f"--ckpt_path={last}"])
    assert reads == [last]
    reads.clear()
    main(["fit", *recipe, "--trainer.max_epochs=3", "--resume=auto"])  # the newest: version_1's last.ckpt
    assert reads == [(tmp_path / "runs" / "two_layer_digits" / "version_1" / "checkpoints" / "last.ckpt").resolve()]


def test_a_checkpoints_hyperparameters_go_under_the_config_files_and_the_command_line(tmp_path, monkeypatch, caplog):
    """Command line over configs over checkpoint: the checkpoint's arguments are the parser's defaults,
    and each argument given otherwise is named."""
    monkeypatch.chdir(tmp_path)
    recipe = ["--config", str(REPO / "configs" / "two_layer_digits.yaml"), *QUIET]
    main(["fit", *recipe, "--trainer.max_epochs=1", "--model.net.init_args.hidden=16"])  # label_smoothing 0.0
    last = tmp_path / "runs" / "two_layer_digits" / "version_0" / "checkpoints" / "last.ckpt"
    (tmp_path / "smoothing.yaml").write_text("model:\n  init_args:\n    label_smoothing: 0.3\n")
    main(["test", *QUIET, "--config", "smoothing.yaml", f"--ckpt_path={last}"])
    saved = (tmp_path / "runs" / "two_layer_digits" / "version_1" / "config.yaml").read_text()
    assert "label_smoothing: 0.3" in saved and "hidden: 16" in saved  # the config's, and the checkpoint's where no config says
    assert "model.label_smoothing: 0.3 from the configs, not the checkpoint's 0.0" in caplog.text
    main(["test", *recipe, "--config", "smoothing.yaml", f"--ckpt_path={last}", "--model.label_smoothing=0.2",
          "--model.net.init_args.hidden=16"])  # the recipe's hidden 128 would go over the checkpoint's
    assert "label_smoothing: 0.2" in (tmp_path / "runs" / "two_layer_digits" / "version_2" / "config.yaml").read_text()
    assert "model.label_smoothing: 0.2 from the command line, not the checkpoint's 0.0" in caplog.text


def test_a_checkpoint_of_a_dataset_with_named_classes_loads_for_test(tmp_path, monkeypatch):
    """scikit-learn names iris's classes with numpy strings; saved as such, the checkpoint would not load with weights_only."""
    monkeypatch.chdir(tmp_path)
    recipe = ["--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--data.dataset=iris", *QUIET]
    main(["fit", *recipe, "--trainer.max_epochs=1"])
    last = tmp_path / "runs" / "two_layer_digits" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["class_names"] == ["setosa", "versicolor", "virginica"]
    main(["test", *recipe, f"--ckpt_path={last}"])


def test_the_per_device_batch_the_error_suggests_parses_as_it_says():
    from project.tools.cli import parse_fit_arguments

    config = parse_fit_arguments(["--config", IMAGE_CONFIG, "--data.data_dir=images",
                                  '--data.loader={"global_batch_size": null, "batch_size": 4}'])
    loader = config["data"]["init_args"]["loader"]
    assert (loader["global_batch_size"], loader["batch_size"]) == (None, 4)


def test_a_gpu_asked_for_where_torch_sees_none_is_one_line_before_any_work(tmp_path, earlier_run, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", IMAGE_CONFIG, "--data.data_dir=images", "--trainer.accelerator=gpu", *QUIET])
    assert exit_info.value.code == 2
    assert "error: trainer.accelerator is 'gpu' but torch sees no CUDA GPU here" in capsys.readouterr().err


def test_nan_in_new_rows_to_predict_is_refused_with_the_rows_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = ["--config", str(REPO / "configs" / "two_layer_digits.yaml"), *QUIET]
    main(["fit", *config, "--trainer.max_epochs=1"])
    last = tmp_path / "runs" / "two_layer_digits" / "version_0" / "checkpoints" / "last.ckpt"
    rows = torch.rand(6, 64)
    rows[[1, 4], 3] = float("nan")
    torch.save(rows, tmp_path / "new.pt")
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", *config, f"--ckpt_path={last}", "--data.predict_path=new.pt"])
    assert exit_info.value.code == 2
    assert "error: new.pt: 2 row(s) hold NaN/inf (rows [1, 4]): a prediction for them would be NaN" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "runs" / "two_layer_digits").iterdir()) == ["version_0"]




def test_a_named_version_is_one_runs_alone_and_a_continued_run_writes_beside_it(tmp_path, monkeypatch, capsys):
    """A run never overwrites a run: a second fit with the same --trainer.logger.init_args.version is
    refused before it writes anything; continuing that run writes into the next free name beside it."""
    from project.engine.loggers import claim_named_folder
    from project.errors import UserError

    monkeypatch.chdir(tmp_path)
    recipe = ["--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--trainer.logger.init_args.version=mine", *QUIET]
    main(["fit", *recipe, "--trainer.max_epochs=1"])
    runs = tmp_path / "runs" / "two_layer_digits"
    first = tree_fingerprint(runs)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *recipe, "--trainer.max_epochs=1"])
    assert exit_info.value.code == 2
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")] == [
        f"error: {Path('runs') / 'two_layer_digits' / 'mine'} exists: another run wrote there. Name another "
        "--trainer.logger.init_args.version, or leave it out for the next version_N; --ckpt_path or --resume auto continue that run"]
    assert tree_fingerprint(runs) == first
    main(["fit", *recipe, "--trainer.max_epochs=2", "--resume=auto"])
    assert tree_fingerprint(runs).items() >= first.items() and (runs / "mine-2" / "checkpoints" / "last.ckpt").is_file()
    # Two runs that start together: the folder is made with a create that fails if it exists.
    claim_named_folder(tmp_path / "together" / "v")
    with pytest.raises(UserError, match="exists: another run wrote there"):
        claim_named_folder(tmp_path / "together" / "v")


def test_the_help_of_a_class_lists_a_few_known_subclasses_the_projects_first(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "ClassificationModule"])
    text = capsys.readouterr().out
    assert len(text.splitlines()) < 200  # not every nn.Module torch has (1,592 lines)
    listed = " ".join(text.split()).partition("--model.net NET")[2].partition("known subclasses: ")[2].split(" ... and ")[0]
    assert "project.nets.LeNet" in listed and "project.nets.TwoLayerNet" in listed


@pytest.mark.parametrize("file", ["record.json", "metrics.csv", "training_curves.png"])
def test_a_full_disk_while_a_run_writes_its_record_or_metrics_is_one_line_and_leaves_no_partial_file(file, tmp_path, monkeypatch, capsys):
    import errno

    from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
    from matplotlib.figure import Figure

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.chdir(tmp_path)
    if file == "record.json":
        real = Path.write_text
        monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: full() if self.name == ".record.partial.json" else real(self, *a, **k))
    elif file == "metrics.csv":
        monkeypatch.setattr(LightningCSVLogger, "save", full)
    else:
        monkeypatch.setattr(Figure, "savefig", full)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--trainer.max_epochs=1", *QUIET])
    assert exit_info.value.code == 2
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert line.startswith("error: cannot write runs") and f"{file}: No space left on device" in line
    assert not list(tmp_path.rglob("*partial*"))
