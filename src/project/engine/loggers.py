"""Loggers: CSV and TensorBoard whose runs never share a folder, and Weights & Biases that never
blocks a run (online with a key and a network, offline otherwise)."""

import netrc
import os
import shlex
import socket
import sys
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from project.engine.preflight import check_run_folder_name
from project.errors import UserError

DEFAULT_HOST = "https://api.wandb.ai"


class ClaimsItsVersion:
    """Mixin for Lightning's CSV and TensorBoard loggers: the run claims its ``version_N`` folder.

    Lightning picks the next free ``version_N`` by listing the folder and creates it later, so runs
    started at the same moment in one folder (a search's workers, a job array) can pick the same
    one and write into each other's files. Here rank 0 creates the folder at once, with a create
    that fails if it exists, and takes the next number until one succeeds.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        check_run_folder_name("name", self.name)  # type: ignore[attr-defined]
        check_run_folder_name("version", kwargs.get("version"))

    @cached_property
    def version(self) -> int | str:
        version = super().version  # type: ignore[misc]
        if isinstance(version, int) and rank_zero_only.rank == 0:
            version = claim_version_folder(Path(self.root_dir), version)  # type: ignore[attr-defined]
        elif isinstance(version, str) and rank_zero_only.rank == 0:
            claim_named_folder(Path(self.root_dir) / version)  # type: ignore[attr-defined]
        return version


def claim_named_folder(folder: Path) -> None:
    """A version named with ``--trainer.logger.init_args.version`` is this run's alone: a folder of
    that name that exists (an earlier run's, or one started at the same moment) is refused."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()
    except FileExistsError:
        raise UserError(f"{folder} exists: another run wrote there. Name another --trainer.logger.init_args.version, "
                        "or leave it out for the next version_N; --ckpt_path or --resume auto continue that run") from None


def next_free_name(root: Path, version: str) -> str:
    """``version`` if ``root`` has no folder of that name, else the first free ``version-N``."""
    name, number = version, 1
    while (root / name).exists():
        number += 1
        name = f"{version}-{number}"
    return name


def claim_version_folder(root: Path, first: int) -> int:
    root.mkdir(parents=True, exist_ok=True)
    version = first
    while True:
        try:
            (root / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1


class CSVLogger(ClaimsItsVersion, LightningCSVLogger):
    """Lightning's ``CSVLogger`` (``metrics.csv``); each run claims its own ``version_N``. A full or
    read-only disk while it writes ends the run with one line naming the file."""

    @rank_zero_only
    def save(self) -> None:
        try:
            super().save()
        except OSError as error:
            raise UserError(f"cannot write {Path(self.log_dir) / 'metrics.csv'}: {error.strerror or error}") from error


class TensorBoardLogger(ClaimsItsVersion, LightningTensorBoardLogger):
    """Lightning's ``TensorBoardLogger``; each run claims its own ``version_N``."""


def wandb_host() -> str:
    return os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)


def has_api_key(host: str) -> bool:
    """An API key in ``WANDB_API_KEY`` or in the netrc file ``wandb login`` writes."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(path).authenticators(urlparse(host).hostname or host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, PermissionError):
        return False


def reachable(host: str, timeout: float = 3.0) -> bool:
    url = urlparse(host)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def offline_reason() -> str | None:
    """Why this run cannot log online, or ``None`` when it can (or the user chose with ``WANDB_MODE``)."""
    if os.environ.get("WANDB_MODE"):
        return None
    host = wandb_host()
    if not has_api_key(host):
        return "no W&B API key (WANDB_API_KEY or `wandb login`)"
    if not reachable(host):
        return f"{urlparse(host).hostname} is not reachable"
    return None


class AutoOfflineWandbLogger(LightningWandbLogger):
    """Lightning's ``WandbLogger``, offline by itself when there is no API key or no network.

    Without a key, ``wandb.init`` would stop the run with an error, and with a key but no network
    it would wait for minutes; instead the run is logged to ``save_dir/wandb/offline-run-*`` and
    the last line says how to upload it later (``wandb sync``). ``WANDB_MODE`` set by the user wins.
    Only rank 0 creates a run under DDP (Lightning's ``rank_zero_experiment``).

    The run's folder is Lightning's: ``{save_dir}/{project}/{run id}/`` holds the checkpoints,
    ``config.yaml`` and the plots. ``fit --ckpt_path`` continues the W&B run that wrote the checkpoint.
    Every argument is Lightning's; ``log_model`` is off by default here.
    """

    def __init__(
        self,
        project: str = "project",
        name: str | None = None,
        save_dir: str = "runs",
        log_model: bool | str = False,
        offline: bool = False,
        **kwargs: Any,
    ) -> None:
        rank_zero = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("RANK", "0") == "0"
        reason = offline_reason() if rank_zero and not offline else None
        if reason:
            offline = True
            kept = " (log_model is off offline: checkpoints stay on disk)" if log_model else ""
            log_model = False
            rank_zero_info(f"W&B: offline ({reason}); the run is saved under {save_dir}/wandb{kept}")
            # wandb's own lines would repeat the upload command at exit with a bare `wandb` (not on
            # PATH outside the venv) and colour codes; finalize prints it once instead. wandb 0.31
            # prints that footer from its service, which heeds this variable but not Settings(silent).
            os.environ.setdefault("WANDB_SILENT", "true")
        self.offline_reason = reason
        if rank_zero:
            Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(project=project, name=name, save_dir=save_dir, log_model=log_model, offline=offline, **kwargs)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if self.offline_reason:
            offline_run = Path(self.experiment.dir).parent  # wandb's offline-run-<time>-<id> folder
            command = shlex.join([sys.executable, "-m", "wandb", "sync", str(offline_run)])
            rank_zero_info(f"W&B: upload this run later with: {command}")


def run_folder(trainer: Trainer) -> Path:
    """This run's folder, for its config, plots, predictions and reports: the logger's own
    (``save_dir/name/version_N`` for CSV and TensorBoard, ``save_dir/project/run id`` for W&B, the
    folder that also holds ``checkpoints/``), or ``default_root_dir`` without a logger.
    Call it on rank 0 (other ranks do not know the version)."""
    logger = trainer.logger
    if logger is None:
        return Path(trainer.default_root_dir)
    log_dir = getattr(logger, "log_dir", None)
    if log_dir:
        return Path(log_dir)
    version = logger.version
    return Path(logger.save_dir or trainer.default_root_dir, str(logger.name), version if isinstance(version, str) else f"version_{version}")


def log_picture(logger: Logger | None, key: str, path: Path) -> None:
    """Send a PNG to loggers that take images (W&B); the file in the run folder is there either way."""
    if logger is not None and hasattr(logger, "log_image"):
        logger.log_image(key=key, images=[str(path)])

