"""Scale-out with real processes on CPU (gloo): DDP through Lightning's launcher and torchrun, two
simulated nodes, gradient accumulation and SyncBatchNorm, each compared with one process."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from conftest import KILLABLE, QUIET, REPO, kill_at, make_image_tree, read_csv, train_py
from project.datamodules import LoaderOptions, TensorDataModule
from project.engine.distributed import CPUSyncBatchNorm, SyncBatchNormPlugin, torchrun_counts, warn_if_restarts_share_the_store
from project.errors import UserError

TORCHRUN = (sys.executable, "-m", "torch.distributed.run")
# The two-layer net (no BatchNorm, no dropout) on the 1,258 training digits: a global batch of 74
# is 17 steps per epoch, 37 per rank on 2 ranks.
RECIPE = [
    "--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--trainer.max_epochs=2",
    "--trainer.accelerator=cpu", "--data.loader.global_batch_size=74", *QUIET,
]
TWO_DDP = ["--trainer.devices=2", "--trainer.strategy=ddp"]
RUN = Path("runs", "two_layer_digits")
pytestmark = pytest.mark.xdist_group("several_processes")  # one such test at a time (pyproject.toml)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tolerance: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name].double(), b[name].double(), atol=tolerance, rtol=0), name


def validation_rows(run_dir: Path) -> list[dict[str, str]]:
    return [r for r in read_csv(run_dir / "metrics.csv") if r.get("val/acc")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """The reference: the recipe on one process."""
    cwd = tmp_path_factory.mktemp("one_process")
    result = train_py("fit", *RECIPE, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd / RUN / "version_0"


@pytest.mark.slow
def test_two_ddp_processes_train_the_weights_of_one_process_with_the_same_global_batch(one_process, tmp_path):
    overlay = ["--config", str(REPO / "configs" / "trainer" / "ddp.yaml"), "--trainer.accelerator=cpu"]
    result = train_py("fit", *RECIPE, *overlay, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ddp = tmp_path / RUN / "version_0"
    assert_same_weights(weights(ddp), weights(one_process))
    for ours, reference in zip(validation_rows(ddp), validation_rows(one_process), strict=True):
        assert ours["val/acc"] == reference["val/acc"]  # 180 samples split 90/90: each counted once
        assert float(ours["val/loss"]) == pytest.approx(float(reference["val/loss"]), abs=1e-6)


@pytest.mark.slow
def test_torchrun_fit_then_test_and_predict_equal_one_process(one_process, tmp_path):
    torchrun = (*TORCHRUN, "--standalone", "--nproc_per_node=2")
    fit = train_py("fit", *RECIPE, cwd=tmp_path, launcher=torchrun)
    assert fit.returncode == 0, fit.stderr
    run = tmp_path / RUN / "version_0"
    assert sorted(p.name for p in (tmp_path / RUN).iterdir()) == ["version_0"]  # rank 0 alone made the run
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(checkpoints) == 2 and "last.ckpt" in checkpoints
    assert_same_weights(weights(run), weights(one_process))
    record = json.loads((run / "record.json").read_text())
    assert record["launcher"] == "torchrun" and record["devices"]["processes"] == 2
    assert "  devices: auto\n" in (run / "config.yaml").read_text()  # the Trainer got torchrun's count; the config was not rewritten

    best = next((run / "checkpoints").glob("best-*.ckpt"))
    for launcher in (torchrun, ()):
        for subcommand in ("test", "predict"):
            result = train_py(subcommand, *RECIPE, f"--ckpt_path={best}", cwd=tmp_path, launcher=launcher)
            assert result.returncode == 0, result.stderr
    ddp_test, one_test, ddp_predict, one_predict = (tmp_path / RUN / f"version_{i}" for i in (1, 3, 2, 4))
    test_metrics = [[r for r in read_csv(d / "metrics.csv") if r.get("test/acc")][-1] for d in (ddp_test, one_test)]
    assert test_metrics[0]["test/acc"] == test_metrics[1]["test/acc"]  # 359 samples: 180 + 179, none twice
    assert (ddp_test / "confusion_matrix.csv").read_text() == (one_test / "confusion_matrix.csv").read_text()
    rows = read_csv(ddp_predict / "predictions.csv")
    assert len(rows) == 359 and len({r["input"] for r in rows}) == 359
    assert (ddp_predict / "predictions.csv").read_text() == (one_predict / "predictions.csv").read_text()


@pytest.mark.slow
def test_torchrun_restarts_a_group_that_lost_a_rank_and_it_resumes_to_the_weights_of_one_process(one_process, tmp_path):
    every_5_steps = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", "--trainer.callbacks.every_n_train_steps=5",
                     "--trainer.callbacks.save_top_k=1", "--trainer.callbacks.filename=step-{step}"]
    torchrun = (*TORCHRUN, "--standalone", "--nproc_per_node=2", "--max-restarts=1")
    # Rank 1 is SIGKILLed before step 26 (mid-epoch 1; 17 steps an epoch), after the step-25 checkpoint.
    env = kill_at("after_step:25:1", TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    result = train_py("fit", *RECIPE, "--resume=auto", *every_5_steps, *KILLABLE, cwd=tmp_path, launcher=torchrun, env=env)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "exitcode: -9" in output  # the kill happened and torchrun saw it
    assert "Resuming from runs/two_layer_digits/version_0/checkpoints/step-step=25.ckpt" in output
    assert sorted(p.name for p in (tmp_path / RUN).iterdir()) == ["version_0", "version_1"]
    final = torch.load(tmp_path / RUN / "version_1" / "checkpoints" / "last.ckpt", weights_only=False)
    assert (final["epoch"], final["global_step"]) == (1, 34)
    assert_same_weights(final["state_dict"], weights(one_process))


@pytest.mark.slow
def test_sigterm_to_torchrun_saves_exits_non_zero_and_resume_auto_ends_with_the_weights_of_one_process(one_process, tmp_path):
    torchrun = (*TORCHRUN, "--standalone", "--nproc_per_node=2")
    # As a scheduler would: SIGTERM to torchrun before step 21 (mid-epoch 1); torchrun passes it on to both ranks.
    started = time.monotonic()
    stopped = train_py("fit", *RECIPE, *KILLABLE, cwd=tmp_path, launcher=torchrun, env=kill_at("after_step:20:0:SIGTERM:parent"))
    assert stopped.returncode != 0 and time.monotonic() - started < 60, stopped.stderr[-3000:]
    checkpoint = RUN / "version_0" / "checkpoints" / "interrupted.ckpt"
    # The step it lands on depends on how busy the machine is: what it must do is save and say so.
    assert re.search(rf"stopped by SIGTERM after step \d+: saved {re.escape(str(checkpoint))}", stopped.stderr), stopped.stderr[-3000:]
    resumed = train_py("fit", *RECIPE, "--resume=auto", cwd=tmp_path, launcher=torchrun)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {checkpoint}" in resumed.stdout + resumed.stderr
    final = torch.load(tmp_path / RUN / "version_1" / "checkpoints" / "last.ckpt", weights_only=False)
    assert (final["epoch"], final["global_step"]) == (1, 34)
    assert_same_weights(final["state_dict"], weights(one_process))


def test_torchrun_restarts_without_their_own_store_are_warned_about(monkeypatch, capsys):
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "1")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    warn_if_restarts_share_the_store()
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun" in capsys.readouterr().err
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")
    warn_if_restarts_share_the_store()
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_two_nodes_with_a_c10d_rendezvous_train_the_weights_of_one_process(one_process, tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [
        subprocess.Popen(
            [*TORCHRUN, "--nnodes=2", "--nproc_per_node=1", f"--node_rank={rank}", "--rdzv_backend=c10d",
             f"--rdzv_endpoint={endpoint}", "--rdzv_id=two-nodes", str(REPO / "train.py"), "fit", *RECIPE],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for rank in (0, 1)
    ]
    for node in nodes:
        _, stderr = node.communicate(timeout=600)
        assert node.returncode == 0, stderr
    assert sorted(p.name for p in (tmp_path / RUN).iterdir()) == ["version_0"]
    assert_same_weights(weights(tmp_path / RUN / "version_0"), weights(one_process))


def test_a_global_batch_that_does_not_divide_across_ranks_is_refused():
    data = TensorDataModule(dataset="digits", loader=LoaderOptions(global_batch_size=75))

    class TwoRanks:
        world_size, global_rank, accumulate_grad_batches = 2, 0, 1

    data.trainer = TwoRanks()  # type: ignore[assignment]
    with pytest.raises(UserError, match="global_batch_size=75 does not divide into 2 device"):
        data.batch_size_per_device()
    data.loader.global_batch_size = 74
    assert data.batch_size_per_device() == 37
    TwoRanks.accumulate_grad_batches = 2
    with pytest.raises(UserError, match="multiple of 4"):
        data.batch_size_per_device()


def test_batch_size_and_global_batch_size_are_exclusive():
    with pytest.raises(UserError, match="not both"):
        TensorDataModule(dataset="digits", loader=LoaderOptions(global_batch_size=64, batch_size=32))


@pytest.mark.slow
def test_a_non_dividing_global_batch_under_ddp_exits_with_one_message_per_rank(tmp_path):
    result = train_py("fit", *RECIPE, *TWO_DDP, "--data.loader.global_batch_size=75", cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "error: data.loader.global_batch_size=75 does not divide" in line]
    # Rank 0 says it; rank 1 met the same problem during DDP and says so too, as its own.
    assert sorted(line.split("error:")[0] for line in lines) == ["", "(rank 1) "]
    assert "Traceback" not in result.stderr


def test_torchrun_sets_devices_when_auto_and_refuses_a_mismatch(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    trainer = {"devices": "auto", "num_nodes": 1}
    assert torchrun_counts(trainer) == {"devices": 2, "num_nodes": 2}  # the Trainer's; the config keeps auto
    assert trainer == {"devices": "auto", "num_nodes": 1}
    torchrun_counts({"devices": 2, "num_nodes": 2})  # agrees: accepted
    with pytest.raises(UserError, match="torchrun started 4 processes .* set --trainer.devices=2 --trainer.num_nodes=2"):
        torchrun_counts({"devices": 3, "num_nodes": 1})


def test_main_closes_the_process_group_it_leaves_behind(monkeypatch, tmp_path):
    # A process group left open at exit made a torchrun rank abort now and then (SIGABRT from gloo threads).
    import project.tools.cli

    def run_that_opens_a_group(rooms, args):
        store = torch.distributed.FileStore(str(tmp_path / "store"), 1)
        torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)

    monkeypatch.setattr(project.tools.cli, "ProjectCLI", run_that_opens_a_group)
    project.tools.cli.main([])
    assert not torch.distributed.is_initialized()


def _sync_batchnorm_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    full_batch = torch.randn(8, 3, 5, 5) * 3 + 1  # both ranks build it; each takes its half
    layer = SyncBatchNormPlugin().apply(nn.Sequential(nn.BatchNorm2d(3, momentum=0.3)))
    half = full_batch[rank * 4 : (rank + 1) * 4].clone().requires_grad_(True)
    output = layer(half)
    (output * torch.arange(output.numel()).view_as(output)).sum().backward()
    torch.save({"output": output.detach(), "input_grad": half.grad, "weight_grad": layer[0].weight.grad,
                "running_mean": layer[0].running_mean, "running_var": layer[0].running_var,
                "type": type(layer[0]).__name__}, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_sync_batchnorm_on_two_cpu_processes_equals_batchnorm_over_the_whole_batch(tmp_path):
    mp.spawn(_sync_batchnorm_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["type"] == CPUSyncBatchNorm.__name__

    torch.manual_seed(0)
    full_batch = (torch.randn(8, 3, 5, 5) * 3 + 1).requires_grad_(True)
    plain = nn.BatchNorm2d(3, momentum=0.3)
    output = plain(full_batch)
    (output * torch.cat([torch.arange(output.numel() // 2).view_as(output[:4])] * 2)).sum().backward()

    assert torch.allclose(torch.cat([r["output"] for r in ranks]), output.detach(), atol=1e-5)
    assert torch.allclose(torch.cat([r["input_grad"] for r in ranks]), full_batch.grad, atol=1e-4)
    assert torch.allclose(ranks[0]["weight_grad"] + ranks[1]["weight_grad"], plain.weight.grad, rtol=1e-5)  # DDP sums
    for r in ranks:
        assert torch.allclose(r["running_mean"], plain.running_mean, atol=1e-6)
        assert torch.allclose(r["running_var"], plain.running_var, atol=1e-5)


def test_sync_batchnorm_conversion_keeps_parameters_and_statistics():
    original = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm1d(2)))
    original[1].running_mean.fill_(0.5)
    converted = SyncBatchNormPlugin().apply(original)
    assert [type(m) for m in converted.modules()].count(CPUSyncBatchNorm) == 2
    assert torch.equal(converted[1].running_mean, torch.full((4,), 0.5))
    reference = nn.BatchNorm2d(4)
    reference.running_mean.fill_(0.5)
    x = torch.randn(2, 4, 3, 3)
    assert torch.allclose(converted[1](x), reference(x))  # one process: plain BatchNorm
    assert torch.allclose(converted[1].running_mean, reference.running_mean)


@pytest.mark.slow
def test_the_slurm_script_trains_under_slurm_variables(tmp_path):
    """``sbatch scripts/slurm.sbatch`` on a one-node, one-task allocation, with ``srun`` standing in."""
    shim = tmp_path / "bin" / "srun"
    shim.parent.mkdir()
    shim.write_text('#!/bin/sh\nexec "$@"\n')
    shim.chmod(0o755)
    slurm = {"SLURM_NNODES": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train",
             "SLURM_NODELIST": "localhost", "SLURM_SUBMIT_DIR": str(REPO)}
    env = {**os.environ, **slurm, "PATH": f"{shim.parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "slurm.sbatch"), str(REPO / "configs" / "two_layer_digits.yaml"),
         "--trainer.max_epochs=1", "--trainer.accelerator=cpu", f"--trainer.logger.init_args.save_dir={tmp_path}/runs",
         f"--trainer.default_root_dir={tmp_path}", *QUIET],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / RUN / "version_0" / "checkpoints" / "last.ckpt").is_file()


# The default job as it is, in float64: 1,257 training digits, a global batch of 64 (19 full steps
# and one of 41), random augmentation on (each sample's draws come from the run seed, the epoch and
# the sample, engine.data.draw_seeds).
DIGITS = ["--config", str(REPO / "configs" / "lenet_digits.yaml"), "--trainer.precision=64-true", "--trainer.max_epochs=3",
          "--trainer.accelerator=cpu", *QUIET]
FLOAT64 = 1e-9  # what float64 runs that differ in their process layout or micro-batches agree to
VARIANTS = {  # plain DDP with a global batch: test_two_ddp_processes_train_the_weights_of_one_process...
    "accumulate 2": ["--trainer.accumulate_grad_batches=2"],
    "2 ddp processes, accumulate 2": [*TWO_DDP, "--trainer.accumulate_grad_batches=2"],
}


def train_losses(run_dir: Path) -> list[float]:
    return [float(r["train/loss"]) for r in read_csv(run_dir / "metrics.csv") if r.get("train/loss")]


@pytest.fixture(scope="module")
def digits_one_process(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("digits_one_process")
    result = train_py("fit", *DIGITS, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "runs" / "lenet_digits" / "version_0"


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_default_job_trains_the_same_weights_with_accumulation_and_ddp_although_nothing_divides(
        variant, digits_one_process, tmp_path):
    """Every sample counts alike: the short last step (41 samples) weighs as much per sample as a
    full one, and the sample that repeats to give two ranks as many counts zero."""
    result = train_py("fit", *DIGITS, *VARIANTS[variant], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "lenet_digits" / "version_0"
    assert_same_weights(weights(run), weights(digits_one_process), FLOAT64)
    # The epoch losses are float32 metric states summed in another order: float32 rounding.
    assert train_losses(run) == pytest.approx(train_losses(digits_one_process), abs=1e-6)


@pytest.mark.slow
def test_drop_last_leaves_out_the_same_samples_on_one_process_and_on_two_with_accumulation(tmp_path):
    """1,257 samples in global batches of 64: drop_last leaves 19 full steps (1,216 samples) however
    the global batch is split."""
    runs = {}
    for name, extra in (("one", []), ("ddp", [*TWO_DDP, "--trainer.accumulate_grad_batches=2"])):
        result = train_py("fit", *DIGITS, "--trainer.max_epochs=1", "--data.loader.drop_last=true", *extra, cwd=tmp_path / name)
        assert result.returncode == 0, result.stderr
        runs[name] = tmp_path / name / "runs" / "lenet_digits" / "version_0"
    steps = {name: torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] for name, run in runs.items()}
    assert steps == {"one": 19, "ddp": 19}
    assert_same_weights(weights(runs["ddp"]), weights(runs["one"]), FLOAT64)


@pytest.mark.slow
def test_the_image_folder_recipe_with_its_random_crops_trains_the_same_weights_on_any_layout_and_worker_count(tmp_path):
    """Each image's random crop draws from the run seed, the epoch and the image: one process with
    the recipe's 2 loader workers, and 2 DDP processes with 2 accumulated batches each and no
    workers, train the same float64 weights (80 images, a global batch of 16)."""
    images = make_image_tree(tmp_path / "images", per_class=40)
    recipe = ["--config", str(REPO / "configs" / "lenet_imagefolder.yaml"), f"--data.data_dir={images}",
              "--trainer.precision=64-true", "--trainer.max_epochs=2", "--trainer.accelerator=cpu", *QUIET]
    runs = {}
    for name, extra in (("one", []), ("ddp", [*TWO_DDP, "--trainer.accumulate_grad_batches=2", "--data.loader.num_workers=0"])):
        result = train_py("fit", *recipe, *extra, cwd=tmp_path / name)
        assert result.returncode == 0, result.stderr
        runs[name] = tmp_path / name / "runs" / "lenet_imagefolder" / "version_0"
    assert_same_weights(weights(runs["ddp"]), weights(runs["one"]), FLOAT64)
