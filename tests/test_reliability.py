"""Crashes and bad numbers, with real processes and real SIGKILLs: exact resume, auto-resume,
checkpoints that survive a kill mid-write, and non-finite losses."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import KILLABLE, QUIET, REPO, kill_at, read_csv, train_py

DIGITS = ["--config", str(REPO / "configs" / "lenet_digits.yaml"), "--trainer.accelerator=cpu", *QUIET]
TWO_LAYER = ["--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--trainer.accelerator=cpu", *QUIET]


def last_checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.slow
def test_sigkill_after_an_epoch_then_resume_auto_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    # The LeNet recipe draws random affine augmentation every batch: the random state must resume too.
    recipe = [*DIGITS, "--trainer.max_epochs=3"]
    whole = train_py("fit", *recipe, cwd=tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr

    killed = train_py("fit", *recipe, *KILLABLE, cwd=tmp_path / "crash", env=kill_at("after_epoch:1"))
    assert killed.returncode == -signal.SIGKILL
    resumed = train_py("fit", *recipe, "--resume=auto", cwd=tmp_path / "crash")
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from runs/lenet_digits/version_0/checkpoints/last.ckpt" in resumed.stdout + resumed.stderr

    reference = last_checkpoint(tmp_path / "whole" / "runs" / "lenet_digits" / "version_0")
    final = last_checkpoint(tmp_path / "crash" / "runs" / "lenet_digits" / "version_1")
    assert (final["epoch"], final["global_step"]) == (reference["epoch"], reference["global_step"]) == (2, 60)
    assert max_difference(final["state_dict"], reference["state_dict"]) <= 1e-6
    assert max_difference(final["optimizer_states"][0]["state"][0], reference["optimizer_states"][0]["state"][0]) <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("loader", ["tensor batches", "DataLoader"])
def test_a_mid_epoch_crash_resumes_at_the_step_and_ends_with_the_weights_of_an_uninterrupted_run(loader, tmp_path):
    every_5_steps = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", "--trainer.callbacks.every_n_train_steps=5",
                     "--trainer.callbacks.save_top_k=1", "--trainer.callbacks.filename=step-{step}"]
    recipe = [*TWO_LAYER, "--trainer.max_epochs=3", f"--data.fast_batches={loader == 'tensor batches'}", *every_5_steps]
    whole = train_py("fit", *recipe, cwd=tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr

    killed = train_py("fit", *recipe, *KILLABLE, cwd=tmp_path, env=kill_at("after_step:52"))  # mid-epoch 1 (40 steps an epoch)
    assert killed.returncode == -signal.SIGKILL
    [newest] = (tmp_path / "runs" / "two_layer_digits" / "version_0" / "checkpoints").glob("step-*.ckpt")
    assert torch.load(newest, weights_only=False)["global_step"] == 50  # at most 5 steps lost
    resumed = train_py("fit", *recipe, "--resume=auto", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming from {newest.relative_to(tmp_path)}" in resumed.stdout + resumed.stderr
    assert "not resumable" not in resumed.stderr
    steps = [int(r["step"]) for r in read_csv(tmp_path / "runs" / "two_layer_digits" / "version_1" / "metrics.csv")]
    assert min(steps) >= 50

    reference = last_checkpoint(tmp_path / "whole" / "runs" / "two_layer_digits" / "version_0")
    final = last_checkpoint(tmp_path / "runs" / "two_layer_digits" / "version_1")
    assert (final["epoch"], final["global_step"]) == (reference["epoch"], reference["global_step"]) == (2, 120)
    assert max_difference(final["state_dict"], reference["state_dict"]) <= 1e-6


@pytest.mark.slow
def test_resume_auto_passes_over_a_damaged_and_a_weights_only_newest_checkpoint(tmp_path):
    first = train_py("fit", *TWO_LAYER, "--trainer.max_epochs=1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    checkpoints = tmp_path / "runs" / "two_layer_digits" / "version_0" / "checkpoints"
    damaged = checkpoints / "zz-newest.ckpt"
    damaged.write_bytes((checkpoints / "last.ckpt").read_bytes()[:5000])  # as if cut off mid-write
    os.utime(damaged, (time.time() + 60, time.time() + 60))
    weights_only = checkpoints / "zz-weights.ckpt"  # as ModelCheckpoint(save_weights_only=True) writes it
    whole = torch.load(checkpoints / "last.ckpt", weights_only=False)
    torch.save({k: v for k, v in whole.items() if k in ("epoch", "global_step", "pytorch-lightning_version", "state_dict", "loops")},
               weights_only)
    os.utime(weights_only, (time.time() + 30, time.time() + 30))
    resumed = train_py("fit", *TWO_LAYER, "--trainer.max_epochs=2", "--resume=auto", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    output = resumed.stdout + resumed.stderr
    assert f"Skipping unreadable checkpoint {damaged.relative_to(tmp_path)}" in output
    assert f"Skipping weights-only checkpoint {weights_only.relative_to(tmp_path)}" in output
    assert "Resuming from runs/two_layer_digits/version_0/checkpoints/" in output
    assert last_checkpoint(tmp_path / "runs" / "two_layer_digits" / "version_1")["epoch"] == 1


WRITER = """
import sys, time, torch
from lightning.fabric.plugins.io import TorchCheckpointIO
path, phase = sys.argv[1], sys.argv[2]
io = TorchCheckpointIO()
if phase == "first":
    io.save_checkpoint({"state_dict": {"w": torch.ones(4)}, "tag": "first"}, path)
    sys.exit(0)
real_write = None
import fsspec.implementations.local as local
class SlowFile(local.LocalFileOpener):
    def write(self, data):
        half = len(data) // 2
        super().write(data[:half]); self.flush()
        open(path + ".writing", "w").close()
        time.sleep(60)
local.LocalFileOpener = SlowFile
io.save_checkpoint({"state_dict": {"w": torch.zeros(1_000_000)}, "tag": "second"}, path)
"""


def test_a_process_killed_while_writing_a_checkpoint_leaves_the_previous_one_intact(tmp_path):
    path = tmp_path / "last.ckpt"
    subprocess.run([sys.executable, "-c", WRITER, str(path), "first"], check=True, timeout=120)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "second"])
    deadline = time.time() + 120
    while not Path(str(path) + ".writing").exists() and time.time() < deadline:
        time.sleep(0.1)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert torch.load(path, weights_only=True)["tag"] == "first"


def nan_rows_file(tmp_path: Path) -> str:
    """Digits as a tensor file with NaN in 3 of 1,797 rows: a few batches get a NaN loss."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32)
    x[[5, 700, 1500]] = float("nan")
    torch.save({"x": x, "y": torch.tensor(digits.target)}, tmp_path / "nan.pt")
    return str(tmp_path / "nan.pt")


@pytest.mark.slow
def test_a_nan_loss_stops_with_the_step_named_or_is_skipped_by_option(tmp_path):
    recipe = [*TWO_LAYER, "--trainer.max_epochs=2", "--data.dataset=null", f"--data.path={nan_rows_file(tmp_path)}",
              "--data.standardize=false"]
    stopped = train_py("fit", *recipe, cwd=tmp_path / "stop")
    assert stopped.returncode == 2
    [line] = [l for l in stopped.stderr.splitlines() if l.startswith("error:")]
    assert "the loss or its gradients are NaN/inf at step" in line and "action: skip" in line

    skipped = train_py("fit", *recipe, "--trainer.callbacks.init_args.action=skip", cwd=tmp_path / "skip")
    assert skipped.returncode == 0, skipped.stderr
    final = last_checkpoint(tmp_path / "skip" / "runs" / "two_layer_digits" / "version_0")
    assert all(torch.isfinite(t).all() for t in final["state_dict"].values())
    skips = [l for l in (skipped.stdout + skipped.stderr).splitlines() if l.startswith("skipped the update at step")]
    assert 1 <= len(skips) <= 6  # 3 NaN rows, in at most 3 batches an epoch
