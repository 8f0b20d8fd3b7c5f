"""The template against a hand-written PyTorch loop: same net, same data, same batches, same seed.

    python benchmarks/vs_plain_loop.py [--epochs 6] [--rounds 3] [--cases default_job lenet_digits two_layer resnet18_head resnet18_full]
    python benchmarks/vs_plain_loop.py --device cuda --cases resnet18_head resnet18_full --images 4096 --image-size 224 --workers 8

Each case trains once through the template (`train.py fit --config ...`, run in this process,
with its progress output, CSV logging and checkpointing at the config's defaults) and once
through the plain loop below (train, validate, save the weights each epoch). Both draw batches
in the same seeded order (one permutation per epoch, as DistributedSampler makes it), start from
the same initial weights, and run on the same device (`--device`, the CPU unless told). The
loops take turns, ``--rounds`` times. Printed per case: each loop's fastest epoch's wall time
from epoch 2 on, over all rounds, validation and checkpoint included (the fastest is the one
least disturbed on a shared machine), the ratio template / plain loop (goal <= 1.15 on the
default job), the relative gap between
the final training losses (the template's Adam recipes use the fused kernel, which rounds
differently), and for tensor data the template's
epoch with the per-sample DataLoader instead of its fast tensor batches. A third loop, "bare PL",
runs the plain loop's own net, loss, optimizer and DataLoader through a Lightning Trainer with
logger, checkpointing, progress bar, summary and callbacks off: bare / plain is what
Lightning's training loop alone costs, the floor under any Lightning template.

Cases: the default job's data (LeNet on scikit-learn's 1,797 digits, 1,257 training samples, 20
steps an epoch, where the fixed cost of a step shows most), LeNet on the digits tiled to 25,000
(20,000 training samples per epoch), the
two-layer net on 25,000 random 1000-d tensors (MSE), and ResNet-18 on a generated 2-class folder
of PNGs (64x64 and 640 images unless told), head training (frozen backbone, live features) and
full fine-tuning (every layer trains). Image batches come through DataLoaders with the same
worker count, and pinned memory on a GPU, in both loops.
"""

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torchvision
from lightning.pytorch import LightningModule, Trainer, seed_everything
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

HERE = Path(__file__).resolve().parents[1]
# Another checkout's template can be measured with this same script, side by side with this one:
#   TEMPLATE_REPO=../other PYTHONPATH=../other/src python benchmarks/vs_plain_loop.py
REPO = Path(os.environ.get("TEMPLATE_REPO", HERE))
sys.path.insert(0, str(HERE / "benchmarks"))
from epoch_timer import EpochTimer  # noqa: E402
from finetune_speed import make_images  # noqa: E402
from project.tools.cli import ProjectCLI  # noqa: E402

from project.nets import LeNet, TwoLayerNet  # noqa: E402

SEED = 0


def plain_loop(
    net: nn.Module, train_set: Dataset, val_set: Dataset, loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer, batch_size: int, epochs: int, checkpoint: Path, device: str = "cpu", workers: int = 0,
) -> tuple[list[float], float]:
    """The loop most people write. Returns wall seconds per epoch and the last epoch's mean loss."""
    sampler = DistributedSampler(train_set, num_replicas=1, rank=0, shuffle=True, seed=SEED)
    loading = dict(batch_size=batch_size, num_workers=workers, pin_memory=device == "cuda")
    train_loader = DataLoader(train_set, sampler=sampler, **loading)
    val_loader = DataLoader(val_set, **loading)
    net.to(device)
    seconds, mean_loss = [], 0.0
    for epoch in range(epochs):
        start = time.perf_counter()
        sampler.set_epoch(epoch)
        net.train()
        total, count = 0.0, 0
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(x)
            count += len(x)
        mean_loss = total / count
        net.eval()
        with torch.no_grad():
            val_loss = sum(loss_fn(net(x.to(device)), y.to(device)).item() * len(x) for x, y in val_loader)
        print(f"  plain loop epoch {epoch + 1}: train loss {mean_loss:.5f}, val loss {val_loss / len(val_set):.5f}")
        torch.save(net.state_dict(), checkpoint)
        seconds.append(time.perf_counter() - start)
    return seconds, mean_loss


class BareModule(LightningModule):
    """The plain loop's net, loss and optimizer in a LightningModule with nothing else: no metrics,
    no logging. Run by a Trainer with logger, checkpointing, progress bar and summary off, it
    measures what Lightning's loop itself costs per step."""

    def __init__(self, net: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        super().__init__()
        self.net, self.loss_fn, self.optimizer = net, loss_fn, optimizer

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.loss_fn(self.net(batch[0]), batch[1])

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.loss_fn(self.net(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer


def bare_lightning(
    net: nn.Module, train_set: Dataset, val_set: Dataset, loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer, batch_size: int, epochs: int, checkpoint: Path, device: str = "cpu", workers: int = 0,
) -> tuple[list[float], float]:
    """The same batches as ``plain_loop``, through a Trainer with every extra switched off."""
    sampler = DistributedSampler(train_set, num_replicas=1, rank=0, shuffle=True, seed=SEED)
    loading = dict(batch_size=batch_size, num_workers=workers, pin_memory=device == "cuda")
    timer = EpochTimer()
    trainer = Trainer(max_epochs=epochs, accelerator=device, devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(BareModule(net, loss_fn, optimizer), DataLoader(train_set, sampler=sampler, **loading),
                DataLoader(val_set, **loading))
    return timer.epoch_wall_seconds, float("nan")


def template(args: list[str]) -> tuple[list[float], float]:
    cli = ProjectCLI(args=["fit", *args, "--trainer.callbacks+=epoch_timer.EpochTimer"])
    timer = next(c for c in cli.trainer.callbacks if isinstance(c, EpochTimer))
    return timer.epoch_wall_seconds, float(cli.trainer.callback_metrics["train/loss"])


def on_device(options: argparse.Namespace, tmp: Path) -> list[str]:
    return [f"--trainer.max_epochs={options.epochs}", f"--trainer.accelerator={options.device}", "--trainer.devices=1",
            f"--trainer.logger.init_args.save_dir={tmp / 'runs'}"]


def lenet_digits(tmp: Path, options: argparse.Namespace, tiles: int = 14, test_fraction: float = 0.1) -> dict[str, Callable]:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32).repeat(tiles, 1)[:25000]
    y = torch.tensor(digits.target).repeat(tiles)[:25000]
    torch.save({"x": x, "y": y}, tmp / "digits.pt")
    args = ["--config", str(REPO / "configs" / "lenet_digits.yaml"), "--data.dataset=null", f"--data.path={tmp / 'digits.pt'}",
            "--data.standardize=false", "--data.augment=null", "--data.val_fraction=0.1", f"--data.test_fraction={test_fraction}",
            "--model.lr_schedule.name=none", *on_device(options, tmp)]

    def plain() -> dict:
        from project.datamodules import TensorDataModule

        data = TensorDataModule(dataset=None, path=str(tmp / "digits.pt"), input_shape=[1, 8, 8], resize_to=32,
                                val_fraction=0.1, test_fraction=test_fraction)
        data.setup("fit")  # the same split and resize; batches come from the plain DataLoader below
        seed_everything(SEED)
        net = LeNet(10, (1, 32, 32))
        optimizer = torch.optim.AdamW(net.parameters(), lr=0.003, weight_decay=0.01)
        return dict(net=net, train_set=TensorDataset(*data.train_set.tensors), val_set=TensorDataset(*data.val_set.tensors),
                    loss_fn=nn.CrossEntropyLoss(), optimizer=optimizer, batch_size=64, epochs=options.epochs,
                    checkpoint=tmp / "plain.pt", device=options.device)

    return {"plain": plain, "template": lambda extra=(): template([*args, *extra]), "tensor": True}


def two_layer(tmp: Path, options: argparse.Namespace) -> dict[str, Callable]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(25000, 1000, generator=generator)
    y = x[:, :10] * 2 + 0.1 * torch.randn(25000, 10, generator=generator)
    torch.save({"x": x, "y": y}, tmp / "tensors.pt")
    args = ["--config", str(REPO / "configs" / "two_layer_regression.yaml"), f"--data.path={tmp / 'tensors.pt'}",
            "--data.val_fraction=0.1", "--data.test_fraction=0.1", *on_device(options, tmp)]

    def plain() -> dict:
        from project.datamodules import TensorDataModule

        data = TensorDataModule(dataset=None, path=str(tmp / "tensors.pt"), task="regression",
                                val_fraction=0.1, test_fraction=0.1)
        data.setup("fit")
        seed_everything(SEED)
        net = TwoLayerNet(10, (1000,), hidden=100)
        optimizer = torch.optim.Adam(net.parameters(), lr=0.001)
        return dict(net=net, train_set=TensorDataset(*data.train_set.tensors), val_set=TensorDataset(*data.val_set.tensors),
                    loss_fn=nn.MSELoss(), optimizer=optimizer, batch_size=64, epochs=options.epochs,
                    checkpoint=tmp / "plain.pt", device=options.device)

    return {"plain": plain, "template": lambda extra=(): template([*args, *extra]), "tensor": True}


def resnet18(tmp: Path, options: argparse.Namespace, frozen: bool) -> dict[str, Callable]:
    make_images(tmp / "images", options.images, options.image_size)
    hub = tmp / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), hub / "resnet18-f37072fd.pth")
    torch.hub.set_dir(str(tmp / "torch" / "hub"))
    args = ["--config", str(REPO / "configs" / "resnet_finetune.yaml"), f"--data.data_dir={tmp / 'images'}",
            f"--data.transforms.image_size={options.image_size}", f"--data.loader.num_workers={options.workers}",
            f"--data.loader.pin_memory={str(options.device == 'cuda').lower()}", "--model.cache_features=false",
            f"--model.freeze_backbone={str(frozen).lower()}", "--model.lr_schedule.name=none", *on_device(options, tmp)]

    def plain() -> dict:
        from project.datamodules import ImageFolderDataModule
        from project.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransforms

        transforms = ImageTransforms(image_size=options.image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        data = ImageFolderDataModule(data_dir=str(tmp / "images"), val_fraction=0.1, test_fraction=0.1, transforms=transforms)
        data.setup("fit")  # the same files, split and transforms; the loop and its DataLoader are plain
        seed_everything(SEED)
        net = torchvision.models.get_model("resnet18", weights="IMAGENET1K_V1")
        net.requires_grad_(not frozen)
        net.fc = nn.Linear(512, 2)

        class FrozenBackbone(nn.Module):  # the plain way to keep frozen BatchNorm statistics fixed
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def train(self, mode: bool = True) -> "FrozenBackbone":
                super().train(mode)
                for m in self.net.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.eval()
                return self

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.net(x)

        trained = net.fc.parameters() if frozen else net.parameters()
        optimizer = torch.optim.SGD(trained, lr=0.01, momentum=0.9, weight_decay=0.0001)
        return dict(net=FrozenBackbone() if frozen else net, train_set=data.train_set, val_set=data.val_set,
                    loss_fn=nn.CrossEntropyLoss(), optimizer=optimizer, batch_size=32, epochs=options.epochs,
                    checkpoint=tmp / "plain.pt", device=options.device, workers=options.workers)

    return {"plain": plain, "template": lambda extra=(): template([*args, *extra]), "tensor": False}


CASES = {
    "default_job": partial(lenet_digits, tiles=1, test_fraction=0.2),  # configs/lenet_digits.yaml's 1,797 digits and split
    "lenet_digits": lenet_digits,
    "two_layer": two_layer,
    "resnet18_head": partial(resnet18, frozen=True),
    "resnet18_full": partial(resnet18, frozen=False),
}


def fastest_after_first(seconds: list[float]) -> float:
    """The fastest epoch after the first: on a shared machine, the one least disturbed by others."""
    return min(seconds[1:] or seconds)


def compare(options: argparse.Namespace) -> list[tuple]:
    """Each case of ``options.cases`` through the three loops, ``options.rounds`` times interleaved
    (plain, bare, template, plain, ...), each loop's fastest epoch over all rounds: the rows
    ``report`` prints."""
    rows = []
    for name in options.cases:
        with tempfile.TemporaryDirectory() as tmp:
            case = CASES[name](Path(tmp), options)
            fastest: dict[str, float] = {}

            def keep(loop: str, seconds: list[float]) -> None:
                fastest[loop] = min(fastest.get(loop, float("inf")), fastest_after_first(seconds))

            for _ in range(options.rounds):
                plain_s, plain_loss = plain_loop(**case["plain"]())
                bare_s, _ = bare_lightning(**case["plain"]())  # fresh ingredients: same seed, same initial weights
                template_s, template_loss = case["template"]()
                keep("plain", plain_s), keep("bare", bare_s), keep("template", template_s)
                if case["tensor"]:
                    keep("per_sample", case["template"](["--data.fast_batches=false"])[0])
                if options.variant:
                    keep("variant", case["template"](options.variant)[0])
        rows.append((name, fastest["plain"], fastest["bare"], fastest["template"], plain_loss, template_loss,
                     fastest.get("per_sample"), fastest.get("variant")))
    return rows


def report(rows: list[tuple], device: str) -> None:
    print(f"\n{'case':<14} {'plain s/ep':>10} {'bare PL':>8} {'template':>9} {'ratio':>6} {'bare/plain':>10}  "
          f"{'loss plain':>11} {'template':>11} {'gap':>6}  {'per-sample loader':>17} {'fast-path gain':>14}"
          f"  {'variant / template':>18}")
    for name, plain, bare, ours, plain_loss, our_loss, per_sample, variant in rows:
        gap = abs(plain_loss - our_loss) / max(abs(plain_loss), 1e-3)  # relative, for losses above 1e-3
        extra = f"{per_sample:>15.3f} s {per_sample / ours:>13.2f}x" if per_sample else f"{'-':>17} {'-':>14}"
        print(f"{name:<14} {plain:>10.3f} {bare:>8.3f} {ours:>9.3f} {ours / plain:>6.3f} {bare / plain:>10.3f}  "
              f"{plain_loss:>11.6f} {our_loss:>11.6f} {gap:>6.2%}  {extra}  "
              f"{f'{variant / ours:.3f}x' if variant else '-':>18}")
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"({where}; ratio = template / plain loop, goal <= 1.15 on the default job; bare PL = the plain "
          "loop's module in a Trainer with every extra off, the floor Lightning's loop sets; fast-path gain = template "
          "epoch with per-sample DataLoader / with fast tensor batches, goal >= 1.3; variant / template = the template "
          "epoch with the --variant arguments added / without them)")


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3, help="times each case runs its loops, interleaved")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--images", type=int, default=640, help="ResNet cases: generated PNGs")
    parser.add_argument("--image-size", type=int, default=64, help="ResNet cases: pixels per side")
    parser.add_argument("--workers", type=int, default=0, help="ResNet cases: loader workers in both loops")
    parser.add_argument("--variant", nargs="*", default=[], metavar="ARG",
                        help="train.py arguments for a second template run, timed beside the first (e.g. --trainer.profiler=simple)")
    return parser.parse_args(argv)


def main() -> None:
    options = arguments()
    report(compare(options), options.device)


if __name__ == "__main__":
    main()
