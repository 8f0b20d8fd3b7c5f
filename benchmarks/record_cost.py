"""What the run record (record.json) costs a run, and of what.

    python benchmarks/record_cost.py [--repeats 5]

Builds the digits job of configs/lenet_digits.yaml (and, with --with-60k, the MNIST-size overlay
configs/data/digits_60k.yaml) as train.py would, reads its data, then times `project.engine.provenance.run_record`
(what RunRecord does when a run starts) and each of its parts: git (commit, status, diff),
package versions, devices, and the data fingerprint. Prints the median of N repeats.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from project.tools.cli import ProjectCLI
from project.engine.internals import quiet_known_noise
from project.engine.paths import REPOSITORY
from project.engine.provenance import device_info, git_state, package_versions, run_record

CONFIG = REPOSITORY / "configs" / "lenet_digits.yaml"
OVERLAY_60K = REPOSITORY / "configs" / "data" / "digits_60k.yaml"


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(configs: list[Path], repeats: int) -> None:
    args = [arg for config in configs for arg in ("--config", str(config))]
    with tempfile.TemporaryDirectory() as folder:
        cli = ProjectCLI(args=[*args, f"--trainer.default_root_dir={folder}", "--trainer.logger=false"], run=False)
        data, trainer = cli.datamodule, cli.trainer
        data.setup("fit")
        parts = {
            "git (commit, status, diff)": lambda: git_state(REPOSITORY, Path(folder)),
            "package versions": package_versions,
            "devices": lambda: device_info(trainer),
            "data fingerprint": lambda: data.fingerprint("fit"),
            "whole record": lambda: run_record(REPOSITORY, Path(folder), trainer, data, "fit"),
        }
        name = " + ".join(c.stem for c in configs)
        print(f"{name}: {len(data.train_set)} training samples")
        for part, function in parts.items():
            print(f"  {part:<28} {median_seconds(function, repeats) * 1000:8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--with-60k", action="store_true", help="also the 60,000-image overlay (builds it first: ~1 min)")
    options = parser.parse_args()
    quiet_known_noise()
    measure([CONFIG], options.repeats)
    if options.with_60k:
        measure([CONFIG, OVERLAY_60K], options.repeats)


if __name__ == "__main__":
    main()
