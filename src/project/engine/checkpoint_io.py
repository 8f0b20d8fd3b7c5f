"""Checkpoint files: read once per run, with one clear message for a file that is not a checkpoint,
and written so that they are either whole or not there, wherever the run folder is."""

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from project.errors import UserError

def file_identity(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_ino, stat.st_mtime_ns


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents, memory-mapped (tensors are read when used), with
    ``weights_only=True``; ``UserError`` for a file that is not a whole checkpoint written by
    ``torch.save``. The command line hands them to ``AtomicCheckpointIO.hand_over``, so a run that
    names a checkpoint reads it once."""
    try:
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # a truncated or foreign file: torch raises many kinds
        raise UserError(f"{path} is not a readable checkpoint (truncated, not saved by torch.save, or holding Python "
                        f"objects, which are not loaded for safety): {type(error).__name__}") from error
    if not isinstance(content, dict) or "state_dict" not in content:
        raise UserError(f"{path} is not a Lightning checkpoint (it has no state_dict)")
    return content


def is_plain_data(value: Any) -> bool:
    """Numbers, strings, None and lists or dicts of them: what a checkpoint loads with weights_only=True."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain_data(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(is_plain_data(v) for v in value)
    return isinstance(value, (str, int, float, bool, type(None)))


def keep_plain_hyperparameters(checkpoint: dict[str, Any], sizes: dict[str, Any]) -> None:
    """Leave in a checkpoint's hyperparameters only plain data, and add the net's ``sizes``.

    From the command line every hyperparameter is plain data (the net and optimizer as class_path
    and init_args), which test, predict and load_from_checkpoint rebuild them from. Objects given in
    Python (a net class, an optimizer) are left out, so that the checkpoint still loads with
    weights_only=True; pass them to load_from_checkpoint instead. The same goes for the data module's. The sizes came from the data:
    whatever loads the checkpoint builds the same net before it loads the weights."""
    hparams = checkpoint.setdefault("hyper_parameters", {})
    for saved in (hparams, checkpoint.get("datamodule_hyper_parameters") or {}):  # the data module's too
        for key in [key for key, value in saved.items() if not is_plain_data(value)]:
            del saved[key]
    hparams.update(sizes)


def check_same_model(saved: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> None:
    """Name a checkpoint of another model plainly, before Lightning's long key-mismatch dump."""
    missing, foreign = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    if missing or foreign:
        raise UserError(
            f"the checkpoint was saved from a different model: {len(missing)} of this model's tensors are not in it"
            + (f" (e.g. {missing[0]})" if missing else "")
            + f" and {len(foreign)} of its tensors are not this model's" + (f" (e.g. {foreign[0]})" if foreign else "")
        )
    for key, tensor in saved.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise UserError(f"the checkpoint's {key} has shape {tuple(tensor.shape)} but this model's has {tuple(own[key].shape)}: "
                            "it was trained with other sizes (classes, inputs) or another net")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO``, writing local checkpoints next to where they belong, and
    loading the one the command line named from what ``read_checkpoint`` read already.

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
        except (OSError, RuntimeError) as error:
            # A read-only, full or missing output folder: the previous checkpoint is still whole.
            # On a full disk torch.save raises RuntimeError ("[enforce fail at inline_container.cc]")
            # with the OSError as its context.
            cause = error if isinstance(error, OSError) else error.__context__
            if not isinstance(cause, OSError):
                raise
            raise UserError(f"cannot write the checkpoint {path}: {cause.strerror or cause}") from error

    def __init__(self) -> None:
        super().__init__()
        self._read: tuple[tuple[str, int, int], dict[str, Any]] | None = None  # (file identity, content)

    def hand_over(self, path: Path, content: dict[str, Any]) -> None:
        """The contents of ``path``, read already (``read_checkpoint``): the first load of that same
        file returns them rather than reading it again."""
        self._read = (file_identity(path), content)

    def load_checkpoint(self, path: Any, map_location: Any = lambda storage, loc: storage,
                        weights_only: bool | None = None) -> dict[str, Any]:
        if self._read is not None and weights_only is not False and Path(path).is_file():
            identity, content = self._read
            if identity == file_identity(Path(path)):
                self._read = None  # handed over: Lightning keeps it for as long as it needs it
                return content
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)


def current_umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def write_atomically(content: Any, path: Path) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file readable by its owner only; a checkpoint is as readable as the
        # run's other files (0644 under the usual umask), so colleagues on a shared disk can load it.
        os.chmod(temporary, 0o666 & ~current_umask())
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
