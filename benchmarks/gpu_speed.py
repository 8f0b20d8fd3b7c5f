"""GPU speed, side by side in one run: LeNet per option set, time to 99% accuracy, ResNet-18 vs a plain loop.

    python benchmarks/gpu_speed.py                   # on a GPU machine (scripts/gpu_check.sh runs it)
    python benchmarks/gpu_speed.py --quick           # small sizes, no compile: runs on a CPU, checks the wiring
    python benchmarks/gpu_speed.py --json FILE       # the results also as JSON (scripts/gpu_report.py reads it)

1. LeNet samples/s on the 60,000-image digits (configs/data/digits_60k.yaml), per option set:
   fp32 with the tensors copied to the device every batch, then with the whole set kept on the
   device: fp32, bf16-mixed, bf16 + channels_last, bf16 + channels_last + torch.compile. Median
   epoch of the second and later, through the template's CLI in this process.
2. Time to 99% accuracy: `train.py fit` of that recipe with the fastest option set, run as a user
   runs it and stopped at the first epoch whose validation accuracy (the real held-out digits)
   reaches 99%: training seconds (fit start to the end of that epoch) and wall seconds (process
   start to exit: imports, making the 60,000 images, checkpoints), then `train.py test` of that
   epoch's checkpoint for the test accuracy.
3. ResNet-18 on 224 px PNGs through loader workers, head training (frozen backbone) and full
   fine-tuning: the template against a plain PyTorch loop and the same batches on the same device
   (benchmarks/vs_plain_loop.py).
"""

import argparse
import contextlib
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import vs_plain_loop  # noqa: E402
from epoch_timer import EpochTimer  # noqa: E402
from project.tools.cli import ProjectCLI  # noqa: E402

DIGITS_60K = ["--config", str(REPO / "configs" / "lenet_digits.yaml"), "--config", str(REPO / "configs" / "data" / "digits_60k.yaml")]
BF16 = ["--trainer.precision=bf16-mixed"]
CHANNELS_LAST = ["--model.init_args.speed.channels_last=true"]
COMPILE = ["--model.init_args.speed.compile=true"]
LENET_OPTIONS = {
    "fp32, copied every batch": ["--data.keep_on_device=false"],
    "fp32": [],
    "bf16-mixed": BF16,
    "bf16 + channels_last": [*BF16, *CHANNELS_LAST],
    "bf16 + channels_last + compile": [*BF16, *CHANNELS_LAST, *COMPILE],
}


class StopAtAccuracy(Callback):
    """Stops a fit at the first epoch whose ``val/acc`` reaches ``target`` and writes to ``report``
    (JSON) the seconds from fit start and the epoch; ``{"reached": false}`` if it never does."""

    def __init__(self, target: float, report: str) -> None:
        self.target, self.report, self.start = target, Path(report), 0.0
        self.report.write_text(json.dumps({"reached": False}))

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        accuracy = trainer.callback_metrics.get("val/acc")
        if trainer.sanity_checking or accuracy is None or float(accuracy) < self.target or trainer.should_stop:
            return
        if trainer.is_global_zero:
            self.report.write_text(json.dumps({"reached": True, "seconds": time.perf_counter() - self.start,
                                               "epoch": trainer.current_epoch + 1, "val_acc": float(accuracy)}))
        trainer.should_stop = True


def fit_here(args: list[str]) -> ProjectCLI:
    with contextlib.redirect_stdout(io.StringIO()):
        cli = ProjectCLI(args=[*args, "--trainer.callbacks+=epoch_timer.EpochTimer"], run=False)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def samples_per_second(cli: ProjectCLI) -> float:
    timer = next(c for c in cli.trainer.callbacks if isinstance(c, EpochTimer))
    samples = cli.trainer.num_training_batches * cli.datamodule.batch_size_per_device()
    return samples / statistics.median(timer.epoch_seconds[1:] or timer.epoch_seconds)


def lenet_option_sets(common: list[str], quick: bool) -> dict[str, float]:
    speeds = {}
    for name, extra in LENET_OPTIONS.items():
        if quick and COMPILE[0] in extra:
            continue  # compiling takes minutes on a CPU; tests/test_speed.py checks it there
        speeds[name] = samples_per_second(fit_here([*DIGITS_60K, *common, "--trainer.max_epochs=3", *extra]))
        print(f"LeNet, {name:<32} {speeds[name]:>12,.0f} samples/s  ({speeds[name] / speeds['fp32, copied every batch']:.2f}x copied fp32)",
              flush=True)
    return speeds


def train_py(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "benchmarks"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)


def time_to_accuracy(option_set: str, target: float, common: list[str], cwd: Path) -> dict:
    report = cwd / "time_to_accuracy.json"
    stop = ["--trainer.callbacks+=gpu_speed.StopAtAccuracy", f"--trainer.callbacks.target={target}", f"--trainer.callbacks.report={report}"]
    start = time.perf_counter()
    fit = train_py("fit", *DIGITS_60K, *common, *LENET_OPTIONS[option_set], *stop, cwd=cwd)
    wall = time.perf_counter() - start
    if fit.returncode != 0:
        raise SystemExit(f"the time-to-accuracy fit failed:\n{fit.stderr[-3000:]}")
    result = {**json.loads(report.read_text()), "wall_seconds": wall, "option_set": option_set, "target": target}
    run = cwd / "runs" / "lenet_digits_60k" / "version_0"
    test = train_py("test", "--config", str(run / "config.yaml"), f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}", cwd=cwd)
    if test.returncode != 0:
        raise SystemExit(f"testing the time-to-accuracy checkpoint failed:\n{test.stderr[-3000:]}")
    with open(run.with_name("version_1") / "metrics.csv") as f:
        result["test_acc"] = float(list(csv.DictReader(f))[-1]["test/acc"])
    return result


def resnet_against_plain_loop(quick: bool, device: str) -> list[tuple]:
    options = vs_plain_loop.arguments([
        "--cases", "resnet18_head", "resnet18_full", "--device", device,
        "--epochs", "2" if quick else "3", "--images", "64" if quick else "4096",
        "--image-size", "32" if quick else "224", "--workers", "0" if quick else "8",
        "--rounds", "1"])  # one turn each: the GPU check has minutes, not the ten a third ResNet round would take
    with contextlib.redirect_stdout(io.StringIO()):
        rows = vs_plain_loop.compare(options)
    for name, plain, _bare, template, *_ in rows:
        print(f"{name}: template {template:.3f} s/epoch, plain loop {plain:.3f} s/epoch, ratio {template / plain:.3f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and no compile, for a CPU")
    parser.add_argument("--json", type=Path, help="also write the results to this file: the device and [what, figure] rows")
    options = parser.parse_args()
    sys.argv = sys.argv[:1]  # the CLI runs below take their own arguments
    device = "cuda" if torch.cuda.is_available() and not options.quick else "cpu"
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    tmp = Path(tempfile.mkdtemp())
    common = [f"--trainer.logger.init_args.save_dir={tmp / 'runs'}", "--trainer.enable_progress_bar=false",
              f"--trainer.accelerator={device}", "--trainer.devices=1", "--data.loader.global_batch_size=256"]
    if options.quick:
        common += ["--data.expand_train_to=2048", "--trainer.limit_train_batches=6", "--trainer.limit_val_batches=2"]
    print(f"device: {where}", flush=True)

    speeds = lenet_option_sets(common, options.quick)
    fastest = max(speeds, key=speeds.get)
    target = 0.5 if options.quick else 0.99
    (tmp / "time_to_accuracy").mkdir()
    reached = time_to_accuracy(fastest, target, [c for c in common if "save_dir" not in c], tmp / "time_to_accuracy")
    if reached["reached"]:
        print(f"LeNet, 60,000 digits, {fastest}: {target:.0%} validation accuracy at epoch {reached['epoch']} after "
              f"{reached['seconds']:.2f} s of training, {reached['wall_seconds']:.1f} s from the command's start; "
              f"test accuracy {reached['test_acc']:.4f}", flush=True)
    else:
        print(f"LeNet, 60,000 digits, {fastest}: did not reach {target:.0%} validation accuracy in the recipe's epochs", flush=True)
    resnet = resnet_against_plain_loop(options.quick, device)

    rows = [(f"LeNet, 60,000 digits, {name}", f"{value:,.0f} samples/s") for name, value in speeds.items()]
    rows.append((f"LeNet, 60,000 digits, {fastest}: time to {target:.0%} val acc (test acc of that epoch)",
                 f"{reached['seconds']:.2f} s training, {reached['wall_seconds']:.1f} s wall, epoch {reached['epoch']} "
                 f"(test acc {reached['test_acc']:.4f})" if reached["reached"] else "not reached"))
    rows += [(f"ResNet-18 {name.removeprefix('resnet18_')}: template / plain loop", f"{template:.3f} / {plain:.3f} s per epoch = {template / plain:.3f}")
             for name, plain, _bare, template, *_ in resnet]
    if options.json:
        options.json.write_text(json.dumps({"device": where, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
