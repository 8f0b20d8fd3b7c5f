"""Finding the checkpoint (and the W&B run) a restarted ``fit`` continues from."""

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info


def checkpoint_root(trainer_config: Any) -> Path:
    """The folder whose runs ``--resume auto`` searches: the logger's save_dir and name (or project)."""
    logger = trainer_config.get("logger")
    if isinstance(logger, list):
        logger = logger[0] if logger else None
    default_root = Path(trainer_config.get("default_root_dir") or ".")
    if not hasattr(logger, "get"):  # no logger (False/None): Lightning writes under default_root_dir
        return default_root
    init_args = logger.get("init_args") or {}
    root = Path(init_args.get("save_dir") or default_root)
    name = init_args.get("project") if "WandbLogger" in str(logger.get("class_path", "")) else init_args.get("name")
    return root / name if name else root


def newest_checkpoint(trainer_config: Any) -> str | None:
    """The newest checkpoint under the run folder that reads as a whole checkpoint; damaged ones
    (a crash mid-write on a file system without atomic renames) are named and passed over."""
    root = checkpoint_root(trainer_config)
    candidates = sorted(root.glob("**/checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        try:
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if "state_dict" in content and "loops" in content:
                rank_zero_info(f"Resuming from {path}")
                return str(path)
        except Exception as error:  # a truncated or foreign file: try the next one
            rank_zero_info(f"Skipping unreadable checkpoint {path}: {type(error).__name__}")
    rank_zero_info(f"No checkpoint under {root} to resume from: starting afresh")
    return None


def continue_wandb_run(config: Any) -> None:
    """``fit --ckpt_path FILE`` under the W&B logger: continue the W&B run that wrote the checkpoint."""
    logger = config["trainer"].get("logger")
    ckpt_path = config.get("ckpt_path")
    if not logger or not ckpt_path or not Path(ckpt_path).is_file() or isinstance(logger, (bool, list)):
        return
    if not str(logger.get("class_path", "")).endswith("WandbLogger") or logger["init_args"].get("id"):
        return
    run_id = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True).get("logger_version")
    if isinstance(run_id, str):
        logger["init_args"]["id"] = run_id
        logger["init_args"]["resume"] = "allow"
