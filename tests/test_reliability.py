"""Crashes and bad numbers, with real processes and real SIGKILLs: exact resume, auto-resume,
checkpoints that survive a kill mid-write, and non-finite losses."""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from conftest import KILLABLE, QUIET, REPO, kill_at, read_csv, train_py
from project.errors import UserError

DIGITS = ["--config", str(REPO / "configs" / "lenet_digits.yaml"), "--trainer.accelerator=cpu", *QUIET]
TWO_LAYER = ["--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--trainer.accelerator=cpu", *QUIET]
NAN_EVERY_THIRD = '--model.loss={"class_path": "conftest.NaNEveryThirdCall"}'
ALWAYS_NAN = '--model.loss={"class_path": "conftest.AlwaysNaN"}'


def last_checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)


def assert_holds_the_whole_run(first: Path, resumed: Path, step: int) -> list[dict[str, str]]:
    """The resumed run's metrics.csv starts with the first run's rows before ``step`` (the
    checkpoint's), as that run logged them; its own rows follow. Returns the resumed run's rows."""
    def filled(row: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in row.items() if v}

    before, after = read_csv(first / "metrics.csv"), read_csv(resumed / "metrics.csv")
    earlier = [filled(r) for r in before if int(r["step"]) < step]
    assert earlier and [filled(r) for r in after if int(r["step"]) < step] == earlier
    return after


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
def test_a_mid_epoch_crash_resumes_at_the_step_and_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    """With a DataLoader; the SIGTERM test below resumes mid-epoch with tensor batches."""
    every_5_steps = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", "--trainer.callbacks.every_n_train_steps=5",
                     "--trainer.callbacks.save_top_k=1", "--trainer.callbacks.filename=step-{step}"]
    recipe = [*TWO_LAYER, "--trainer.max_epochs=3", "--data.fast_batches=false", *every_5_steps]
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
    runs = tmp_path / "runs" / "two_layer_digits"
    assert_holds_the_whole_run(runs / "version_0", runs / "version_1", 50)  # the rows of steps 50-52 are not the run's

    reference = last_checkpoint(tmp_path / "whole" / "runs" / "two_layer_digits" / "version_0")
    final = last_checkpoint(tmp_path / "runs" / "two_layer_digits" / "version_1")
    assert (final["epoch"], final["global_step"]) == (reference["epoch"], reference["global_step"]) == (2, 120)
    assert max_difference(final["state_dict"], reference["state_dict"]) <= 1e-6


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The two-layer recipe for 3 epochs (40 steps each), run through: the weights to end with."""
    cwd = tmp_path_factory.mktemp("uninterrupted")
    result = train_py("fit", *TWO_LAYER, "--trainer.max_epochs=3", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "runs" / "two_layer_digits" / "version_0"


def assert_ends_like(run: Path, reference: Path) -> None:
    final, expected = last_checkpoint(run), last_checkpoint(reference)
    assert (final["epoch"], final["global_step"]) == (expected["epoch"], expected["global_step"]) == (2, 120)
    assert max_difference(final["state_dict"], expected["state_dict"]) <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_or_ctrl_c_saves_a_checkpoint_exits_128_plus_it_and_resume_auto_finishes_like_an_uninterrupted_run(
        stop, uninterrupted, tmp_path):
    recipe = [*TWO_LAYER, "--trainer.max_epochs=3"]
    stopped = train_py("fit", *recipe, *KILLABLE, cwd=tmp_path, env=kill_at(f"after_step:52:0:{stop.name}"))
    assert stopped.returncode == 128 + stop, stopped.stderr[-3000:]
    checkpoint = Path("runs", "two_layer_digits", "version_0", "checkpoints", "interrupted.ckpt")
    assert f"stopped by {stop.name} after step 53: saved {checkpoint}; the same command with --resume auto" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert torch.load(tmp_path / checkpoint, weights_only=True)["global_step"] == 53  # the step under way finished
    resumed = train_py("fit", *recipe, "--resume=auto", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming from {checkpoint}" in resumed.stdout + resumed.stderr
    # One folder with the whole run, and the epoch the resume began inside has its training metrics.
    runs = tmp_path / "runs" / "two_layer_digits"
    after = assert_holds_the_whole_run(runs / "version_0", runs / "version_1", 53)
    assert [r["train/acc"] for r in after if r["epoch"] == "1" and r["train/acc"]]
    assert_ends_like(tmp_path / "runs" / "two_layer_digits" / "version_1", uninterrupted)


def slurm_job(tmp_path: Path, job_id: str, **extra: str) -> dict[str, str]:
    """SLURM's variables for a one-task job, and an ``scontrol`` that records what it was asked."""
    stub = tmp_path / "bin" / "scontrol"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.log\n')
    stub.chmod(0o755)
    slurm = {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
             "SLURM_NODEID": "0", "SLURM_JOB_ID": job_id, "SLURM_JOB_NAME": "train", "SLURM_NODELIST": "localhost"}
    return {**extra, **slurm, "PATH": f"{stub.parent}:{os.environ['PATH']}"}


@pytest.mark.slow
def test_slurm_requeue_continues_at_the_step_it_stopped_and_a_new_job_starts_afresh(uninterrupted, tmp_path):
    recipe = [*TWO_LAYER, "--trainer.max_epochs=3", "--resume=auto"]  # as scripts/slurm.sbatch runs it
    signalled = train_py("fit", *recipe, *KILLABLE, cwd=tmp_path, env=kill_at("after_step:52:0:SIGUSR1", **slurm_job(tmp_path, "4242")))
    assert signalled.returncode == 128 + signal.SIGUSR1, signalled.stderr[-3000:]
    assert "stopped by SIGUSR1 after step 53" in signalled.stderr and "SLURM job 4242 requeued" in signalled.stderr
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"
    assert not list(tmp_path.glob("hpc_ckpt_*"))

    requeued = train_py("fit", *recipe, cwd=tmp_path, env={**os.environ, **slurm_job(tmp_path, "4242")})
    assert requeued.returncode == 0, requeued.stderr
    assert "Resuming from runs/two_layer_digits/version_0/checkpoints/interrupted.ckpt" in requeued.stdout + requeued.stderr
    runs = tmp_path / "runs" / "two_layer_digits"
    assert_holds_the_whole_run(runs / "version_0", runs / "version_1", 53)  # not one step done twice, none lost
    assert_ends_like(tmp_path / "runs" / "two_layer_digits" / "version_1", uninterrupted)

    # Lightning's own requeue file, as its handler would have left it: Lightning restores it by itself under SLURM.
    shutil.copy(tmp_path / "runs" / "two_layer_digits" / "version_0" / "checkpoints" / "interrupted.ckpt", tmp_path / "hpc_ckpt_1.ckpt")
    new_job = train_py("fit", *TWO_LAYER, "--trainer.max_epochs=1", "--resume=auto", cwd=tmp_path,
                       env={**os.environ, **slurm_job(tmp_path, "4243")})
    assert new_job.returncode == 0, new_job.stderr
    output = new_job.stdout + new_job.stderr
    assert "written by SLURM job 4242, not by this job (4243)" in output and "starting afresh" in output
    assert "Set hpc_ckpt_1.ckpt aside as job-4242.hpc-ckpt-1.ckpt" in output
    assert last_checkpoint(tmp_path / "runs" / "two_layer_digits" / "version_2")["global_step"] == 40


@pytest.mark.slow
def test_resume_auto_passes_over_a_damaged_and_a_weights_only_newest_checkpoint_and_only_continues_its_own_run(tmp_path):
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
    # Another model setting makes another run: --resume auto starts it afresh and says why.
    other = train_py("fit", *TWO_LAYER, "--trainer.max_epochs=1", "--resume=auto", "--model.label_smoothing=0.1", cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    output = other.stdout + other.stderr
    assert f"Skipping unreadable checkpoint {damaged.relative_to(tmp_path)}" in output
    assert f"Skipping weights-only checkpoint {weights_only.relative_to(tmp_path)}" in output
    assert ("Not resuming from runs/two_layer_digits/version_0/checkpoints/last.ckpt: it was trained with other settings "
            "(model.label_smoothing 0.1 here, 0.0 there); starting afresh") in output
    assert last_checkpoint(tmp_path / "runs" / "two_layer_digits" / "version_1")["epoch"] == 0
    # The same settings (and a longer run) continue it.
    resumed = train_py("fit", *TWO_LAYER, "--trainer.max_epochs=2", "--resume=auto", "--model.label_smoothing=0.1", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from runs/two_layer_digits/version_1/checkpoints/" in resumed.stdout + resumed.stderr
    assert last_checkpoint(tmp_path / "runs" / "two_layer_digits" / "version_2")["epoch"] == 1
    # --ckpt_path continues the checkpoint it names, with the command line over its settings ...
    smoothed = train_py("fit", *TWO_LAYER, "--trainer.max_epochs=2", f"--ckpt_path={checkpoints / 'last.ckpt'}",
                        "--model.label_smoothing=0.2", cwd=tmp_path)
    assert smoothed.returncode == 0, smoothed.stderr
    assert "model.label_smoothing: 0.2 from the command line, not the checkpoint's 0.0" in smoothed.stdout + smoothed.stderr
    assert "label_smoothing: 0.2" in (tmp_path / "runs" / "two_layer_digits" / "version_3" / "config.yaml").read_text()
    # ... except where fit would continue the checkpoint's optimizer state regardless: refused.
    other_lr = train_py("fit", *TWO_LAYER, "--trainer.max_epochs=3", f"--ckpt_path={checkpoints / 'last.ckpt'}",
                        "--model.optimizer.lr=0.5", cwd=tmp_path)
    assert other_lr.returncode == 2
    assert [l for l in other_lr.stderr.splitlines() if l.startswith("error:")] == [
        "error: --model.optimizer.lr 0.5 differs from the checkpoint's 0.05, and fit continues the checkpoint's "
        "optimizer and schedule: drop the option, or start a new run"]


WRITER = """
import sys, time, torch
from project.engine.checkpoint_io import AtomicCheckpointIO
path, phase = sys.argv[1], sys.argv[2]
io = AtomicCheckpointIO()
if phase == "first":
    io.save_checkpoint({"state_dict": {"w": torch.ones(4)}, "tag": "first"}, path)
    sys.exit(0)
real_save = torch.save
def slow_save(obj, file):  # half the bytes, then the kill arrives
    real_save(obj, file)
    file.truncate(file.tell() // 2)
    file.flush()
    open(path + ".writing", "w").close()
    time.sleep(60)
torch.save = slow_save
io.save_checkpoint({"state_dict": {"w": torch.zeros(1_000_000)}, "tag": "second"}, path)
"""
OTHER_FILE_SYSTEM = Path("/dev/shm")


@pytest.mark.skipif(not OTHER_FILE_SYSTEM.is_dir(), reason="needs /dev/shm as a second file system")
def test_a_process_killed_while_writing_a_checkpoint_leaves_the_previous_one_whole_when_tmpdir_is_another_disk(tmp_path):
    assert os.stat(OTHER_FILE_SYSTEM).st_dev != os.stat(tmp_path).st_dev
    tmpdir = Path(tempfile.mkdtemp(dir=OTHER_FILE_SYSTEM))
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    path = tmp_path / "last.ckpt"
    subprocess.run([sys.executable, "-c", WRITER, str(path), "first"], check=True, timeout=120, env=env)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "second"], env=env)
    deadline = time.time() + 120
    while not Path(str(path) + ".writing").exists() and time.time() < deadline:
        time.sleep(0.1)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert torch.load(path, weights_only=True)["tag"] == "first"
    assert not [p for p in tmpdir.rglob("*") if p.is_file()]  # nothing went through $TMPDIR (torch makes empty folders)
    shutil.rmtree(tmpdir)


def test_checkpoints_are_written_without_a_usable_tmpdir_and_a_failed_write_is_one_line(tmp_path, monkeypatch):
    from lightning.fabric.plugins.io import TorchCheckpointIO

    from project.engine.checkpoint_io import AtomicCheckpointIO

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "full"))  # as if $TMPDIR were full: nothing can be made there
    with pytest.raises(OSError):  # why the project has its own: Lightning 2.6 goes through $TMPDIR
        TorchCheckpointIO().save_checkpoint({"w": torch.ones(2)}, tmp_path / "lightning.ckpt")
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2)}, tmp_path / "ours.ckpt")
    assert torch.equal(torch.load(tmp_path / "ours.ckpt", weights_only=True)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left

    with pytest.raises(UserError, match=r"cannot write the checkpoint /dev/full/x.ckpt: "):
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2)}, "/dev/full/x.ckpt")


def nan_rows_file(tmp_path: Path) -> str:
    """Digits as a tensor file with NaN in 3 of 1,797 rows: a few batches get a NaN loss."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32)
    x[[5, 700, 1500]] = float("nan")
    torch.save({"x": x, "y": torch.tensor(digits.target)}, tmp_path / "nan.pt")
    return str(tmp_path / "nan.pt")


@pytest.mark.slow
def test_a_nan_loss_stops_with_the_step_named_or_is_skipped_by_option_and_a_run_that_skips_every_step_fails(tmp_path):
    recipe = [*TWO_LAYER, "--trainer.max_epochs=2"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}  # conftest's NaN losses: NaN steps from clean data
    stopped = train_py("fit", *recipe, NAN_EVERY_THIRD, cwd=tmp_path / "stop", env=env)
    assert stopped.returncode == 2
    [line] = [l for l in stopped.stderr.splitlines() if l.startswith("error:")]
    assert "the loss or its gradients are NaN/inf at step" in line and "action: skip" in line

    skip = "--trainer.callbacks.init_args.action=skip"
    skipped = train_py("fit", *recipe, NAN_EVERY_THIRD, skip, cwd=tmp_path / "skip", env=env)
    assert skipped.returncode == 0, skipped.stderr
    final = last_checkpoint(tmp_path / "skip" / "runs" / "two_layer_digits" / "version_0")
    assert all(torch.isfinite(t).all() for t in final["state_dict"].values())
    skips = [l for l in (skipped.stdout + skipped.stderr).splitlines() if l.startswith("skipped the update at step")]
    assert len(skips) >= 2

    nothing = train_py("fit", *recipe, ALWAYS_NAN, skip, cwd=tmp_path / "nothing", env=env)
    assert nothing.returncode == 2
    assert [l for l in nothing.stderr.splitlines() if l.startswith("error:")] == [
        "error: every one of the 40 steps of epoch 0 had NaN/inf gradients and was skipped: nothing trained. Check the data "
        "for NaN/inf (data.skip_non_finite leaves such samples out) and lower the learning rate"]
    assert "Best checkpoint" not in nothing.stdout + nothing.stderr


@pytest.mark.slow
def test_skip_non_finite_leaves_nan_rows_out_of_every_split_and_out_of_the_statistics(tmp_path):
    recipe = [*TWO_LAYER, "--trainer.max_epochs=3", "--data.dataset=null", f"--data.path={nan_rows_file(tmp_path)}",
              "--data.standardize=true", "--data.skip_non_finite=true"]
    fitted = train_py("fit", *recipe, cwd=tmp_path)
    assert fitted.returncode == 0, fitted.stderr
    assert "left out 3" not in fitted.stderr  # each split says its own count
    assert "sample(s) with NaN/inf in inputs or targets (data.skip_non_finite)" in fitted.stdout + fitted.stderr
    final = last_checkpoint(tmp_path / "runs" / "two_layer_digits" / "version_0")
    state = final["TensorDataModule"]
    assert torch.isfinite(state["mean"]).all() and torch.isfinite(state["std"]).all()
    val_acc = [float(row["val/acc"]) for row in read_csv(tmp_path / "runs" / "two_layer_digits" / "version_0" / "metrics.csv")
               if row.get("val/acc")]
    assert val_acc[-1] > 0.8  # far above chance (0.1): the inputs are finite


def test_a_checkpoint_on_a_full_disk_is_one_line_and_a_written_one_is_as_readable_as_other_files(tmp_path, monkeypatch):
    """torch.save meets a full disk as a RuntimeError whose context is the OSError; the previous
    checkpoint stays whole, no temporary file is left, and checkpoints get the umask's mode."""
    import errno
    import os

    from project.engine import checkpoint_io
    from project.engine.checkpoint_io import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    old_umask = os.umask(0o022)
    try:
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2)}, path)
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o644  # mkstemp alone: 0600

    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, file):
            self.file, self.written = file, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.file.write(data)

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    monkeypatch.setattr(checkpoint_io.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(UserError, match=r"^cannot write the checkpoint .*last.ckpt: No space left on device$"):
        AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(10_000)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_a_signal_during_predict_stops_it_with_128_plus_the_signal_and_no_predictions(tmp_path, monkeypatch):
    """Lightning logs a SIGTERM during predict and carries on to exit 0: a scheduler's stop was not
    obeyed. Now it stops after the batch, writes no partial predictions.csv and leaves no run folder."""
    from project.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(REPO / "tests"))
    sigint_handler = signal.getsignal(signal.SIGINT)
    main(["fit", *TWO_LAYER, "--trainer.max_epochs=1"])
    last = tmp_path / "runs" / "two_layer_digits" / "version_0" / "checkpoints" / "last.ckpt"
    monkeypatch.setenv("PROJECT_FAULT", "predict_batch:2:0:SIGTERM")
    with pytest.raises(SystemExit) as stopped:
        main(["predict", *TWO_LAYER, f"--ckpt_path={last}", "--data.loader.global_batch_size=50",
              *KILLABLE])
    assert stopped.value.code == 128 + signal.SIGTERM
    assert sorted(p.name for p in (tmp_path / "runs" / "two_layer_digits").iterdir()) == ["version_0"]
    assert signal.getsignal(signal.SIGINT) is sigint_handler  # put back after the run


@pytest.mark.slow
def test_training_a_one_cycle_run_longer_is_refused_with_a_command_that_starts_from_its_weights(tmp_path):
    recipe = DIGITS  # one-cycle lr over all steps
    first = train_py("fit", *recipe, "--trainer.max_epochs=1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    runs = tmp_path / "runs" / "lenet_digits"
    longer = train_py("fit", *recipe, "--trainer.max_epochs=2", "--resume=auto", cwd=tmp_path)
    assert longer.returncode == 2
    [line] = [line for line in longer.stderr.splitlines() if line.startswith("error:")]
    assert "ends at step 20 and this run would take 40" in line and "Traceback" not in longer.stderr
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]  # the refused run wrote nothing
    command = shlex.split(line.split("start a new fit from its weights: ")[1])
    pasted = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert pasted.returncode == 0, pasted.stderr
    assert "Starting from the weights of runs/lenet_digits/version_0/checkpoints/last.ckpt" in pasted.stdout + pasted.stderr
    started = torch.load(runs / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last_checkpoint(runs / "version_1")["global_step"] == 40 and started["global_step"] == 20
