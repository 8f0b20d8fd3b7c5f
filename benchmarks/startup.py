"""Start-up time of the command line, and what it is made of.

    python benchmarks/startup.py [--repeats 3]

Prints the best of N wall times of: the bare interpreter, `import torch`, `import lightning`,
`import project.tools.cli` (the template's own modules on top), and `python train.py --help`
(LightningCLI builds its parser from every class the configs may name).
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import torch": [sys.executable, "-c", "import torch"],
    "import lightning": [sys.executable, "-c", "import lightning.pytorch"],
    "import project.tools.cli": [sys.executable, "-c", "import project.tools.cli"],
    "train.py --help": [sys.executable, str(REPO / "train.py"), "--help"],
    "train.py fit --help": [sys.executable, str(REPO / "train.py"), "fit", "--help"],
}


def best_wall_time(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    for name, command in COMMANDS.items():
        print(f"{name:>20}: {best_wall_time(command, repeats):6.2f} s", flush=True)


if __name__ == "__main__":
    main()
