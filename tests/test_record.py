"""The run record's parts: the git state and diff, package versions and the data fingerprint, each
changing when what it describes changes (tests/test_workflow.py checks whole records of real runs)."""

import importlib.metadata
import subprocess

import numpy as np

from conftest import make_image_tree, make_mnist_files
from project.datamodules import ImageFolderDataModule, TensorDataModule, TorchvisionDataModule
from project.engine import provenance


def git(folder, *args):
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True).stdout


def test_a_dirty_tree_records_its_diff_and_a_clean_one_none(tmp_path):
    repo, run = tmp_path / "repo", tmp_path / "run"
    repo.mkdir(), run.mkdir()
    git(repo, "init", "-q")
    (repo / "model.py").write_text("width = 1\n")
    git(repo, "add", "model.py")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    clean = provenance.git_state(repo, run)
    assert clean == {"commit": git(repo, "rev-parse", "HEAD").strip(), "dirty": False, "changed": [], "untracked": []}
    (repo / "model.py").write_text("width = 2\n")
    (repo / "notes.txt").write_text("new\n")
    dirty = provenance.git_state(repo, run)
    assert dirty["dirty"] and dirty["changed"] == ["model.py"] and dirty["untracked"] == ["notes.txt"]
    assert "+width = 2" in (run / dirty["diff"]).read_text()
    assert provenance.git_state(tmp_path / "not-a-repo", run)["commit"] is None


def test_the_record_changes_when_a_package_version_changes(monkeypatch):
    before = provenance.package_versions()
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.7.0" if name == "lightning" else real(name))
    after = provenance.package_versions()
    assert before != after and after["lightning"] == "2.7.0" and before["lightning"] == real("lightning")


def fingerprint(datamodule, stage="fit"):
    datamodule.setup(stage)
    return datamodule.fingerprint(stage)


def test_the_data_fingerprint_changes_with_the_data_and_only_then(tmp_path):
    digits = fingerprint(TensorDataModule(dataset="digits"))
    assert digits == fingerprint(TensorDataModule(dataset="digits"))
    assert digits != fingerprint(TensorDataModule(dataset="digits", split_seed=1))  # other rows in each split
    x, y = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32), np.arange(40) % 2
    np.savez(tmp_path / "a.npz", x=x, y=y)
    x[7, 1] += 1e-3
    np.savez(tmp_path / "b.npz", x=x, y=y)
    assert fingerprint(TensorDataModule(dataset=None, path=str(tmp_path / "a.npz")))["sha256"] != \
        fingerprint(TensorDataModule(dataset=None, path=str(tmp_path / "b.npz")))["sha256"]

    images = make_image_tree(tmp_path / "images")
    first = fingerprint(ImageFolderDataModule(data_dir=str(images)))
    assert first["files"] == 40 and first == fingerprint(ImageFolderDataModule(data_dir=str(images)))
    (images / "cat" / "000.png").write_bytes((images / "cat" / "000.png").read_bytes() + b"\0")  # one byte more
    assert fingerprint(ImageFolderDataModule(data_dir=str(images)))["sha256"] != first["sha256"]

    mnist = fingerprint(TorchvisionDataModule(root=str(make_mnist_files(tmp_path / "mnist"))))
    assert mnist["files"] == 4 and mnist["samples"] == {"train": 54, "val": 6, "test": 20}
