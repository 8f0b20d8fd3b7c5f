"""The CPU suite's promises, proven again on a CUDA GPU (``scripts/gpu_check.sh`` runs these).

Marked ``cuda`` and skipped where no GPU is. ``GPU_CHECK_ACCELERATOR=cpu`` (what
``scripts/gpu_check.sh --dry-run`` sets) runs the same tests on the CPU at small sizes and without
the GPU-only bounds, so that the normal suite keeps them wired before a GPU is at hand.
"""

import json
import os
from pathlib import Path

import pytest
import torch
import torchvision

from conftest import KILLABLE, QUIET, REPO, kill_at, make_image_tree, read_csv, train_py

ACCELERATOR = os.environ.get("GPU_CHECK_ACCELERATOR", "cuda")
DRY_RUN = ACCELERATOR != "cuda"
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not DRY_RUN and not torch.cuda.is_available(), reason="no CUDA GPU (GPU_CHECK_ACCELERATOR=cpu runs these on the CPU)"),
]
ON_DEVICE = [f"--trainer.accelerator={ACCELERATOR}", "--trainer.devices=1", *QUIET]
SHORT = ["--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2"] if DRY_RUN else []  # the dry run's sizes
DIGITS = ["--config", str(REPO / "configs" / "lenet_digits.yaml"), *ON_DEVICE]
TWO_LAYER = ["--config", str(REPO / "configs" / "two_layer_digits.yaml"), *ON_DEVICE]
# cuBLAS needs a fixed workspace for deterministic results (torch.use_deterministic_algorithms).
DETERMINISTIC = ["--trainer.deterministic=true"]
CUBLAS = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


@pytest.fixture
def figure(record_property):
    """Records a measured figure in the test's report; scripts/gpu_report.py puts it in results.md."""
    def write(text: str) -> None:
        print(text)
        record_property("figure", text)
    return write


def run_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **CUBLAS, **extra}


def checkpoint(run: Path, name: str = "last.ckpt") -> dict:
    return torch.load(run / "checkpoints" / name, weights_only=False, map_location="cpu")


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def fitted(result, cwd: Path, name: str, version: int = 0) -> Path:
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd / "runs" / name / f"version_{version}"


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_the_default_job_learns_on_the_device_and_the_record_names_the_gpu(precision, tmp_path, figure):
    epochs = ["--trainer.max_epochs=2", *SHORT] if DRY_RUN else []  # on the GPU: the whole default job, 40 epochs
    run = fitted(train_py("fit", *DIGITS, f"--trainer.precision={precision}", *epochs, cwd=tmp_path, env=run_env()), tmp_path, "lenet_digits")
    [best] = (run / "checkpoints").glob("best-*.ckpt")
    test = train_py("test", "--config", str(run / "config.yaml"), f"--ckpt_path={best}", cwd=tmp_path, env=run_env())
    tested = fitted(test, tmp_path, "lenet_digits", version=1)
    test_acc = float(read_csv(tested / "metrics.csv")[-1]["test/acc"])
    devices = json.loads((run / "record.json").read_text())["devices"]
    assert devices["precision"] == precision
    figure(f"default job, {precision}: test/acc {test_acc:.4f} on {devices['gpus'] or 'CPU'}, driver {devices['driver']}")
    if not DRY_RUN:
        assert devices["accelerator"] == "CUDAAccelerator" and devices["gpus"] and devices["driver"]
        assert test_acc >= 0.98


def test_sigterm_then_resume_auto_on_the_device_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, figure):
    recipe = [*TWO_LAYER, "--trainer.max_epochs=3", *DETERMINISTIC]
    whole = fitted(train_py("fit", *recipe, cwd=tmp_path / "whole", env=run_env()), tmp_path / "whole", "two_layer_digits")
    stopped = train_py("fit", *recipe, *KILLABLE, cwd=tmp_path, env=kill_at("after_step:52:0:SIGTERM", **CUBLAS))
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "the same command with --resume auto" in stopped.stderr
    resumed = fitted(train_py("fit", *recipe, "--resume=auto", cwd=tmp_path, env=run_env()), tmp_path, "two_layer_digits", version=1)
    final, reference = checkpoint(resumed), checkpoint(whole)
    assert (final["epoch"], final["global_step"]) == (reference["epoch"], reference["global_step"]) == (2, 120)
    difference = max_difference(final["state_dict"], reference["state_dict"])
    figure(f"resume after SIGTERM: largest weight difference {difference:.1e}")
    assert difference <= 1e-6


def test_accumulating_two_batches_trains_the_weights_of_one_in_float64_on_the_device(tmp_path, figure):
    """The default job, where nothing divides: the short last step weighs as much per sample."""
    recipe = [*DIGITS, "--data.augment=null", "--trainer.precision=64-true", f"--trainer.max_epochs={1 if DRY_RUN else 3}"]
    one = fitted(train_py("fit", *recipe, cwd=tmp_path / "one", env=run_env()), tmp_path / "one", "lenet_digits")
    two = fitted(train_py("fit", *recipe, "--trainer.accumulate_grad_batches=2", cwd=tmp_path / "two", env=run_env()),
                 tmp_path / "two", "lenet_digits")
    difference = max_difference(checkpoint(one)["state_dict"], checkpoint(two)["state_dict"])
    figure(f"accumulate 2 vs 1, float64: largest weight difference {difference:.1e}")
    assert difference <= 1e-9


def test_a_frozen_backbone_stays_bitwise_equal_to_its_pretrained_weights_on_the_device(tmp_path, figure):
    torch_home = tmp_path / "torch"
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(123)
    pretrained = torchvision.models.resnet18().state_dict()
    torch.save(pretrained, torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    images = make_image_tree(tmp_path / "images", per_class=24)
    recipe = ["--config", str(REPO / "configs" / "resnet_finetune.yaml"), *ON_DEVICE, f"--data.data_dir={images}",
              "--data.transforms.image_size=32", "--data.loader.num_workers=0", "--model.cache_features=false",
              "--trainer.max_epochs=2"]
    run = fitted(train_py("fit", *recipe, cwd=tmp_path, env=run_env(TORCH_HOME=str(torch_home))), tmp_path, "resnet_finetune")
    state = checkpoint(run)["state_dict"]
    backbone = {k.removeprefix("net.backbone."): v for k, v in state.items() if k.startswith("net.backbone.")}
    assert any("running_mean" in k for k in backbone) and len(backbone) == len(pretrained) - 2  # all but fc
    changed = [k for k, v in backbone.items() if not torch.equal(v, pretrained[k])]
    figure(f"frozen backbone: {len(backbone) - len(changed)} of {len(backbone)} tensors (buffers included) bitwise unchanged")
    assert not changed, changed


def predictions(run: Path, cwd: Path, *extra: str, version: int) -> list[dict[str, str]]:
    result = train_py("predict", "--config", str(run / "config.yaml"), f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                      *extra, cwd=cwd, env=run_env())
    return read_csv(fitted(result, cwd, "lenet_digits", version) / "predictions.csv")


def test_channels_last_and_compile_predict_what_eager_predicts_within_bf16_tolerance(tmp_path, figure):
    run = fitted(train_py("fit", *DIGITS, "--trainer.max_epochs=3", *SHORT, cwd=tmp_path, env=run_env()), tmp_path, "lenet_digits")
    eager = predictions(run, tmp_path, version=1)
    bf16 = ["--trainer.precision=bf16-mixed"]
    variants = {
        "bf16": bf16,
        "bf16 + channels_last": [*bf16, "--model.init_args.speed.channels_last=true"],
        "bf16 + channels_last + compile": [*bf16, "--model.init_args.speed.channels_last=true", "--model.init_args.speed.compile=true"],
    }
    if DRY_RUN:  # compiling takes minutes on a CPU; tests/test_speed.py checks compile there
        del variants["bf16 + channels_last + compile"]
    for version, (name, extra) in enumerate(variants.items(), start=2):
        rows = predictions(run, tmp_path, *extra, version=version)
        assert [r["input"] for r in rows] == [r["input"] for r in eager]
        agree = sum(r["predicted_class"] == e["predicted_class"] for r, e in zip(rows, eager, strict=True)) / len(rows)
        gap = max(abs(float(r["probability"]) - float(e["probability"])) for r, e in zip(rows, eager, strict=True)
                  if r["predicted_class"] == e["predicted_class"])
        figure(f"{name}: {agree:.2%} of {len(rows)} predicted classes as eager fp32, top probability within {gap:.3f}")
        assert agree >= 0.99 and gap <= 0.05, name


def test_tensors_kept_on_the_device_train_the_weights_of_tensors_copied_every_batch(tmp_path, monkeypatch, figure):
    from project.tools.cli import ProjectCLI

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", CUBLAS["CUBLAS_WORKSPACE_CONFIG"])
    recipe = ["--config", str(REPO / "configs" / "lenet_digits.yaml"), *ON_DEVICE, "--data.augment=null", *DETERMINISTIC,
              "--trainer.max_epochs=2", *SHORT, f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}"]
    weights = {}
    for resident in (False, True):
        cli = ProjectCLI(args=[*recipe, f"--data.keep_on_device={str(resident).lower()}"], run=False)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        held_on = cli.trainer.train_dataloader.dataset.tensors[0].device
        assert held_on.type == (ACCELERATOR if resident else "cpu"), held_on
        weights[resident] = {k: v.detach().cpu() for k, v in cli.model.state_dict().items()}
    difference = max_difference(weights[False], weights[True])
    figure(f"tensors kept on the device vs copied: largest weight difference {difference:.1e}")
    assert difference <= 1e-6
