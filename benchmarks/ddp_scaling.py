"""Training throughput of one recipe on 1 process and on 2 DDP processes, side by side.

    python benchmarks/ddp_scaling.py [--samples 20000] [--epochs 4] [--config configs/lenet_digits.yaml]

The digits are tiled to ``--samples`` training-sized inputs so an epoch is long enough to time.
Both runs use the recipe's global batch size (DDP splits it across ranks), the CPU and gloo,
and report the median of ``bench/samples_per_s`` (logged by ``epoch_timer.EpochTimer``) over the
epochs after the first. On a machine with k cores, 2 processes share them: expect gains only
where one process leaves cores idle.
"""

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from sklearn.datasets import load_digits

REPO = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def tiled_digits(path: Path, samples: int) -> Path:
    """The 1,797 real digits repeated to ``samples`` rows, saved as a ``.pt`` the TensorDataModule reads."""
    digits = load_digits()
    repeats = -(-samples // len(digits.target))
    x = torch.tensor(digits.data, dtype=torch.float32).repeat(repeats, 1)[:samples]
    y = torch.tensor(digits.target).repeat(repeats)[:samples]
    torch.save({"x": x, "y": y}, path)
    return path


def train_samples_per_second(config: str, data: Path, epochs: int, extra: list[str], cwd: str) -> float:
    args = [
        "fit", "--config", config, f"--trainer.max_epochs={epochs}", "--trainer.accelerator=cpu",
        "--data.dataset=null", f"--data.path={data}", "--data.val_fraction=0.02", "--data.test_fraction=0.02",
        "--trainer.logger.init_args.save_dir=runs", "--trainer.logger.init_args.name=bench", *QUIET, *extra,
    ]
    subprocess.run([sys.executable, str(REPO / "train.py"), *args, "--trainer.callbacks+=epoch_timer.EpochTimer"], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO / "benchmarks")})
    with open(Path(cwd, "runs", "bench", "version_0", "metrics.csv")) as f:
        rates = [float(r["bench/samples_per_s"]) for r in csv.DictReader(f) if r.get("bench/samples_per_s")]
    return statistics.median(rates[1:] or rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "lenet_digits.yaml"))
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = tiled_digits(Path(tmp, "digits.pt"), args.samples)
        results = {}
        for name, extra in (("1 process", []), ("2 DDP processes", ["--trainer.devices=2", "--trainer.strategy=ddp"])):
            with tempfile.TemporaryDirectory() as cwd:
                results[name] = train_samples_per_second(args.config, data, args.epochs, extra, cwd)
            print(f"{name:>16}: {results[name]:9.0f} samples/s", flush=True)
    ratio = results["2 DDP processes"] / results["1 process"]
    print(f"{'ratio':>16}: {ratio:9.2f}x  (2 DDP processes / 1 process, {Path(args.config).name}, "
          f"{args.samples} samples, CPU with {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
