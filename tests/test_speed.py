"""Speed options (model.speed.*, trainer.precision) change how the net runs, not what it computes."""

import copy

import pytest
import torch

from conftest import QUIET, REPO, read_csv, train_py
from project.errors import UserError
from project.lightning_modules import ClassificationModule, SpeedOptions
from project.nets import LeNet


def lenet_module(speed: SpeedOptions | None = None) -> ClassificationModule:
    torch.manual_seed(0)
    return ClassificationModule(LeNet, num_classes=10, input_shape=[1, 32, 32], speed=speed or SpeedOptions())


def test_channels_last_keeps_outputs_gradients_and_checkpoint_keys():
    eager = lenet_module()
    fast = lenet_module(SpeedOptions(channels_last=True))
    fast.load_state_dict(eager.state_dict())
    fast.configure_model()
    fast.configure_model()  # Lightning may call it again: a no-op
    conv = next(m for m in fast.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)

    x = torch.randn(16, 1, 32, 32)
    for module in (eager, fast):
        module.forward(x).square().sum().backward()
    torch.testing.assert_close(fast(x), eager(x), atol=1e-5, rtol=1e-5)
    for (name, a), (_, b) in zip(eager.named_parameters(), fast.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-4, rtol=1e-4, msg=name)
    assert fast.state_dict().keys() == eager.state_dict().keys()


@pytest.mark.slow
def test_compiled_net_computes_the_eager_outputs_under_the_same_keys():
    eager = lenet_module()
    compiled = copy.deepcopy(eager)
    compiled.speed = SpeedOptions(compile=True)
    compiled.configure_model()
    x = torch.randn(8, 1, 32, 32)
    torch.testing.assert_close(compiled(x), eager(x), atol=1e-5, rtol=1e-5)
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints load without compile


def test_an_unknown_compile_mode_is_refused():
    with pytest.raises(UserError, match="compile_mode must be one of default, reduce-overhead, max-autotune"):
        SpeedOptions(compile=True, compile_mode="fast")


@pytest.mark.slow
def test_bf16_channels_last_compiled_training_learns_and_its_checkpoint_tests_without_them(tmp_path):
    recipe = ["--config", str(REPO / "configs" / "lenet_digits.yaml"), "--trainer.accelerator=cpu", *QUIET,
              "--trainer.max_epochs=3"]
    fit = train_py("fit", *recipe, "--trainer.precision=bf16-mixed", "--model.init_args.speed.channels_last=true",
                   "--model.init_args.speed.compile=true", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr
    run = tmp_path / "runs" / "lenet_digits" / "version_0"
    val_acc = [float(r["val/acc"]) for r in read_csv(run / "metrics.csv") if r.get("val/acc")]
    assert val_acc[-1] > 0.85 and val_acc[-1] > val_acc[0]

    test = train_py("test", *recipe, f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}", cwd=tmp_path)  # 32-true, eager
    assert test.returncode == 0, test.stderr
    test_acc = float(read_csv(tmp_path / "runs" / "lenet_digits" / "version_1" / "metrics.csv")[-1]["test/acc"])
    assert abs(test_acc - val_acc[-1]) < 0.05
