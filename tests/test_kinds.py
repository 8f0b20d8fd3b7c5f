"""Nothing a config, the command line or a checkpoint names is called unless it is of the kind its
option takes (``project.engine.kinds``): the tripwire matrix.

The tripwires: ``conftest.tripwire`` (a function) and ``conftest.Tripwire`` (a class of no kind the
project takes) leave a file when called; ``os.system`` is given a command that leaves one. Every
case must end with one ``error:`` line and exit status 2, and the file must never appear.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import QUIET, REPO, make_image_tree
from project.__main__ import main
from project.errors import UserError
from project.engine.kinds import Kind, check_checkpoint_hyperparameters, kind_of
from project.lightning_modules import ClassificationModule

IMAGE_CONFIG = str(REPO / "configs" / "lenet_imagefolder.yaml")
TABLE_CONFIG = str(REPO / "configs" / "two_layer_digits.yaml")

# Where a config names a class, and the kind it must be (the module docstring of engine.kinds).
EXTENSION_POINTS = {
    "model": "lightning.LightningModule",
    "model.net": "torch.nn.Module",
    "model.optimizer": "torch.optim.Optimizer",
    "model.loss": "torch.nn.Module",
    "model.lr_schedule": "project.engine.schedules.LRSchedule",
    "data": "project.engine.data.ProjectDataModule",
    "trainer.callbacks+": "lightning",  # Callback
    "trainer.logger": "lightning.pytorch.loggers.Logger",
    "trainer.plugins+": "lightning",  # Precision, ClusterEnvironment, CheckpointIO or LayerSync
    "trainer.profiler": "lightning.pytorch.profilers.Profiler",
    "trainer.strategy": "lightning.pytorch.strategies.Strategy",
    "trainer.accelerator": "lightning.pytorch.accelerators.Accelerator",
    "weight_averaging": "project.engine.callbacks.averaging.AveragedWeights",
    "trainer.callbacks.batch_size_fn": "a function declared to return int",  # ThroughputMonitor's
}
TARGETS = ("conftest.tripwire", "conftest.Tripwire", "os.system")


def named(target: str, tripwire: Path, with_init_args: bool) -> str | dict:
    """``target`` as a config names it: an import path alone, or a class_path with init_args."""
    if not with_init_args:
        return target
    return {"class_path": target, "init_args": {"command": f"touch {tripwire}"} if target == "os.system" else {"a": 1}}


def as_config(point: str, value: str | dict) -> dict:
    """The config that gives ``value`` for ``point``, as YAML would hold it."""
    if point == "trainer.callbacks.batch_size_fn":
        monitor = {"class_path": "lightning.pytorch.callbacks.ThroughputMonitor", "init_args": {"batch_size_fn": value}}
        return {"trainer": {"callbacks": [monitor]}}
    *parents, last = point.rstrip("+").split(".")
    config: dict = {last: [value] if point.endswith("+") else value}
    for parent in reversed(parents):
        config = {parent: {"init_args": config} if parent == "model" else config}
    return config


def as_options(point: str, value: str | dict) -> list[str]:
    """The command-line options that give ``value`` for ``point``."""
    text = value if isinstance(value, str) else json.dumps(value)
    if point == "trainer.callbacks.batch_size_fn":
        return ["--trainer.callbacks+=lightning.pytorch.callbacks.ThroughputMonitor",
                "--trainer.callbacks.init_args.window_size=5", f"--trainer.callbacks.init_args.batch_size_fn={text}"]
    return [f"--{point}={text}"]


def assert_refused_in_one_line(exit_info, capsys, tripwire: Path, *named_in_line: str) -> str:
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err and "Given value" not in err and "Parser key" not in err, err
    for text in named_in_line:
        assert text in errors[0], errors[0]
    assert not tripwire.exists()
    return errors[0]


@pytest.fixture
def tripwire(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRIPWIRE_FILE", str(tmp_path / "tripped"))
    return tmp_path / "tripped"


@pytest.mark.parametrize("source", ["yaml", "command line"])
@pytest.mark.parametrize("with_init_args", [False, True], ids=["path", "class_path+init_args"])
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("point", EXTENSION_POINTS)
def test_a_config_cannot_make_anything_of_the_wrong_kind_run(point, target, with_init_args, source, tripwire, tmp_path, capsys):
    """At every extension point, from YAML and from the command line, with and without init_args, a
    function or a class that is not of the option's kind is refused in one line, before anything is made."""
    make_image_tree(tmp_path / "images", per_class=6)
    value = named(target, tripwire, with_init_args)
    if source == "yaml":
        (tmp_path / "shared.yaml").write_text(yaml.safe_dump(as_config(point, value)))
        given = ["--config", "shared.yaml"]
    else:
        given = as_options(point, value)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", IMAGE_CONFIG, "--data.data_dir=images", *given, *QUIET])
    option = "trainer.callbacks" if point.endswith("batch_size_fn") else point.rstrip("+")
    line = assert_refused_in_one_line(exit_info, capsys, tripwire, target, f"--{option}")
    if target != "os.system":  # os.system may be refused by jsonargparse's import denylist, which names no kind
        assert EXTENSION_POINTS[point] in line
    assert not (tmp_path / "runs").exists()


# -- checkpoints --------------------------------------------------------------------------------------

CHECKPOINT_POINTS = ("net", "optimizer", "loss", "_class_path")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint of the two-layer digits recipe (one epoch) and the folder it was trained in."""
    folder = tmp_path_factory.mktemp("trained")
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        main(["fit", "--config", TABLE_CONFIG, "--trainer.max_epochs=1", *QUIET])
    finally:
        os.chdir(cwd)
    return folder / "runs" / "two_layer_digits" / "version_0" / "checkpoints" / "last.ckpt"


def evil_checkpoint(trained: Path, path: Path, point: str, value: str | dict) -> Path:
    """``trained`` with ``value`` written into its hyperparameters at ``point``: a plain dict, so the
    file still loads with ``weights_only=True``."""
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint["hyper_parameters"][point] = value if point != "_class_path" or isinstance(value, str) else value["class_path"]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("with_init_args", [False, True], ids=["path", "class_path+init_args"])
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("point", CHECKPOINT_POINTS)
@pytest.mark.parametrize("subcommand", ["test", "predict", "export", "fit --resume auto"])
def test_a_checkpoint_cannot_make_anything_run(subcommand, point, target, with_init_args, trained, tripwire, tmp_path, capsys):
    """A checkpoint's hyperparameters that name a function, a class of another kind or a class from
    a package nobody trusted are refused in one line by test, predict, export and --resume auto."""
    value = named(target, tripwire, with_init_args)
    if subcommand == "fit --resume auto":  # the newest checkpoint under the recipe's runs
        evil_checkpoint(trained, tmp_path / "runs" / "two_layer_digits" / "version_0" / "checkpoints" / "last.ckpt", point, value)
        args = ["fit", "--config", TABLE_CONFIG, "--resume=auto"]
    else:
        evil = evil_checkpoint(trained, tmp_path / "evil.ckpt", point, value)
        args = [subcommand, "--config", TABLE_CONFIG, f"--ckpt_path={evil}"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, *QUIET])
    option = "model.class_path" if point == "_class_path" else f"model.{point}"
    assert_refused_in_one_line(exit_info, capsys, tripwire, "checkpoint ", option, target)


@pytest.mark.parametrize("with_init_args", [False, True], ids=["path", "class_path+init_args"])
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("point", CHECKPOINT_POINTS)
def test_load_from_checkpoint_cannot_make_anything_run(point, target, with_init_args, trained, tripwire, tmp_path):
    evil = evil_checkpoint(trained, tmp_path / "evil.ckpt", point, named(target, tripwire, with_init_args))
    with pytest.raises(UserError) as refusal:
        ClassificationModule.load_from_checkpoint(evil)
    assert target in str(refusal.value) and "\n" not in str(refusal.value)
    assert not tripwire.exists()


def test_a_checkpoint_names_packages_the_user_trusts_only(trained, tmp_path, capsys, monkeypatch):
    """conftest.FixedWidthNet is a net of the right kind from a package nobody trusted: refused, with
    the option that trusts it; accepted with that option, or when the config names the package too."""
    monkeypatch.chdir(tmp_path)
    evil = evil_checkpoint(trained, tmp_path / "other.ckpt", "net", {"class_path": "conftest.FixedWidthNet", "init_args": {"width": 10}})
    test = ["test", "--config", TABLE_CONFIG, f"--ckpt_path={evil}", *QUIET]
    with pytest.raises(SystemExit) as exit_info:
        main(test)
    line = assert_refused_in_one_line(exit_info, capsys, tmp_path / "never", "conftest.FixedWidthNet", "--trusted_packages conftest")
    assert "torch.nn.Module" in line
    with pytest.raises(UserError, match=r"trusted_packages=\['conftest'\]"):
        ClassificationModule.load_from_checkpoint(evil)
    # Trusted, the checkpoint's net is built (no config names another); its weights are another net's,
    # which is its own one-line refusal.
    for trusting in (["--trusted_packages=[conftest]"], ["--model.net=conftest.FixedWidthNet"]):
        with pytest.raises(SystemExit):
            main(["test", f"--ckpt_path={evil}", *QUIET, *trusting])
        assert "different model" in capsys.readouterr().err
    with pytest.raises(UserError, match="different model"):
        ClassificationModule.load_from_checkpoint(evil, trusted_packages=["conftest"])


def test_the_recipes_own_checkpoints_load_in_python_and_from_the_command_line(trained, tmp_path, monkeypatch):
    model = ClassificationModule.load_from_checkpoint(trained)
    assert type(model.net).__name__ == "TwoLayerNet" and model.net_sizes == (10, (64,))
    with open(trained, "rb") as file:
        assert ClassificationModule.load_from_checkpoint(file).net_sizes == (10, (64,))
    monkeypatch.chdir(tmp_path)
    shutil.copy(trained, tmp_path / "copy.ckpt")
    main(["test", "--config", TABLE_CONFIG, "--ckpt_path=copy.ckpt", *QUIET])


# -- the kinds themselves -----------------------------------------------------------------------------


def test_the_kind_of_an_option_comes_from_its_type():
    from collections.abc import Callable
    from typing import Any

    from lightning.pytorch.callbacks import Callback

    assert kind_of(Callable[[int, tuple[int, ...]], torch.nn.Module]) == Kind((torch.nn.Module,))
    assert kind_of(list[Callback] | Callback | None) == Kind((Callback,))
    assert kind_of(Callable[[Any], int]) == Kind(returns=(int,))
    assert kind_of(Callable) == Kind(any_function=True)
    assert kind_of(Any) == Kind() and kind_of(str | None) == Kind() and kind_of(dict[str, Any]) == Kind()
    assert Kind((torch.nn.Module,)).describe() == "a subclass of torch.nn.Module"


def test_check_checkpoint_hyperparameters_imports_nothing_it_does_not_trust(monkeypatch):
    """An untrusted path is refused before it is imported: its module's import would run its code."""
    imported = []
    monkeypatch.setattr("importlib.import_module", lambda name, *a: imported.append(name))
    with pytest.raises(UserError, match="unknown_package_xyz.Net"):
        check_checkpoint_hyperparameters({"net": {"class_path": "unknown_package_xyz.Net"}}, ClassificationModule, [], "")
    assert imported == []
