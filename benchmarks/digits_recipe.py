"""Time the main job as a user runs it and report its test accuracy, for each seed.

    python benchmarks/digits_recipe.py [--seeds 0 1 2]

For every seed: `python train.py fit --config configs/lenet_digits.yaml` (wall time,
interpreter start-up and imports included), then `train.py test` on the best checkpoint, the
one `fit` prints; then the mean and minimum test accuracy over the seeds.
Runs in a temporary directory, so it leaves no run folders behind.
"""

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "lenet_digits.yaml"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def run(args: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("extra", nargs="*", help="more train.py fit arguments, e.g. -- --trainer.max_epochs=40")
    options = parser.parse_args()
    seeds, extra = options.seeds, options.extra
    print(f"{'seed':>4}  {'fit wall s':>10}  {'test acc':>8}")
    accuracies = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as cwd:
            fit_s = run(["fit", "--config", str(CONFIG), f"--seed_everything={seed}", *QUIET, *extra], cwd)
            best = next(Path(cwd, "runs", "lenet_digits", "version_0", "checkpoints").glob("best-*.ckpt"))
            run(["test", "--config", str(CONFIG), f"--ckpt_path={best}", *QUIET], cwd)
            with open(Path(cwd, "runs", "lenet_digits", "version_1", "metrics.csv")) as f:
                accuracy = float(next(r for r in csv.DictReader(f) if r.get("test/acc"))["test/acc"])
        accuracies.append(accuracy)
        print(f"{seed:>4}  {fit_s:>10.1f}  {accuracy:>8.4f}", flush=True)
    print(f"test accuracy of the printed best checkpoint over {len(seeds)} seeds: mean {sum(accuracies) / len(seeds):.4f}, "
          f"min {min(accuracies):.4f}, below 0.99 on {sum(a < 0.99 for a in accuracies)}")


if __name__ == "__main__":
    main()
