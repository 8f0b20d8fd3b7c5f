"""Training speed with the GPU options, side by side in one run, and time to 99% on MNIST-size digits.

    python benchmarks/gpu_speed.py            # on a GPU machine
    python benchmarks/gpu_speed.py --quick    # a small version that also runs on a CPU
    python benchmarks/gpu_speed.py --parts accuracy   # only part 3

1. LeNet samples/s on the 60,000-image digits set (configs/data/digits_60k.yaml: 28x28, the
   whole set kept on the GPU), four ways: fp32; bf16-mixed; bf16-mixed + channels_last;
   bf16-mixed + channels_last + torch.compile. Median `perf/samples_per_s` of epochs 2 and later.
2. ResNet-18 head training (frozen backbone, live features) images/s on a generated folder of
   224x224 PNGs, fp32 and bf16-mixed + channels_last, with loader workers.
3. Time to 99% validation accuracy (the real held-out digits) of the LeNet recipe on the 60,000
   images with the fastest option set of (1): wall seconds from the start of fit, and the epoch.

Everything runs in this process through the template's CLI (`train.py fit`), with progress bar,
logging and checkpointing at the configs' defaults.
"""

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from lightning.pytorch import Callback, LightningModule, Trainer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from epoch_timer import EpochTimer  # noqa: E402
from finetune_speed import make_images  # noqa: E402
from project.engine.cli import ProjectCLI  # noqa: E402

DIGITS_60K = ["--config", str(REPO / "configs" / "lenet_digits.yaml"), "--config", str(REPO / "configs" / "data" / "digits_60k.yaml")]
BF16 = ["--trainer.precision=bf16-mixed"]
CHANNELS_LAST = ["--model.init_args.speed.channels_last=true"]
COMPILE = ["--model.init_args.speed.compile=true"]
LENET_OPTIONS = {
    "fp32": [],
    "bf16-mixed": BF16,
    "bf16 + channels_last": [*BF16, *CHANNELS_LAST],
    "bf16 + channels_last + compile": [*BF16, *CHANNELS_LAST, *COMPILE],
}


class TimeToAccuracy(Callback):
    """Records when validation accuracy first reaches ``target`` and stops the run there."""

    def __init__(self, target: float) -> None:
        self.target, self.start, self.reached = target, 0.0, None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        accuracy = trainer.callback_metrics.get("val/acc")
        if trainer.sanity_checking or accuracy is None or self.reached is not None:
            return
        if float(accuracy) >= self.target:
            self.reached = (time.perf_counter() - self.start, trainer.current_epoch + 1)
            trainer.should_stop = True


def fit(args: list[str], callbacks: list[Callback] = ()) -> ProjectCLI:
    with contextlib.redirect_stdout(io.StringIO()):
        cli = ProjectCLI(args=[*args, "--trainer.callbacks+=epoch_timer.EpochTimer"], run=False)
        cli.trainer.callbacks.extend(callbacks)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def samples_per_second(cli: ProjectCLI, batch_size: int) -> float:
    timer = next(c for c in cli.trainer.callbacks if isinstance(c, EpochTimer))
    batches = cli.trainer.num_training_batches
    return batches * batch_size / statistics.median(timer.epoch_seconds[1:] or timer.epoch_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a CPU")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--parts", nargs="+", default=["lenet", "resnet", "accuracy"], choices=["lenet", "resnet", "accuracy"])
    options = parser.parse_args()
    sys.argv = sys.argv[:1]  # the CLI runs below take their own arguments
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    tmp = Path(tempfile.mkdtemp())
    common = [f"--trainer.logger.init_args.save_dir={tmp / 'runs'}", "--trainer.enable_progress_bar=false"]
    limit = ["--trainer.limit_train_batches=20", "--trainer.limit_val_batches=2"] if options.quick else []
    batch = [f"--data.loader.global_batch_size={options.batch_size}"]

    print(f"device: {device}")
    lenet = {name: 0.0 for name in LENET_OPTIONS}
    for name, extra in LENET_OPTIONS.items() if "lenet" in options.parts else ():
        cli = fit([*DIGITS_60K, *common, *limit, *batch, "--trainer.max_epochs=3", *extra])
        lenet[name] = samples_per_second(cli, options.batch_size)
        print(f"LeNet, {name:<32} {lenet[name]:>10,.0f} samples/s  ({lenet[name] / lenet['fp32']:.2f}x fp32)")
    if "resnet" in options.parts:
        resnet_head(tmp, options.quick, [*common, *batch], options.batch_size)
    if "accuracy" in options.parts:
        best = max(lenet, key=lenet.get) if any(lenet.values()) else ("fp32" if device == "CPU" else "bf16 + channels_last")
        time_to_accuracy(best, 0.5 if options.quick else 0.99, [*DIGITS_60K, *common, *limit, *batch])


def resnet_head(tmp: Path, quick: bool, extra: list[str], batch_size: int) -> None:
    images = tmp / "images"
    make_images(images, 256 if quick else 4096, 64 if quick else 224)
    hub = tmp / "torch" / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), hub / "checkpoints" / "resnet18-f37072fd.pth")
    torch.hub.set_dir(str(hub))
    resnet = ["--config", str(REPO / "configs" / "resnet_finetune.yaml"), f"--data.data_dir={images}",
              "--model.cache_features=false", "--trainer.max_epochs=3", f"--data.loader.num_workers={0 if quick else 8}",
              f"--data.transforms.image_size={64 if quick else 224}", *extra]
    fp32 = samples_per_second(fit(resnet), batch_size)
    fast = samples_per_second(fit([*resnet, *BF16, *CHANNELS_LAST]), batch_size)
    print(f"ResNet-18 head, fp32                    {fp32:>10,.0f} images/s")
    print(f"ResNet-18 head, bf16 + channels_last    {fast:>10,.0f} images/s  ({fast / fp32:.2f}x)")


def time_to_accuracy(option_set: str, target: float, args: list[str]) -> None:
    clock = TimeToAccuracy(target)
    fit([*args, "--trainer.max_epochs=20", *LENET_OPTIONS[option_set]], [clock])
    if clock.reached is None:
        print(f"LeNet on 60,000 digits did not reach {target:.0%} validation accuracy in 20 epochs")
    else:
        seconds, epoch = clock.reached
        print(f"LeNet on 60,000 digits ({option_set}): {target:.0%} validation accuracy after {seconds:.1f} s (epoch {epoch})")


if __name__ == "__main__":
    main()
