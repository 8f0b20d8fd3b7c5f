"""Write scikit-learn's 1,797 handwritten digits as an image folder for configs/lenet_imagefolder.yaml.

    python scripts/make_digit_folders.py data/digit_folders [--seed 0]

One folder per class, named by its word (``zero/`` ... ``nine/``), as a user's own folder would
be: every 8x8 digit becomes a PNG of its own size (8 to 48 pixels a side) and mode (grayscale,
RGB or palette), white ink on black. ``--seed`` picks the sizes, modes and resampling filters, so
different seeds give different folders of the same digits: tune on one, check on others.
"""

import argparse
import os
import shlex
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SIZES = [8, 12, 16, 24, 32, 48]
MODES = ["L", "RGB", "P"]
FILTERS = [Image.Resampling.NEAREST, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC]


def write_digit_folders(root: Path, seed: int = 0) -> int:
    """``root/<word>/<n>.png`` for every digit; returns how many files were written."""
    digits = load_digits()
    rng = np.random.default_rng(seed)
    for name in CLASS_NAMES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for n, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        size, mode, resample = rng.choice(SIZES), rng.choice(MODES), FILTERS[rng.integers(len(FILTERS))]
        image = Image.fromarray((pixels * (255 / 16)).round().astype(np.uint8), mode="L")
        image = image.resize((int(size), int(size)), resample=resample).convert(str(mode))
        image.save(root / CLASS_NAMES[label] / f"{n:04d}.png")
    return len(digits.target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--seed", type=int, default=0, help="picks each file's size, mode and resampling filter")
    args = parser.parse_args()
    count = write_digit_folders(args.output, args.seed)
    print(f"wrote {count} digits in {len(CLASS_NAMES)} class folders under {args.output}")
    repo = Path(__file__).resolve().parents[1]
    here = lambda path: os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)  # noqa: E731
    command = [sys.executable, here(repo / "train.py"), "fit", "--config", here(repo / "configs" / "lenet_imagefolder.yaml"),
               "--data.data_dir", str(args.output)]
    print(f"train on them:\n  {shlex.join(command)}")


if __name__ == "__main__":
    main()
