"""Where things are: the clone the package runs from (if any), the scripts, the base config, the runs folder."""

import os
import sys
from pathlib import Path
from typing import Any

from project.errors import UserError

REPOSITORY = Path(__file__).resolve().parents[3]  # the clone, when the package runs from one (src/project/engine/)
TRAIN_PY = (REPOSITORY / "train.py", "project")  # a script of the clone, and the module that runs it when installed
PREDICT_ONNX_PY = (REPOSITORY / "predict_onnx.py", "project.inference.predict")
SERVE_PY = (REPOSITORY / "serve.py", "project.inference.server")
RUNS = "runs"  # trainer.logger.init_args.save_dir in configs/base.yaml


def base_config(config_files: list[str]) -> Path | None:
    """``configs/base.yaml``, read before every config: the one in the folder of the first
    ``--config`` given or a folder above it, else in the working directory, else in the clone the
    package runs from; never inside an installed package. None when there is none."""
    places = [folder for config in config_files[:1] for folder in Path(config).resolve().parents]
    for folder in [*places, Path.cwd(), REPOSITORY]:
        for candidate in (folder / "base.yaml", folder / "configs" / "base.yaml"):
            if candidate.parent.name == "configs" and candidate.is_file() and "site-packages" not in candidate.parts:
                return candidate
    return None


def script_command(script: tuple[Path, str], args: list[str]) -> list[str]:
    """``SCRIPT ARGS`` with this interpreter, as the user would run it from here; ``-m MODULE ARGS``
    where the script is not there (an installed package)."""
    path, module = script
    if not path.is_file():
        return [sys.executable, "-m", module, *args]
    return [sys.executable, os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path), *args]


def train_command(subcommand: str, args: list[str]) -> list[str]:
    """``train.py SUBCOMMAND ARGS`` with this interpreter, as the user would run it; ``-m project
    SUBCOMMAND ARGS`` when that is what runs now, or when there is no ``train.py``."""
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

