"""What produced a run: the command, the code, the packages, the machine and the data.

``run_record`` gathers it; ``engine.callbacks.RunRecord`` writes it as ``record.json`` in every
run folder. Two runs whose records agree were made by the same command on the same code,
packages and data; where they differ, the record says what changed.
"""

import hashlib
import importlib.metadata
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from project.engine.data import ProjectDataModule

PACKAGES = ("torch", "lightning", "torchvision", "torchmetrics", "jsonargparse", "wandb", "optuna", "numpy")
GIT_TIMEOUT_S = 10


def run_record(repository: Path, run_folder: Path, trainer: Any, datamodule: ProjectDataModule, subcommand: str) -> dict[str, Any]:
    """The record of a run about to start. A dirty tree's diff is saved beside it (``git.diff``)."""
    return {
        "subcommand": subcommand,
        "command": shlex.join([sys.executable, *sys.argv]),
        "launcher": launcher(),
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": int(os.environ["PL_GLOBAL_SEED"]) if "PL_GLOBAL_SEED" in os.environ else None,
        "git": git_state(repository, run_folder),
        "versions": package_versions(),
        "devices": device_info(trainer),
        "data": datamodule.fingerprint(subcommand),
    }


def launcher() -> str:
    """What started this process: torchrun, SLURM's srun, or the command itself (``direct``)."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return "torchrun"
    if "SLURM_JOB_ID" in os.environ:
        return f"slurm job {os.environ['SLURM_JOB_ID']}"
    return "direct"


def git(repository: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(repository), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(repository: Path, run_folder: Path) -> dict[str, Any]:
    """The commit, whether the tree differs from it, and where its diff was saved."""
    commit = git(repository, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "note": f"{repository} is not a git checkout (or git is missing)"}
    status = git(repository, "status", "--porcelain") or ""
    untracked = [line[3:] for line in status.splitlines() if line.startswith("??")]
    changed = [line[3:] for line in status.splitlines() if not line.startswith("??")]
    state: dict[str, Any] = {"commit": commit.strip(), "dirty": bool(status.strip()), "changed": changed, "untracked": untracked}
    if changed:
        diff = git(repository, "diff", "HEAD", "--binary") or ""
        path = unused_name(run_folder, "git.diff")
        path.write_text(diff)
        state["diff"] = path.name
    return state


def unused_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``stem_resumed_N.suffix`` when a run continued in this folder already wrote it."""
    path, n = folder / name, 0
    while path.exists():
        n += 1
        path = folder / f"{Path(name).stem}_resumed_{n}{Path(name).suffix}"
    return path


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["cuda_build"] = torch.version.cuda  # the CUDA the torch wheel was built for (set on CPU too)
    versions["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    return versions


def device_info(trainer: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "processes": trainer.world_size,
        "devices_per_node": trainer.num_devices,
        "nodes": trainer.num_nodes,
        "accelerator": type(trainer.accelerator).__name__,
        "strategy": type(trainer.strategy).__name__,
        "precision": str(trainer.precision),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else [],
        "driver": None,
    }
    if info["gpus"] and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False).stdout
            info["driver"] = out.splitlines()[0].strip() if out.strip() else None
        except (OSError, subprocess.TimeoutExpired):
            pass
    return info


def hash_files(entries: Iterable[tuple[str, str]], root: Path) -> dict[str, Any]:
    """A hash of ``(group, path)`` entries by group, path relative to ``root`` and size (not content:
    reading every file would cost as much as an epoch)."""
    digest, files, size = hashlib.sha256(), 0, 0
    for group, path in entries:
        nbytes = os.stat(path).st_size
        relative = os.path.relpath(path, root)
        digest.update(f"{group}\t{relative}\t{nbytes}\n".encode())
        files, size = files + 1, size + nbytes
    return {"sha256": digest.hexdigest(), "kind": "file names and sizes", "files": files, "bytes": size}


def hash_tensors(tensors: Iterable[torch.Tensor]) -> str:
    """A hash of tensors' dtypes, shapes and contents."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()
