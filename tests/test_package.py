"""Installed with ``pip install .`` (not editable), the package runs as ``python -m project``: it
reads ``configs/base.yaml`` beside the config it is given or in the working directory (never from
inside the installed package), the commands it prints run as pasted, and the install leaves the
source tree as it was."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import QUIET, REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package installed from a copy of the tracked files into a folder of its own."""
    source, target = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("installed")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    before = sorted(p.relative_to(source) for p in source.rglob("*"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target),
                    str(source)], check=True, capture_output=True, text=True)
    assert sorted(p.relative_to(source) for p in source.rglob("*")) == before  # no build/, no egg-info
    return target


def run(args: list[str], cwd: Path, installed: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_installed_package_trains_from_the_configs_of_the_working_directory_and_its_printed_commands_run(installed, tmp_path):
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    fit = run([sys.executable, "-m", "project", "fit", "--config", "configs/two_layer_digits.yaml", "--trainer.max_epochs=1", *QUIET],
              tmp_path, installed)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert (tmp_path / "runs" / "two_layer_digits" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    config = (tmp_path / "runs" / "two_layer_digits" / "version_0" / "config.yaml").read_text()
    assert "EpochLines" in config  # the trainer callbacks of configs/base.yaml
    printed = [line.strip() for line in fit.stderr.splitlines() + fit.stdout.splitlines() if " -m project test " in line]
    assert printed, fit.stderr[-3000:]
    test = run(shlex.split(printed[0]), tmp_path, installed)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "train.py" not in fit.stderr + fit.stdout
    imported = run([sys.executable, "-c", "import project; print(project.__file__, project.__version__)"], tmp_path, installed)
    assert imported.stdout.startswith(str(installed)) and " 0+unknown" not in imported.stdout


def test_the_base_config_is_found_beside_the_config_given_from_any_folder(installed, tmp_path):
    shutil.copytree(REPO / "configs", tmp_path / "project" / "configs")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = tmp_path / "project" / "configs" / "two_layer_digits.yaml"
    printed = run([sys.executable, "-m", "project", "fit", "--config", str(config), "--print_config"], elsewhere, installed)
    assert printed.returncode == 0, printed.stderr[-3000:]
    assert "EpochLines" in printed.stdout
    helped = run([sys.executable, "-m", "project", "--help"], elsewhere, installed)
    assert helped.returncode == 0 and "fit" in helped.stdout
