"""Files to numbers: image files and tables, read the same way for training and for a deployed model.

Only numpy and PIL (torch for ``.pt`` files alone): the data modules read their files with these
functions, and so does an exported model's predictor and server, which start without torch.
"""

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from project.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's IMG_EXTENSIONS
TABLE_SUFFIXES = (".pt", ".npz", ".npy", ".csv")


# -- images -------------------------------------------------------------------------------------


class UnreadableImage(UserError):
    """A file that PIL cannot decode as an image."""


def is_hidden(path: Path, root: Path) -> bool:
    """Below ``root``, in or under a folder or file whose name starts with a dot (``.ipynb_checkpoints``,
    ``.DS_Store``, ``.git``): what editors and tools leave beside the data, never data."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def image_files(root: Path) -> list[str]:
    """All image files below ``root`` (any depth, hidden ones left out), sorted: what ``predict`` labels."""
    if not root.is_dir():
        raise UserError(f"predict folder not found: {root}")
    files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not is_hidden(p, root))
    if not files:
        raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
    return files


def in_mode(image: Image.Image, channels: int) -> Image.Image:
    """``image`` as ``L`` (1 channel) or ``RGB`` (3 channels), so mixed folders load alike.

    16-bit grayscale (PIL modes ``I;16*`` and ``I``, e.g. 16-bit PNGs) is scaled to 8 bits first:
    PIL's own conversion clips it, so a 0-65535 ramp would become almost all white.
    """
    mode = "L" if channels == 1 else "RGB"
    if image.mode.startswith("I;16") or image.mode == "I":
        high_bits = np.asarray(image, dtype=np.int64).clip(0, 65535) >> 8
        image = Image.fromarray(high_bits.astype(np.uint8), "L")
    elif image.mode == "F":
        raise UserError(f"{getattr(image, 'filename', 'an image')}: 32-bit float pixels; save it with 8 or 16 bits per channel")
    return image if image.mode == mode else image.convert(mode)


class TooManyPixels(UnreadableImage):
    """An image whose header says it holds more pixels than the reader decodes."""


def image_pixels(source: str | bytes, channels: int, size: int, name: str | None = None,
                 max_pixels: int | None = None) -> np.ndarray:
    """An image file (a path, or its bytes) as float32 pixels in [0, 1], ``channels x size x size``:
    converted (``in_mode``), resized bilinearly by PIL, divided by 255, as the evaluation
    transforms of ``ImageTransforms`` make it before normalisation.

    ``max_pixels`` bounds the work before it is done: the size is read from the file's header, a
    larger JPEG is reduced while it is decoded (PIL's draft mode, by a power of two, to no less
    than ``size``) where that brings it under the bound, and any other is refused (``TooManyPixels``)."""
    label = name or (source if isinstance(source, str) else "the upload")
    try:
        with warnings.catch_warnings():
            if max_pixels is not None:  # PIL warns of a large image: here it is refused or reduced instead
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source if isinstance(source, str) else io.BytesIO(source))
        with image:
            if max_pixels is not None and image.width * image.height > max_pixels:
                image.draft("L" if channels == 1 else "RGB", (size, size))  # JPEG only; a no-op for others
                if image.width * image.height > max_pixels:
                    raise TooManyPixels(f"image {label} is {image.width} x {image.height} pixels, more than the "
                                        f"{max_pixels:,} this reader decodes")
            image.load()
            resized = in_mode(image, channels).resize((size, size), Image.BILINEAR)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadableImage(f"cannot read image {label}: {error}") from error
    pixels = np.asarray(resized, dtype=np.float32) / 255
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


# -- tables -------------------------------------------------------------------------------------


def is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def is_header(first: str, second: str) -> bool:
    """Whether a CSV's first line names its columns: it has a word where the next line has a
    number (a label column of words, ``cat``, is no header), or, alone, any word at all."""
    names = first.strip().split(",")
    if not second.strip():
        return not all(is_number(name) for name in names)
    return any(not is_number(name) and is_number(value) for name, value in zip(names, second.strip().split(",")))


def read_table(path: Path) -> np.ndarray:
    """A 2-D table of numbers from ``.npy`` or ``.csv``; of text when a column holds words (class
    names, read as labels). A CSV header row is skipped."""
    if path.suffix == ".npy":
        table = np.load(path, allow_pickle=False)
    else:
        with path.open() as f:
            first, second = f.readline(), f.readline()
        header = bool(first.strip()) and is_header(first, second)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's "input contained no data": said below, in one line
            table = np.char.strip(np.loadtxt(path, delimiter=",", skiprows=int(header), ndmin=2, dtype=str))
        if table.size == 0:
            raise UserError(f"{path}: holds no rows{' below its header' if header else ' (the file is empty)'}")
        try:
            table = table.astype(np.float64)
        except ValueError:
            pass  # words in some column: the caller takes them as labels or refuses them
    if table.ndim != 2:
        raise UserError(f"{path}: expected a 2-D table (rows of inputs then targets), got shape {table.shape}")
    return table


def is_text(array: np.ndarray) -> bool:
    return array.dtype.kind in "USO"


def numbers(array: np.ndarray, file: Path, what: str) -> np.ndarray:
    """``array`` as numbers, or one line naming the first value that is not a number."""
    if not is_text(array):
        return array
    try:
        return array.astype(np.float64)
    except ValueError:
        first = tuple(int(i) for i in np.argwhere(~np.vectorize(is_number)(array))[0])
        where = f"row {first[0]} column {first[1]}" if len(first) == 2 else f"element {first}"
        raise UserError(f"{file}: {what} must be numbers, but {where} is {str(array[first])!r}") from None


def read_arrays(path: str, input_key: str = "x", target_key: str | None = "y",
                num_target_columns: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """``(inputs, targets)`` from a tensor file, as arrays (targets may be text: class names).

    ``.pt``: a dict with ``input_key``/``target_key`` or an ``(inputs, targets)`` pair, loaded with
    ``weights_only=True``. ``.npz``: arrays ``input_key`` and ``target_key``. ``.npy`` and ``.csv``:
    a 2-D table whose last ``num_target_columns`` columns are the targets (a CSV header row is skipped).
    Inputs alone (for ``predict``): ``target_key=None`` and ``num_target_columns=0``; then a ``.pt``
    file may also hold a bare tensor, and a table's every column is an input.
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"data file not found: {file}")
    if file.suffix not in TABLE_SUFFIXES:
        raise UserError(f"{file}: unsupported file type {file.suffix!r}, use one of {', '.join(TABLE_SUFFIXES)}")
    try:
        if file.suffix == ".pt":
            import torch  # only here: the rest of this module needs no torch

            content = torch.load(file, map_location="cpu", weights_only=True)
            if isinstance(content, dict):
                missing = [k for k in (input_key, target_key) if k is not None and k not in content]
                if missing:
                    raise UserError(f"{file}: keys {missing} not found (it has {sorted(content)})")
                inputs, targets = content[input_key], content.get(target_key)
            elif target_key is None and isinstance(content, torch.Tensor):
                inputs, targets = content, None
            elif isinstance(content, (tuple, list)) and len(content) == 2:
                inputs, targets = content
            else:
                raise UserError(f"{file}: expected a dict with {input_key!r}/{target_key!r} or an (inputs, targets) pair")
            inputs = inputs.numpy() if isinstance(inputs, torch.Tensor) else inputs
            targets = targets.numpy() if isinstance(targets, torch.Tensor) else targets
        elif file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as arrays:
                missing = [k for k in (input_key, target_key) if k is not None and k not in arrays]
                if missing:
                    raise UserError(f"{file}: arrays {missing} not found (it has {sorted(arrays.files)})")
                inputs, targets = arrays[input_key], arrays[target_key] if target_key is not None else None
        elif num_target_columns == 0:
            inputs, targets = read_table(file), None
        else:
            table = read_table(file)
            if not 0 < num_target_columns < table.shape[1]:
                raise UserError(f"{file}: has {table.shape[1]} columns, cannot take {num_target_columns} as targets")
            inputs, targets = table[:, :-num_target_columns], table[:, -num_target_columns:]
            if num_target_columns == 1:
                targets = targets[:, 0]
    except UserError:
        raise
    except Exception as error:  # a damaged or foreign file: say which file and why
        raise UserError(f"cannot read data file {file}: {error}") from error
    inputs = numbers(np.asarray(inputs), file, "input columns")
    if inputs.ndim == 0 or len(inputs) == 0:
        raise UserError(f"{file}: holds no samples (inputs of shape {tuple(inputs.shape)})")
    return inputs, None if targets is None else np.asarray(targets)


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    """``1x28x28``."""
    return "x".join(str(n) for n in shape)


def raw_rows(values: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Table rows (a list of rows, or one row) as float32 raw inputs of ``shape`` each, with one line
    for what does not fit: not numbers, the wrong width, NaN/inf."""
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise UserError(f"{name}: expected numbers, in a row or a list of rows") from None
    if array.shape == shape:
        array = array[None]
    if array.ndim == 0 or tuple(array.shape[1:]) != shape:
        raise UserError(f"{name}: a row of this model holds {shape_text(shape)} numbers, got shape {shape_text(array.shape)}")
    if bad := non_finite_rows(array):
        raise UserError(f"{name}: {len(bad)} row(s) hold NaN/inf ({some_rows(bad)})")
    return array


def non_finite_rows(inputs: np.ndarray) -> list[int]:
    """The rows of ``inputs`` that hold NaN or inf."""
    if inputs.dtype.kind != "f":
        return []
    return np.flatnonzero(~np.isfinite(inputs.reshape(len(inputs), -1)).all(1)).tolist()


def some_rows(rows: list[int]) -> str:
    return f"rows {rows[:5]}{', ...' if len(rows) > 5 else ''}"
