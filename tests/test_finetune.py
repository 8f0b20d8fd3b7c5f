"""Fine-tuning a torchvision ResNet: planted weights load offline, frozen parts stay bitwise equal,
unfreezing trains the backbone at its own rate (one process and DDP), cached features equal live."""

import os
import shlex
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import torch
import torchvision
from lightning.pytorch import Callback, Trainer, seed_everything

from conftest import KILLABLE, QUIET, REPO, kill_at, make_image_tree, train_py
from project.datamodules import ImageFolderDataModule, LoaderOptions
from project.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransforms
from project.errors import UserError
from project.engine.schedules import LRSchedule
from project.lightning_modules import FineTuningModule
from project.nets import TorchvisionClassifier

RESNET18_FILE = "resnet18-f37072fd.pth"  # the file name torchvision's IMAGENET1K_V1 weights cache under


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A ``$TORCH_HOME`` holding a ResNet-18 state dict where torchvision caches IMAGENET1K_V1."""
    torch_home = tmp_path_factory.mktemp("torch_home")
    torch.manual_seed(123)
    state = torchvision.models.resnet18().state_dict()
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, torch_home / "hub" / "checkpoints" / RESNET18_FILE)
    return torch_home, state


@pytest.fixture
def torch_home(planted, monkeypatch) -> dict[str, torch.Tensor]:
    monkeypatch.setenv("TORCH_HOME", str(planted[0]))
    return planted[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_tree(tmp_path_factory.mktemp("data") / "images", per_class=24)


def resnet(**kwargs) -> Callable[[int, tuple[int, ...]], TorchvisionClassifier]:
    """The net as the CLI gives it to a module: everything but the class count and input shape."""
    return partial(TorchvisionClassifier, name="resnet18", weights="IMAGENET1K_V1", **kwargs)


def image_data(root: Path, **transforms) -> ImageFolderDataModule:
    options = ImageTransforms(image_size=32, mean=IMAGENET_MEAN, std=IMAGENET_STD, **transforms)
    return ImageFolderDataModule(data_dir=str(root), transforms=options, val_fraction=0.25, test_fraction=0.0,
                                 loader=LoaderOptions(global_batch_size=8))


def fit(module: FineTuningModule, data: ImageFolderDataModule, epochs: int, callbacks: list[Callback] = ()) -> Trainer:
    trainer = Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))
    trainer.fit(module, datamodule=data)
    return trainer


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_planted_torchvision_weights_load_without_network_and_equal_the_file(torch_home):
    net = resnet()(2, (3, 32, 32))
    for name, tensor in net.backbone.state_dict().items():
        assert torch.equal(tensor, torch_home[name]), name
    assert "fc.weight" not in net.backbone.state_dict() and net.head[-1].out_features == 2


def test_weights_that_are_not_there_name_the_file_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _offline)
    with pytest.raises(UserError, match=f"put it at {tmp_path / 'empty' / 'hub' / 'checkpoints' / RESNET18_FILE}"):
        resnet()(2, (3, 32, 32))


def _offline(*args, **kwargs):
    raise OSError("no network")


def test_a_local_state_dict_loads_with_weights_only_and_a_mismatch_is_named(torch_home, tmp_path):
    torch.save(torch_home, tmp_path / "mine.pt")
    net = TorchvisionClassifier(3, (3, 32, 32), "resnet18", weights=None, weights_path=str(tmp_path / "mine.pt"))
    assert torch.equal(net.backbone.conv1.weight, torch_home["conv1.weight"])

    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "resnet34.pt")
    with pytest.raises(UserError, match=r"does not fit the ResNet backbone: .*unexpected \(e\.g\. \['layer1\.2"):
        TorchvisionClassifier(10, (3, 32, 32), "resnet18", weights=None, weights_path=str(tmp_path / "resnet34.pt"))
    torch.save({"conv1.weight": object()}, tmp_path / "pickled.pt")  # not plain tensors: weights_only refuses
    with pytest.raises(UserError, match="cannot read weights file .*pickled.pt as a state dict of tensors"):
        TorchvisionClassifier(10, (3, 32, 32), "resnet18", weights=None, weights_path=str(tmp_path / "pickled.pt"))


def test_frozen_backbone_stays_bitwise_equal_buffers_included_and_the_head_learns(torch_home, images):
    seed_everything(0)
    module = FineTuningModule(resnet(), num_classes=2, input_shape=[3, 32, 32], optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9))
    before = snapshot(module.net)
    optimizer = module.optimizer_factory([p for p in module.parameters() if p.requires_grad])
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in module.net.head.parameters()}
    fit(module, image_data(images), epochs=2)
    after = snapshot(module.net)
    backbone = [k for k in before if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone)
    for name in backbone:
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["head.0.weight"], after["head.0.weight"])


class EpochEndWeights(Callback):
    def __init__(self) -> None:
        self.conv1: list[torch.Tensor] = []
        self.lrs: list[list[float]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.conv1.append(pl_module.net.backbone.conv1.weight.detach().clone())
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])


def test_unfreeze_at_epoch_1_trains_the_backbone_from_epoch_1_at_the_scaled_rate(torch_home, images):
    seed_everything(0)
    module = FineTuningModule(resnet(), num_classes=2, input_shape=[3, 32, 32], unfreeze_at_epoch=1, backbone_lr_scale=0.1,
                              optimizer=lambda p: torch.optim.SGD(p, lr=0.05), lr_schedule=LRSchedule(name="none"))
    start = module.net.backbone.conv1.weight.detach().clone()
    running_mean = module.net.backbone.bn1.running_mean.clone()
    record = EpochEndWeights()
    fit(module, image_data(images), epochs=3, callbacks=[record])
    assert torch.equal(record.conv1[0], start)  # epoch 0: frozen
    assert not torch.equal(record.conv1[1], start) and not torch.equal(record.conv1[2], record.conv1[1])
    assert record.lrs == [[0.05, pytest.approx(0.005)]] * 3
    assert torch.equal(module.net.backbone.bn1.running_mean, running_mean)  # train_bn: false keeps statistics


def test_cached_features_train_the_same_head_as_live_features(torch_home, images):
    heads = []
    for cache in (False, True):
        seed_everything(0)
        module = FineTuningModule(resnet(), num_classes=2, input_shape=[3, 32, 32], cache_features=cache,
                                  optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9))
        data = image_data(images)
        trainer = fit(module, data, epochs=3)
        heads.append(snapshot(module.net.head))
        assert trainer.callback_metrics["val/acc"] >= 0.9
    for name in heads[0]:
        assert torch.allclose(heads[0][name], heads[1][name], atol=1e-5, rtol=0), name
    assert data.train_set[0][0].shape == (3, 32, 32)  # the image sets are back after fit


def test_cached_features_are_refused_where_they_would_be_wrong(torch_home, images):
    with pytest.raises(UserError, match="cache_features needs a backbone that stays frozen"):
        FineTuningModule(resnet(), num_classes=2, input_shape=[3, 32, 32], cache_features=True, unfreeze_at_epoch=2)
    module = FineTuningModule(resnet(), num_classes=2, input_shape=[3, 32, 32], cache_features=True)
    with pytest.raises(UserError, match=r"random augmentation \(data.transforms: horizontal_flip\)"):
        fit(module, image_data(images, horizontal_flip=0.5), epochs=1)


@pytest.mark.xdist_group("several_processes")
@pytest.mark.slow
@pytest.mark.parametrize("action", ["stop", "skip"])
def test_an_inf_gradient_on_one_rank_stops_or_skips_on_both_ranks_with_the_backbone_unfrozen(action, planted, images, tmp_path):
    """Rank 1's gradients turn inf after DDP averaged the head's and before the unfrozen backbone's
    are averaged: both ranks see the flag and take the same decision, instead of one waiting for
    the other in an all-reduce that never comes."""
    env = kill_at("inf_gradient:6:1", TORCH_HOME=str(planted[0]))  # step 6: epoch 1, the backbone unfrozen
    result = train_py(
        "fit", "--config", str(REPO / "configs" / "resnet_finetune_unfreeze.yaml"), f"--data.data_dir={images}",
        "--data.transforms.image_size=32", "--data.loader.num_workers=0", "--data.loader.global_batch_size=8",
        "--data.val_fraction=0.25", "--data.test_fraction=0.0", "--model.unfreeze_at_epoch=1", "--trainer.max_epochs=2",
        "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
        f"--trainer.callbacks.action={action}", *KILLABLE, *QUIET, cwd=tmp_path, env=env, timeout=120)
    if action == "stop":
        assert result.returncode == 2, result.stderr[-3000:]
        errors = [line for line in result.stderr.splitlines() if "error: the loss or its gradients are NaN/inf at step 6" in line]
        assert sorted(line.startswith("(rank 1) error:") for line in errors) == [False, True], result.stderr[-3000:]  # both stopped there
    else:
        assert result.returncode == 0, result.stderr[-3000:]
        assert "skipped the update at step 6" in result.stdout + result.stderr
        final = torch.load(next(tmp_path.glob("runs/*/version_0/checkpoints/last.ckpt")), weights_only=False)
        assert final["global_step"] == 10 and all(torch.isfinite(t).all() for t in final["state_dict"].values())


@pytest.mark.xdist_group("several_processes")
@pytest.mark.slow
def test_sync_batchnorm_flag_under_two_cpu_ddp_processes_trains_the_weights_of_one_process(planted, images, tmp_path):
    """`--trainer.plugins+=project.engine.distributed.SyncBatchNormPlugin` through the CLI: BatchNorm layers that train see the global batch,
    so two steps on 2 ranks x 4 images give one process's weights and statistics on 8.

    In float64 they agree to rounding. In float32 they differ by up to ~3e-4 after two steps: the
    per-rank statistics are combined in another order, and BatchNorm over a handful of values per
    channel (layer4 sees 1x1 maps here) divides by a tiny spread that magnifies the last bits.
    """
    env = {**os.environ, "TORCH_HOME": str(planted[0])}
    common = [
        "--config", str(REPO / "configs" / "resnet_finetune_unfreeze.yaml"), f"--data.data_dir={images}",
        "--data.transforms.image_size=32", "--data.transforms.random_crop_padding=0",
        "--data.transforms.horizontal_flip=0.0", "--data.loader.num_workers=0", "--data.loader.global_batch_size=8",
        "--model.freeze_backbone=false", "--model.unfreeze_at_epoch=null", "--model.train_bn=true",
        "--model.lr_schedule.name=none", "--trainer.max_epochs=1", "--trainer.precision=64-true",
        "--trainer.limit_train_batches=2", "--trainer.accelerator=cpu", *QUIET,
    ]
    results = {}
    for name, extra in (("one", []), ("ddp", ["--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.plugins+=project.engine.distributed.SyncBatchNormPlugin"])):
        result = train_py("fit", *common, *extra, cwd=tmp_path / name, env=env)
        assert result.returncode == 0, result.stderr
        checkpoint = tmp_path / name / "runs" / "resnet_finetune_unfreeze" / "version_0" / "checkpoints" / "last.ckpt"
        results[name] = torch.load(checkpoint, weights_only=False)["state_dict"]
    assert not torch.allclose(results["one"]["net.backbone.conv1.weight"].float(), planted[1]["conv1.weight"], atol=1e-3)
    assert not torch.equal(results["one"]["net.backbone.bn1.running_mean"].float(), planted[1]["bn1.running_mean"])
    for key, value in results["one"].items():
        assert torch.allclose(value.double(), results["ddp"][key].double(), atol=1e-10, rtol=0), key

@pytest.mark.slow
def test_a_fine_tuned_checkpoint_tests_offline_without_the_pretrained_weights(planted, images, tmp_path):
    """The checkpoint holds every weight: testing it needs no ImageNet file, so none is looked for."""
    fit = train_py("fit", "--config", str(REPO / "configs" / "resnet_finetune.yaml"), f"--data.data_dir={images}",
                   "--data.transforms.image_size=32", "--trainer.max_epochs=1", *QUIET, cwd=tmp_path,
                   env={**os.environ, "TORCH_HOME": str(planted[0])})
    assert fit.returncode == 0, fit.stderr[-3000:]
    test_command = shlex.split((fit.stdout + fit.stderr).split("Test it:\n", 1)[1].splitlines()[0])
    test = subprocess.run(test_command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TORCH_HOME": str(tmp_path / "no_weights_here")})
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test/acc" in test.stdout


@pytest.mark.xdist_group("several_processes")
@pytest.mark.slow
@pytest.mark.parametrize(("mode", "drop_last"), [("head only", False), ("unfreeze at 1", True)])
def test_an_image_folder_that_does_not_divide_trains_alike_with_accumulation_and_ddp(mode, drop_last, planted, images, tmp_path):
    """36 training images in global batches of 8 (4 full steps and one of 4, or 4 with drop_last):
    one process and 2 DDP processes with accumulation 2 end with the same weights."""
    env = {**os.environ, "TORCH_HOME": str(planted[0])}
    config = "resnet_finetune_unfreeze.yaml" if mode == "unfreeze at 1" else "resnet_finetune.yaml"
    common = [
        "--config", str(REPO / "configs" / config), f"--data.data_dir={images}", "--data.transforms.image_size=32",
        "--data.transforms.random_crop_padding=0", "--data.transforms.horizontal_flip=0.0",
        "--data.val_fraction=0.25", "--data.test_fraction=0.0", "--data.loader.num_workers=0",
        "--data.loader.global_batch_size=8", f"--data.loader.drop_last={drop_last}", "--trainer.max_epochs=3",
        "--trainer.accelerator=cpu", *QUIET, *(["--model.unfreeze_at_epoch=1"] if mode == "unfreeze at 1" else []),
    ]
    variants = {"one": [], "2 ddp, accumulate 2": ["--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accumulate_grad_batches=2"]}
    results = {}
    for name, extra in variants.items():
        cwd = tmp_path / name.replace(" ", "_").replace(",", "")
        result = train_py("fit", *common, *extra, cwd=cwd, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        [checkpoint] = cwd.glob("runs/*/version_0/checkpoints/last.ckpt")
        results[name] = torch.load(checkpoint, weights_only=False)
    assert {r["global_step"] for r in results.values()} == {12 if drop_last else 15}
    for key, value in results["one"]["state_dict"].items():
        assert torch.allclose(value.float(), results["2 ddp, accumulate 2"]["state_dict"][key].float(), atol=1e-5, rtol=0), key
