"""Each training feature on and off, over held-out seeds, side by side: test accuracy and time per epoch.

    python benchmarks/training_features.py                       # the digits recipe, seeds 100-107
    python benchmarks/training_features.py --job digits_60k      # on the 60,000-image digits overlay
    python benchmarks/training_features.py --variants off ema    # some of the variants

Every (seed, variant) is one ``seeds.py --seeds SEED`` run (``train.py fit``, then ``train.py test``
on the checkpoint fit selected), in runs/seeds/features_<job>_<variant>/. The variants take turns
within each seed, in an order that rotates from seed to seed, so that a slower stretch of the
machine falls on all of them alike. Seeds 100-107 were chosen before any measurement; nothing was
tuned on them. Time per epoch is the training part of each epoch (``EpochTimer``), median over a
run's epochs after the first, then the mean over the seeds.
"""

import argparse
import csv
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
JOBS = {
    "digits": ["--config", "configs/lenet_digits.yaml"],
    "digits_60k": ["--config", "configs/lenet_digits.yaml", "--config", "configs/data/digits_60k.yaml"],
}
VARIANTS = {
    "off": [],
    "ema": ["--weight_averaging=EMA"],
    "swa": ["--weight_averaging=SWA"],
    "clip_norm_1": ["--trainer.gradient_clip_val=1.0"],
    "mixup": ["--model.mixup_alpha=0.2"],
    "cutmix": ["--model.cutmix_alpha=1.0"],
}  # test-time flips are refused for digits


def run(job: str, variant: str, seed: int) -> Path:
    """One seeds.py run; returns the folder it wrote."""
    name = f"features_{job}_{variant}"
    root = REPO / "runs" / "seeds" / name
    before = set(root.glob("version_*"))
    command = [sys.executable, str(REPO / "seeds.py"), "--seeds", str(seed), "--name", name, *JOBS[job], *VARIANTS[variant],
               "--trainer.callbacks+=epoch_timer.EpochTimer"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "benchmarks"), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{variant}, seed {seed} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    [folder] = set(root.glob("version_*")) - before
    return folder


def epoch_seconds(fit_run: Path) -> float:
    """Median training time of the epochs after the first, from the fit run's metrics.csv."""
    times = [float(row["bench/epoch_s"]) for row in csv.DictReader((fit_run / "metrics.csv").open()) if row.get("bench/epoch_s")]
    return statistics.median(times[1:] or times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", choices=JOBS, default="digits")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(100, 108)))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    options = parser.parse_args()
    accuracy: dict[str, list[float]] = {v: [] for v in options.variants}
    seconds: dict[str, list[float]] = {v: [] for v in options.variants}
    for turn, seed in enumerate(options.seeds):
        shift = turn % len(options.variants)
        for variant in options.variants[shift:] + options.variants[:shift]:
            folder = run(options.job, variant, seed)
            [row] = csv.DictReader((folder / "seeds.csv").open())
            accuracy[variant].append(float(row["test/acc"]))
            seconds[variant].append(epoch_seconds(Path(row["runs"].split()[0])))
            print(f"seed {seed} {variant}: test/acc {accuracy[variant][-1]:.4f}, {seconds[variant][-1]:.2f} s/epoch", flush=True)
    print(f"\n{options.job}, seeds {' '.join(map(str, options.seeds))}:\n")
    print("| variant | options | test accuracy, mean +- std | min | s/epoch |")
    print("| --- | --- | ---: | ---: | ---: |")
    for variant in options.variants:
        values = accuracy[variant]
        std = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"| {variant} | `{' '.join(VARIANTS[variant]) or '(recipe)'}` | {100 * statistics.fmean(values):.2f}% +- {100 * std:.2f}% "
              f"| {100 * min(values):.2f}% | {statistics.fmean(seconds[variant]):.3f} |")


if __name__ == "__main__":
    main()
