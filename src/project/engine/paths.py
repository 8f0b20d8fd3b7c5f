"""Where things are: the repository, its ``train.py`` and base config, and the runs folder."""

import os
import sys
from pathlib import Path
from typing import Any

from project.errors import UserError

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
    """``train.py SUBCOMMAND ARGS`` with this interpreter, as the user would run it; ``-m project
    SUBCOMMAND ARGS`` when that is what runs now."""
    if getattr(sys.modules["__main__"].__spec__, "name", None) == "project.__main__":
        return [sys.executable, "-m", "project", subcommand, *args]
    return script_command(TRAIN_PY, [subcommand, *args])


def runs_root(trainer_config: Any) -> Path:
    """Where runs go: ``runs``, or ``trainer.default_root_dir`` when that is given."""
    return Path(trainer_config.get("default_root_dir") or RUNS)


def check_folder_can_be_written(folder: Path, refusal: str) -> None:
    """Refuse, before any work, a folder that cannot be made or written to: under a file, or in a
    folder this user may not write to (``refusal`` starts the message). Nothing is created."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{refusal}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{refusal}: {existing} is not writable")
