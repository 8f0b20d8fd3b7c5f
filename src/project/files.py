"""Files written whole or not at all, for every part of the project that writes results."""

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from project.errors import UserError


def write_whole(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` a file beside ``path``, then rename it over ``path``: a reader finds the old file or
    the new one, never part of one. A full or read-only disk is one line (``UserError``), with
    nothing half-written left. The file beside keeps the suffix (``.record.partial.json``), which
    writers such as matplotlib's read the format from."""
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        write(partial)
        os.replace(partial, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {error.strerror or error}; nothing was written") from error


def write_figure(figure: Any, path: Path, **savefig: Any) -> None:
    """A matplotlib figure saved whole as ``write_whole`` saves files, then closed (also when the
    disk refuses it)."""
    import matplotlib.pyplot as plt  # only where a figure is drawn

    try:
        write_whole(path, lambda partial: figure.savefig(partial, **savefig))
    finally:
        plt.close(figure)
