"""Weight averaging, gradient clipping, test-time flips, and the lr and batch-size finders, each on
real runs: what is averaged, clipped or flipped is computed again here by hand."""

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import QUIET, REPO, make_image_tree, read_csv, train_py
from test_finetune import planted  # noqa: F401  (the fixture: ResNet-18 weights where torchvision looks)
from torch.nn import functional as F

from project.datamodules import TensorDataModule
from project.errors import UserError
from project.lightning_modules import ClassificationModule
from project.nets import LeNet

TESTS = Path(__file__).resolve().parent
RECORD_STEPS = ["--trainer.callbacks+=faults.StepWeights"]
# The default job in float64 (equivalences to 1e-9), augmentation off so that every variant sees the same inputs.
DIGITS = ["--config", str(REPO / "configs" / "lenet_digits.yaml"), "--data.augment=null", "--trainer.max_epochs=2",
          "--trainer.accelerator=cpu", "--trainer.precision=64-true", *QUIET]
RUN = Path("runs", "lenet_digits", "version_0")


def recording(path: Path) -> dict[str, str]:
    return {**os.environ, "PROJECT_STEP_WEIGHTS": str(path), "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def last(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)


def net_part(state: dict[str, torch.Tensor], like: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The net's tensors of a module's state dict (those in ``like`` only: parameters without buffers)."""
    net = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    return net if like is None else {k: net[k] for k in like}


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.slow
def test_ema_is_the_average_of_every_step_and_validation_and_export_use_it(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "fit", *DIGITS, "--weight_averaging=EMA", "--weight_averaging.decay=0.9",
         *RECORD_STEPS], cwd=tmp_path, capture_output=True, text=True, env=recording(tmp_path / "steps.pt"))
    assert result.returncode == 0, result.stderr[-3000:]
    steps = torch.load(tmp_path / "steps.pt")  # the weights at the start and after each of the 40 steps
    assert len(steps) == 41
    average = dict(steps[1])  # the first update copies the weights after step 1
    for weights in steps[2:]:
        average = {k: 0.9 * average[k] + 0.1 * weights[k] for k in average}
    checkpoint = last(tmp_path / RUN)
    assert checkpoint["averaged_steps"] == 40
    assert largest_difference(net_part(checkpoint["state_dict"]), average) < 1e-12
    assert largest_difference(net_part(checkpoint["current_model_state"]), steps[-1]) == 0
    assert largest_difference(average, steps[-1]) > 1e-3  # the average is not the last weights

    # Validation during fit saw the averaged weights: validate on the checkpoint gives its last val/loss.
    fit_loss = [float(r["val/loss"]) for r in read_csv(tmp_path / RUN / "metrics.csv") if r.get("val/loss")][-1]
    config, ckpt = str(tmp_path / RUN / "config.yaml"), str(tmp_path / RUN / "checkpoints" / "last.ckpt")
    env = recording(tmp_path / "steps.pt")  # the saved config names the recorder, which only fit uses
    validated = train_py("validate", "--config", config, "--ckpt_path", ckpt, cwd=tmp_path, env=env)
    assert validated.returncode == 0, validated.stderr[-3000:]
    assert float(re.search(r"val/loss\s*│\s*([0-9.e-]+)", validated.stdout).group(1)) == pytest.approx(fit_loss, rel=1e-6)

    exported = train_py("export", "--config", config, "--ckpt_path", ckpt, cwd=tmp_path, env=env)
    assert exported.returncode == 0, exported.stderr[-3000:]
    from safetensors.torch import load_file

    weights = load_file(tmp_path / RUN / "checkpoints" / "last.safetensors")
    assert largest_difference({k: v for k, v in weights.items() if k in average}, average) < 1e-6  # float32 export


@pytest.mark.slow
@pytest.mark.xdist_group("several_processes")
def test_ema_clipping_and_mixing_under_ddp_with_accumulation_train_the_weights_and_averages_of_one_process(tmp_path):
    """Clipping by norm 0.5 bites on most steps of this job; it is applied to each step's gradient
    after accumulation and DDP's averaging, so two ranks of two accumulated batches each clip and
    average exactly what one process does with the whole global batch. MixUp or CutMix (one per
    step) pairs each image with the one before it in the epoch's order, on whichever rank that one
    is, with one ratio per step; the soft targets go through the same per-sample loss weights, so
    the short last step (41 images) and the image repeated to even out the ranks count right."""
    features = ["--weight_averaging=EMA", "--trainer.gradient_clip_val=0.5", "--model.mixup_alpha=0.2", "--model.cutmix_alpha=1.0"]
    runs = {}
    for name, extra in (("one", []), ("ddp", ["--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accumulate_grad_batches=2"])):
        result = train_py("fit", *DIGITS, *features, *extra, cwd=tmp_path / name)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = last(tmp_path / name / RUN)
    for key in ("state_dict", "current_model_state"):
        assert largest_difference(runs["ddp"][key], runs["one"][key]) < 1e-9, key
    rows = read_csv(tmp_path / "one" / RUN / "metrics.csv")
    clipped = [float(r["train/clipped_steps"]) for r in rows if r.get("train/clipped_steps")]
    norms = [float(r["train/grad_norm"]) for r in rows if r.get("train/grad_norm")]
    assert len(clipped) == 2 and all(0 < c <= 1 for c in clipped), clipped
    assert len(norms) == 4 and max(norms) > 0.5  # logged before clipping, every 10 steps


@pytest.mark.slow
def test_clipping_by_value_bounds_each_gradient_entry(tmp_path):
    """SGD at lr 1 for one step: clipped at 1e-3 by value, no weight moves by more than 1e-3."""
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "fit", *DIGITS, "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.gradient_clip_val=0.001",
         "--trainer.gradient_clip_algorithm=value", "--model.optimizer=torch.optim.SGD", "--model.optimizer.lr=1.0",
         "--model.optimizer.weight_decay=0",  # SGD keeps the options it shares with the recipe's AdamW (jsonargparse)
         "--model.lr_schedule.name=none", *RECORD_STEPS], cwd=tmp_path, capture_output=True, text=True,
        env=recording(tmp_path / "steps.pt"))
    assert result.returncode == 0, result.stderr[-3000:]
    before, after = torch.load(tmp_path / "steps.pt")
    moves = max((after[k] - before[k]).abs().max().item() for k in before)
    assert 0.999e-3 <= moves <= 1e-3 + 1e-15
    assert [float(r["train/clipped_steps"]) for r in read_csv(tmp_path / RUN / "metrics.csv") if r.get("train/clipped_steps")] == [1.0]


@pytest.mark.slow
def test_swa_averages_from_its_epoch_and_leaves_a_frozen_backbone_as_it_was(planted, tmp_path):  # noqa: F811
    images = make_image_tree(tmp_path / "images", per_class=12)
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs" / "resnet_finetune.yaml"),
         f"--data.data_dir={images}", "--data.transforms.image_size=32", "--data.val_fraction=0.25", "--data.test_fraction=0.0",
         "--data.loader.global_batch_size=6", "--model.cache_features=false", "--trainer.max_epochs=2", "--trainer.accelerator=cpu",
         "--trainer.precision=64-true", "--weight_averaging=SWA", "--weight_averaging.start_epoch=1", "--checkpoint.save_top_k=-1",
         *RECORD_STEPS, *QUIET],
        cwd=tmp_path, capture_output=True, text=True, env={**recording(tmp_path / "steps.pt"), "TORCH_HOME": str(planted[0])})
    assert result.returncode == 0, result.stderr[-3000:]
    steps = torch.load(tmp_path / "steps.pt")  # 18 training images in batches of 6: 3 steps an epoch
    assert len(steps) == 7
    mean = {k: sum(w[k] for w in steps[4:]) / 3 for k in steps[0]}  # epoch 1's three steps
    run = tmp_path / "runs" / "resnet_finetune" / "version_0"
    epoch_0, epoch_1 = (torch.load(p, weights_only=False) for p in sorted((run / "checkpoints").glob("best-epoch=*.ckpt")))
    assert "current_model_state" not in epoch_0  # nothing averaged yet: the weights being trained
    assert largest_difference(net_part(epoch_0["state_dict"], steps[3]), steps[3]) == 0
    averaged = net_part(epoch_1["state_dict"], mean)
    assert largest_difference(averaged, mean) < 1e-12
    pretrained = {f"backbone.{k}": v for k, v in planted[1].items() if f"backbone.{k}" in averaged and not k.endswith("num_batches_tracked")}
    assert pretrained and largest_difference({k: averaged[k] for k in pretrained}, pretrained) == 0


def test_weight_averaging_options_are_checked_and_lightning_s_own_callbacks_point_to_ours(tmp_path):
    from project.engine.callbacks import EMA, SWA

    for make, message in ((lambda: EMA(decay=1.0), "decay must be in (0, 1)"), (lambda: SWA(start_epoch=1.5), "start_epoch must be")):
        with pytest.raises(UserError, match=re.escape(message)):
            make()
    refused = train_py("fit", "--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--trainer.accelerator=cpu",
                       "--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging", *QUIET, cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stderr.strip().splitlines()[-1].endswith("use --weight_averaging EMA (project.engine.callbacks)")


def test_each_training_sample_comes_with_the_same_partner_on_one_process_and_on_two_with_accumulation():
    """The union over ranks and accumulated batches of (sample, partner) pairs is one process's,
    batch for batch; each partner is the sample before it in the epoch's order (the last real one
    for the first), also across batches and ranks. 1,257 samples in steps of 64: nothing divides."""
    from project.engine.data import ResumableSampler

    dataset = list(range(1257))

    def pairs(world: int, accumulate: int) -> list[set[tuple[int, int]]]:
        """Per optimizer step, the set of (sample, partner) pairs of its real samples."""
        per_batch = 64 // (world * accumulate)
        steps: list[set[tuple[int, int]]] = []
        for rank in range(world):
            sampler = ResumableSampler(dataset, world, rank, seed=7, batch_size=per_batch, accumulate=accumulate, partners=True)
            sampler.set_epoch(3)
            keys = list(sampler)
            assert len(keys) == len(sampler) and {epoch for _, epoch in keys} == {3}
            items = [index for index, _ in keys]
            for j in range(math.ceil(sampler.num_samples / per_batch)):
                real = sampler.batch_counts(j)[0]
                batch = items[2 * j * per_batch: 2 * (j + 1) * per_batch]
                half = len(batch) // 2
                if j // accumulate == len(steps):
                    steps.append(set())
                steps[j // accumulate] |= set(zip(batch[:half][:real], batch[half:][:real], strict=True))
        return steps

    one = pairs(1, 1)
    assert [len(step) for step in one] == [64] * 19 + [41]
    order = torch.randperm(1257, generator=torch.Generator().manual_seed(7 + 3)).tolist()
    assert set().union(*one) == {(order[q], order[q - 1]) for q in range(1257)}
    for world, accumulate in ((2, 1), (1, 2), (2, 2)):
        assert pairs(world, accumulate) == one, (world, accumulate)


def test_mixing_is_torchvision_s_mixup_or_cutmix_of_each_image_with_its_partner():
    from project.lightning_modules.mixing import SampleMixing

    generator = torch.Generator().manual_seed(0)
    images, partners = torch.rand(6, 3, 8, 8, generator=generator), torch.rand(6, 3, 8, 8, generator=generator)
    targets, partner_targets = torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([1, 2, 3, 4, 0, 0])
    mixed, soft = SampleMixing(0.2, 0.0, 5)(images, partners, targets, partner_targets, seed=11)
    lam = soft[0, 0].item()  # image 0 is class 0, its partner class 1
    assert 0 < lam < 1 and torch.allclose(soft.sum(1), torch.ones(6))
    assert torch.allclose(mixed, lam * images + (1 - lam) * partners, atol=1e-6)
    assert torch.allclose(soft[5], torch.eye(5)[0])  # both of class 0
    again, _ = SampleMixing(0.2, 0.0, 5)(images, partners, targets, partner_targets, seed=11)
    assert torch.equal(again, mixed)  # the step's seed fixes the ratio

    mixed, soft = SampleMixing(0.0, 1.0, 5)(images, partners, targets, partner_targets, seed=11)
    from_image = (mixed == images).all(1)  # per pixel: every channel from the image, or from its partner
    assert torch.equal(from_image | (mixed == partners).all(1), torch.ones_like(from_image))
    share = from_image.float().mean((1, 2))  # the same box for every image of the step
    assert torch.allclose(soft[:5, targets[:5]].diagonal(), share[:5], atol=1e-6)


def test_mixing_is_refused_for_binary_losses_inputs_that_are_not_images_and_cached_features():
    from project.lightning_modules import FineTuningModule

    with pytest.raises(UserError, match="use loss cross_entropy or nll"):
        ClassificationModule(net=LeNet, loss="bce_with_logits", mixup_alpha=0.2)
    with pytest.raises(UserError, match="cannot be mixed as images"):
        FineTuningModule(net=LeNet, cache_features=True, cutmix_alpha=1.0)
    data = TensorDataModule(dataset="iris")
    data.setup("fit")
    with pytest.raises(UserError, match="mix images .* has shape 4"):
        ClassificationModule(net=LeNet, mixup_alpha=0.2).mix_training_samples(data)


def test_flips_are_refused_for_digits_and_for_inputs_that_are_not_images():
    for data, message in ((TensorDataModule(dataset="digits", input_shape=[1, 8, 8]), "handwritten digits are not mirror-symmetric"),
                          (TensorDataModule(dataset="iris"), "its inputs are not images")):
        data.setup("fit")
        with pytest.raises(UserError, match=re.escape(message)):
            ClassificationModule(net=LeNet, tta="hflip").size_net_for(data)
    with pytest.raises(UserError, match="model.tta must be one of hflip"):
        ClassificationModule(net=LeNet, tta="vflip")


@pytest.mark.slow
def test_hflip_given_at_test_time_averages_each_image_with_its_mirror_image_in_test_and_export(tmp_path):
    make_image_tree(tmp_path / "mydata", per_class=20)
    fit = train_py("fit", "--config", str(REPO / "configs" / "lenet_imagefolder.yaml"), "--data.data_dir=mydata", "--trainer.max_epochs=2",
                   "--trainer.accelerator=cpu", *QUIET, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = tmp_path / "runs" / "lenet_imagefolder" / "version_0"
    [best] = (run / "checkpoints").glob("best-*.ckpt")
    flipped = ["--config", str(run / "config.yaml"), "--ckpt_path", str(best), "--model.init_args.tta=hflip"]
    tested = train_py("test", *flipped, *QUIET, cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    logged = float(re.search(r"test/loss\s*│\s*([0-9.e-]+)", tested.stdout).group(1))

    from project.datamodules import ImageFolderDataModule, ImageTransforms

    model = ClassificationModule.load_from_checkpoint(best, weights_only=False).eval()
    transforms = ImageTransforms(image_size=32, channels=3, random_crop_padding=4, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    data = ImageFolderDataModule(data_dir=str(tmp_path / "mydata"), transforms=transforms, val_fraction=0.1, test_fraction=0.1)
    data.setup("test")
    losses = []
    with torch.no_grad():
        for x, y in data.test_dataloader():
            x = data.on_after_batch_transfer((x, y), 0)[0]
            logits = (model.net(x) + model.net(x.flip(-1))) / 2
            losses.append(F.cross_entropy(logits, y, reduction="none"))
    assert logged == pytest.approx(torch.cat(losses).mean().item(), rel=1e-5)

    exported = train_py("export", *flipped, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    description = json.loads(best.with_suffix(".json").read_text())
    assert description["preprocessing"]["in_graph"]["tta"].startswith("hflip")


def run_finder(subcommand: str, config: str, *extra: str, cwd: Path) -> tuple[str, str]:
    """A finder's output, and the fit command it printed, once pasted (one epoch) and run: it must run."""
    found = train_py(subcommand, "--config", str(REPO / "configs" / config), *extra, "--trainer.accelerator=cpu", *QUIET, cwd=cwd)
    assert found.returncode == 0, found.stderr[-3000:]
    output = found.stdout + found.stderr
    [command] = [line.strip() for line in output.splitlines() if "train.py fit " in line]
    assert not list(cwd.rglob("*.ckpt")) and not list(cwd.rglob(f".{subcommand}*"))  # no checkpoint left behind
    pasted = subprocess.run([*shlex.split(command), "--trainer.max_epochs=1"], cwd=cwd, capture_output=True, text=True)
    assert pasted.returncode == 0, pasted.stderr[-3000:]
    return output, command


@pytest.mark.slow
def test_lr_find_saves_its_plot_leaves_no_checkpoint_and_prints_a_fit_command_that_runs(tmp_path):
    output, command = run_finder("lr_find", "lenet_digits.yaml", "--num_training=30", cwd=tmp_path)
    suggestion = float(re.search(r"Suggested lr: ([0-9.e-]+)", output).group(1))
    assert f"--model.init_args.optimizer.init_args.lr={suggestion:.3g}" in command and "--num_training" not in command
    [plot] = tmp_path.glob("runs/lenet_digits/version_*/lr_find.png")
    assert len(read_csv(plot.with_name("lr_find.csv"))) >= 10
    config = (max(tmp_path.glob("runs/lenet_digits/version_*")) / "config.yaml").read_text()
    assert re.search(rf"lr: {re.escape(f'{suggestion:.3g}')}", config)


@pytest.mark.slow
def test_scale_batch_size_prints_a_fit_command_that_runs_and_both_finders_refuse_ddp(tmp_path):
    output, command = run_finder("scale_batch_size", "two_layer_digits.yaml", "--max_trials=3", cwd=tmp_path / "found")
    assert "Largest batch per device that trained: 8 (from 2, doubled" in output  # three tries: 2, 4, 8
    assert "--data.loader.global_batch_size=8" in command and "--max_trials" not in command

    for subcommand in ("lr_find", "scale_batch_size"):
        refused = train_py(subcommand, "--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--trainer.accelerator=cpu",
                           "--trainer.devices=2", "--trainer.strategy=ddp", *QUIET, cwd=tmp_path / subcommand)
        assert refused.returncode == 2 and f"error: {subcommand} runs in one process (2 here)" in refused.stderr, refused.stderr[-2000:]


FIXED_BATCHES = """
from torch.utils.data import DataLoader
from project.datamodules import TensorDataModule

class FixedBatches(TensorDataModule):
    def train_dataloader(self):  # its own loader: the batch size the finder sets changes nothing
        return DataLoader(self.train_set, batch_size=32, shuffle=True)
"""


@pytest.mark.slow
def test_scale_batch_size_refuses_a_data_module_whose_loader_ignores_the_batch_size(tmp_path):
    (tmp_path / "fixed_batches.py").write_text(FIXED_BATCHES)
    refused = train_py("scale_batch_size", "--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--data=fixed_batches.FixedBatches",
                       "--data.dataset=digits", "--max_trials=2", "--trainer.accelerator=cpu", *QUIET, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: scale_batch_size sets the batch size of FixedBatches, but its train_dataloader() does not follow it (batches of 32, "
        "not 4): build the loader with ProjectDataModule's train_dataloader() or batch_size_per_device(), or set the batch size by hand")
    assert "Train with it" not in refused.stdout + refused.stderr and not list(tmp_path.rglob("*.ckpt"))
