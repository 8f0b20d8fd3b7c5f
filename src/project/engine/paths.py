"""Where things are: the repository, its ``train.py`` and base config, and the runs folder."""

import os
import sys
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[3]
TRAIN_PY = REPOSITORY / "train.py"
BASE_CONFIG = REPOSITORY / "configs" / "base.yaml"
RUNS = "runs"  # trainer.logger.init_args.save_dir in configs/base.yaml


def train_command(subcommand: str, args: list[str]) -> list[str]:
    """``train.py SUBCOMMAND ARGS`` with this interpreter, as the user would run it."""
    script = os.path.relpath(TRAIN_PY) if TRAIN_PY.is_relative_to(Path.cwd()) else str(TRAIN_PY)
    return [sys.executable, script, subcommand, *args]


def runs_root(trainer_config: Any) -> Path:
    """Where runs go: ``runs``, or ``trainer.default_root_dir`` when that is given."""
    return Path(trainer_config.get("default_root_dir") or RUNS)
