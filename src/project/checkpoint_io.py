"""Checkpoint files that are either whole or not there, wherever the run folder is."""

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from project.errors import UserError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO``, writing local checkpoints next to where they belong.

    Lightning 2.6 writes a local checkpoint to a temporary file in ``$TMPDIR`` and moves it into
    place. When the run folder is on another file system (local ``/tmp``, shared run folder: the
    usual cluster layout) that move is a copy, so a kill or a full disk during it leaves a truncated
    ``last.ckpt``, and a full ``/tmp`` stops training. Here the temporary file is in the checkpoint's
    own folder, is synced to disk, and replaces the old file with one rename: a reader sees the old
    checkpoint or the new one, never part of one. Remote paths (``s3://``) keep Lightning's way.

    ``configs/base.yaml`` lists it in ``trainer.plugins``; add others with ``--trainer.plugins+=...``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(checkpoint, path)
        except OSError as error:
            # A read-only, full or missing output folder: the previous checkpoint is still whole.
            raise UserError(f"cannot write the checkpoint {path}: {error.strerror or error}") from error


def write_atomically(content: Any, path: Path) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            torch.save(content, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    # The rename itself is durable only once the folder is synced.
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
