"""Where things are: the repository, its ``train.py`` and base config, and the runs folder."""

import os
import sys
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[3]
TRAIN_PY = REPOSITORY / "train.py"
PREDICT_ONNX_PY = REPOSITORY / "predict_onnx.py"
SERVE_PY = REPOSITORY / "serve.py"
BASE_CONFIG = REPOSITORY / "configs" / "base.yaml"
RUNS = "runs"  # trainer.logger.init_args.save_dir in configs/base.yaml


def script_command(script: Path, args: list[str]) -> list[str]:
    """``SCRIPT ARGS`` with this interpreter, as the user would run it from here."""
    return [sys.executable, os.path.relpath(script) if script.is_relative_to(Path.cwd()) else str(script), *args]


def train_command(subcommand: str, args: list[str]) -> list[str]:
    """``train.py SUBCOMMAND ARGS`` with this interpreter, as the user would run it."""
    return script_command(TRAIN_PY, [subcommand, *args])


def runs_root(trainer_config: Any) -> Path:
    """Where runs go: ``runs``, or ``trainer.default_root_dir`` when that is given."""
    return Path(trainer_config.get("default_root_dir") or RUNS)
