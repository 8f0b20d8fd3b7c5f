"""Shared fixtures: small image folders, MNIST-format files and tensor files, all generated on the fly."""

import csv
import gzip
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

# Two test workers share two cores: a second compute thread in a process would only wait for the
# other worker (epochs of the digits recipe took 3-10 times longer). Set before torch is imported;
# the train.py processes that tests start inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Lightning gives its logger a handler on the sys.stderr of the moment it is first imported; imported
# here, that is pytest's session-long stream, not one test's capsys stream that is closed after it.
import lightning.pytorch  # noqa: E402, F401
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
KILLABLE = ["--trainer.callbacks+=faults.InjectedFault"]  # tests/faults.py: the fault PROJECT_FAULT names


def kill_at(spec: str, **extra: str) -> dict[str, str]:
    """The environment of a run with ``KILLABLE`` among its arguments that meets the fault ``spec`` (tests/faults.py)."""
    return {**os.environ, "PROJECT_FAULT": spec, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), **extra}


def tripwire(*args, **kwargs):
    """A callable no config may reach: calling it leaves a file (tests of what a config can run)."""
    Path(os.environ["TRIPWIRE_FILE"]).write_text("called")


class Tripwire:
    """A class of no base type the project takes: making one leaves a file."""

    def __init__(self, *args, **kwargs) -> None:
        Path(os.environ["TRIPWIRE_FILE"]).write_text("instantiated")


class NaNEveryThirdCall(nn.Module):
    """Cross-entropy per sample that is NaN on every third call: NaN steps without NaN data."""

    def __init__(self, reduction: str = "none") -> None:
        super().__init__()
        self.calls, self.reduction = 0, reduction

    def forward(self, logits, target):
        self.calls += 1
        losses = nn.functional.cross_entropy(logits, target, reduction="none")
        return losses * float("nan") if self.calls % 3 == 0 else losses


class AlwaysNaN(nn.Module):
    """A loss that is NaN on every call: every step's gradients are NaN."""

    def __init__(self, reduction: str = "none") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, logits, target):
        return nn.functional.cross_entropy(logits, target, reduction="none") * float("nan")


class FixedWidthNet(nn.Module):
    """A net that ignores the output count it is given: always ``width`` outputs."""

    def __init__(self, num_outputs: int, input_shape: tuple[int, ...], width: int = 5) -> None:
        super().__init__()
        self.layer = nn.Linear(math.prod(input_shape), width)

    def forward(self, x):
        return self.layer(x.flatten(1))


def train_py(*args: str, cwd: Path, launcher: tuple[str, ...] = (), env: dict[str, str] | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``train.py`` as a user would, optionally under a launcher such as torchrun."""
    command = [*launcher, str(REPO / "train.py"), *args] if launcher else [sys.executable, str(REPO / "train.py"), *args]
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def write_png(path: Path, label: int, mode: str, size: int = 12, seed: int = 0) -> None:
    """A small image whose brightness pattern depends on ``label``, so a net can learn the classes."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 40, (size, size)).astype(np.uint8)
    if label == 0:
        pixels[:, : size // 2] += 200  # class 0: bright left half
    else:
        pixels[:, size // 2 :] += 200  # class 1: bright right half
    image = Image.fromarray(pixels, mode="L")
    path.parent.mkdir(parents=True, exist_ok=True)
    (image.convert("RGB") if mode == "RGB" else image).save(path)


def make_image_tree(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 20) -> Path:
    """``root/<class>/<n>.png``, alternating grayscale and RGB files."""
    for label, name in enumerate(classes):
        for i in range(per_class):
            write_png(root / name / f"{i:03d}.png", label % 2, "L" if i % 2 else "RGB", seed=label * 1000 + i)
    return root


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    return make_image_tree(tmp_path / "images")


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) in the MNIST idx format: magic, dimension sizes, raw bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_mnist_files(root: Path, folder: str = "MNIST", train: int = 60, test: int = 20) -> Path:
    """Uncompressed idx files laid out as torchvision expects: ``root/<folder>/raw/*-ubyte``."""
    rng = np.random.default_rng(0)
    raw = root / folder / "raw"
    for prefix, count in (("train", train), ("t10k", test)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 50, (count, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 + label * 2 : 6 + label * 2, 4:24] = 255  # a bar whose height codes the label
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def gzip_file(path: Path) -> None:
    path.with_suffix(path.suffix + ".gz").write_bytes(gzip.compress(path.read_bytes()))
