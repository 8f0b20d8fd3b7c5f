"""Time per epoch of ResNet-18 fine-tuning three ways, side by side in one run.

    python benchmarks/finetune_speed.py [--images 256] [--size 64] [--epochs 3]

1. full: every layer trains (freeze_backbone: false);
2. frozen: only the head trains, the backbone runs forward without gradients;
3. cached: frozen, with cache_features: the backbone runs once in setup, epochs train the head
   on stored features.
Each is `train.py fit --config configs/resnet_finetune.yaml` on a generated 2-class PNG folder,
with ResNet-18 weights planted in a temporary $TORCH_HOME (random values: timing does not depend
on them). The figure is the median `bench/epoch_s` (training part of an epoch, data loading
included) of the second and later epochs. Loader workers: 0, so the cores do the model's work.
"""

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "full": ["--model.freeze_backbone=false", "--model.cache_features=false"],
    "frozen": ["--model.cache_features=false"],
    "cached": ["--model.cache_features=true"],
}


def make_images(root: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        label = i % 2
        pixels = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        pixels[:, : size // 2] += 150 if label == 0 else 0
        path = root / f"class{label}" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)


def epoch_seconds(case: str, data: Path, size: int, epochs: int, cwd: Path, env: dict[str, str]) -> float:
    args = [
        "fit", "--config", str(REPO / "configs" / "resnet_finetune.yaml"), f"--data.data_dir={data}",
        f"--data.transforms.image_size={size}", "--data.loader.num_workers=0", f"--trainer.max_epochs={epochs}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu",
        *CASES[case],
    ]
    subprocess.run([sys.executable, str(REPO / "train.py"), *args, "--trainer.callbacks+=epoch_timer.EpochTimer"], cwd=cwd, env=env, check=True, capture_output=True)
    with open(cwd / "runs" / "resnet_finetune" / "version_0" / "metrics.csv") as f:
        seconds = [float(r["bench/epoch_s"]) for r in csv.DictReader(f) if r.get("bench/epoch_s")]
    return statistics.median(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_images(root / "images", args.images, args.size)
        (root / "torch" / "hub" / "checkpoints").mkdir(parents=True)
        torch.save(torchvision.models.resnet18().state_dict(), root / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
        env = {**os.environ, "TORCH_HOME": str(root / "torch"), "PYTHONPATH": str(REPO / "benchmarks")}
        times = {}
        for case in CASES:
            (root / case).mkdir()
            times[case] = epoch_seconds(case, root / "images", args.size, args.epochs, root / case, env)
            print(f"{case:>7}: {times[case]:8.3f} s per epoch", flush=True)
    print(f"frozen / full : {times['frozen'] / times['full']:.2f}x the time (goal <= 0.40)")
    print(f"full / cached : {times['full'] / times['cached']:.0f}x faster with cached features (goal >= 20)")
    print(f"({args.images} images of {args.size}x{args.size}, 80% train, ResNet-18, CPU with {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
