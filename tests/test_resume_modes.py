"""Exact resume in every training mode, one test per mode: a new mode ships with its resume proof.

Each run is stopped twice on its way, both times mid-epoch, and continued each time with the same
command and ``--resume auto``: first by SIGTERM (it finishes the step under way and writes
``interrupted.ckpt``), then by SIGKILL (it continues from the newest step checkpoint, written every
4 steps). It must end at the step of the same command run through, with its weights (float32,
1e-6: the same operations in the same order). Nothing here divides evenly: 36 training images in
batches of 8 (five steps an epoch, the last of 4); 1,258 digits in global batches of 32, each
accumulated over two batches of 16 (40 steps an epoch, the last of 10 digits). With weight averaging,
the averages (the checkpoint's ``state_dict``) and the weights being trained (``current_model_state``)
must both come out equal.
The plain DDP job's resumes are in test_distributed.py, the default job's in test_reliability.py.
"""

import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import KILLABLE, QUIET, REPO, kill_at, make_image_tree, train_py
from test_finetune import planted  # noqa: F401  (the fixture: ResNet-18 weights where torchvision looks)

pytestmark = pytest.mark.slow

EVERY_4_STEPS = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", "--trainer.callbacks.every_n_train_steps=4",
                 "--trainer.callbacks.save_top_k=-1", "--trainer.callbacks.filename=step-{step}"]
TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")


def fine_tuning(config: str, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs" / config), "--data.data_dir=images", "--data.transforms.image_size=32",
            "--data.val_fraction=0.25", "--data.test_fraction=0.0", "--data.loader.num_workers=0",
            "--data.loader.global_batch_size=8", *extra]


@dataclass
class Mode:
    """A run, the fault that SIGTERMs it, the fault that SIGKILLs the resumed run, and where it ends."""

    command: list[str]
    sigterm: str  # tests/faults.py specs
    sigkill: str
    killed_resumes_from: int  # the step of the newest step checkpoint when the SIGKILL comes
    ends_at_step: int
    launcher: tuple[str, ...] = ()
    printed_on_resume: str = ""  # a line the run resumed after the SIGKILL prints


UNFREEZE = ["--model.unfreeze_at_epoch=1", "--trainer.max_epochs=3"]  # with its random crops and flips
MODES = {
    # SIGTERM after step 3 (epoch 0), SIGKILL resumed from step 8 (epoch 1, three of its five steps done).
    "head only": Mode(fine_tuning("resnet_finetune.yaml", "--model.cache_features=false", "--trainer.max_epochs=2"),
                      "after_step:2:0:SIGTERM", "after_step:9", 8, 10),
    "cached features": Mode(fine_tuning("resnet_finetune.yaml", "--trainer.max_epochs=2"), "after_step:2:0:SIGTERM", "after_step:9", 8, 10),
    "unfrozen": Mode(fine_tuning("resnet_finetune.yaml", "--model.cache_features=false", "--model.freeze_backbone=false",
                                 "--trainer.max_epochs=2"), "after_step:2:0:SIGTERM", "after_step:9", 8, 10),
    # Stopped before the unfreeze at epoch 1 and continued across it, then killed after it.
    "across the unfreeze": Mode(fine_tuning("resnet_finetune_unfreeze.yaml", *UNFREEZE), "after_step:2:0:SIGTERM", "after_step:9", 8, 15,
                                printed_on_resume="backbone trainable, as the checkpoint left it"),
    # SIGTERM on the second batch of the window after step 16 (it stops after that window's step, 17);
    # SIGKILL on the second batch of the window after step 60 (epoch 1), resumed from step 60.
    # With an EMA of the weights, clipping that bites, and MixUp or CutMix of the digits as 1x8x8
    # images, each with its partner: the averages and the pairs resume too.
    "accumulation, EMA, clipping, MixUp/CutMix": Mode(
        ["--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--trainer.accumulate_grad_batches=2", "--trainer.max_epochs=2",
         "--weight_averaging=EMA", "--trainer.gradient_clip_val=0.5", "--data.input_shape=[1,8,8]", "--model.mixup_alpha=0.2",
         "--model.cutmix_alpha=1.0"], "inside_window:16:0:SIGTERM", "inside_window:60", 60, 80),
    # SWA from epoch 1: stopped by SIGTERM before it averaged anything (step 31), killed after it
    # started (step 62, resumed from 60).
    "SWA": Mode(["--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--trainer.max_epochs=2", "--weight_averaging=SWA",
                 "--weight_averaging.start_epoch=1"], "after_step:30:0:SIGTERM", "after_step:61", 60, 80),
    # Two ranks under torchrun, SIGTERM to torchrun after the unfreeze (step 6), then rank 1 SIGKILLed
    # and the group restarted by torchrun from step 8. The backbone's gradients are averaged by the
    # module, not by DDP, before and after the resume alike.
    "DDP across the unfreeze": pytest.param(Mode(fine_tuning("resnet_finetune_unfreeze.yaml", *UNFREEZE),
                                    "after_step:5:0:SIGTERM:parent", "after_step:8:1", 8, 15, launcher=TORCHRUN,
                                    printed_on_resume="backbone trainable, as the checkpoint left it"),
                                    marks=pytest.mark.xdist_group("several_processes")),  # one such test at a time
}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_tree(tmp_path_factory.mktemp("data") / "images", per_class=24)


def last_checkpoint(cwd: Path, version: int) -> dict:
    [path] = cwd.glob(f"runs/*/version_{version}/checkpoints/last.ckpt")
    return torch.load(path, weights_only=False)


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
def test_a_run_stopped_by_sigterm_then_by_sigkill_ends_with_the_weights_of_an_uninterrupted_run(mode, planted, images, tmp_path):  # noqa: F811
    command = [*mode.command, "--trainer.accelerator=cpu", *EVERY_4_STEPS, *KILLABLE, *QUIET]
    env = {"TORCH_HOME": str(planted[0]), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    for cwd in (tmp_path / "whole", tmp_path / "stopped"):
        cwd.mkdir()
        (cwd / "images").symlink_to(images)

    def run(cwd: Path, fault: str, *extra: str, launcher: tuple[str, ...] = mode.launcher):
        return train_py("fit", *command, *extra, cwd=cwd, launcher=launcher, env=kill_at(fault, **env))

    whole = run(tmp_path / "whole", "")
    assert whole.returncode == 0, whole.stderr[-3000:]

    stopped = run(tmp_path / "stopped", mode.sigterm)
    stopped_after = int(mode.sigterm.split(":")[1]) + 1  # the step under way when the signal came is finished
    assert stopped.returncode != 0 and f"stopped by SIGTERM after step {stopped_after}" in stopped.stderr, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr.split("stopped by SIGTERM")[0]
    if mode.launcher:  # torchrun sees rank 1 die and starts the group again, which resumes by itself
        resumed = run(tmp_path / "stopped", mode.sigkill, "--resume=auto", launcher=(*mode.launcher, "--max-restarts=1"))
        assert "exitcode: -9" in resumed.stdout + resumed.stderr, resumed.stderr[-3000:]
    else:
        killed = run(tmp_path / "stopped", mode.sigkill, "--resume=auto")
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        resumed = run(tmp_path / "stopped", "", "--resume=auto")
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"checkpoints/step-step={mode.killed_resumes_from}.ckpt" in output.split("Resuming from ")[-1].splitlines()[0], output[-3000:]
    assert mode.printed_on_resume in output

    expected, final = last_checkpoint(tmp_path / "whole", 0), last_checkpoint(tmp_path / "stopped", 2)  # versions 0 and 1 were stopped
    assert final["global_step"] == expected["global_step"] == mode.ends_at_step
    for key in ("state_dict", "current_model_state"):  # the latter: the weights being trained, beside their average
        assert (key in final) == (key in expected) == (key == "state_dict" or "--weight_averaging" in " ".join(mode.command))
        if key in expected:
            assert final[key].keys() == expected[key].keys()
            worst = max((final[key][k].float() - expected[key][k].float()).abs().max().item() for k in expected[key])
            assert worst <= 1e-6, f"{key}: largest weight difference {worst:.3g}"
    assert final.get("averaged_steps") == expected.get("averaged_steps")
