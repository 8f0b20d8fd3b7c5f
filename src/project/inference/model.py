"""An exported model (``train.py export``) run by onnxruntime: the ONNX graph and the JSON beside it."""

import json
from pathlib import Path
from typing import Any

import numpy as np

from project.errors import UserError
from project.inference.inputs import (
    IMAGE_SUFFIXES,
    image_files,
    image_pixels,
    raw_rows,
    read_arrays,
    shape_text,
)
from project.inference.predictions import TASKS, prediction_rows, probabilities

FORMAT = 1  # of the JSON; a reader refuses others


class ExportedModel:
    """``model.onnx`` and ``model.json`` of one export. The graph takes raw inputs (pixels in [0, 1],
    or table rows) and gives the net's outputs (logits for classification); the JSON says how to
    read a file into a raw input and what the outputs mean.

    Args:
        onnx_path: the ``.onnx`` file; its ``.json`` is beside it, with the same name.
        threads: onnxruntime's threads for one run (0: its default, every core).
    """

    def __init__(self, onnx_path: str | Path, threads: int = 0) -> None:
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise UserError(f"exported model not found: {self.path} (train.py export writes it)")
        self.meta = read_description(self.path.with_suffix(".json"))
        import onnxruntime  # here: importing it costs 0.2 s, reading the JSON first finds a wrong path sooner

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own kinds for damaged or foreign files
            raise UserError(f"{self.path} is not a readable ONNX model ({type(error).__name__}): export it again") from error
        self.input_name = self.session.get_inputs()[0].name
        try:
            self.input_shape = tuple(self.meta["input"]["shape"])
            self.reader: dict[str, Any] = self.meta["preprocessing"]["reader"]
            self.task: str = self.meta["outputs"]["task"]
            self.class_names: list[str] | None = self.meta["outputs"].get("class_names")
        except (KeyError, TypeError, AttributeError) as error:  # a JSON of another tool, or edited by hand
            raise UserError(f"{self.path.with_suffix('.json')} lacks {error} (or holds it in another form): "
                            "it is not the JSON train.py export writes beside the .onnx; export it again") from error

    @property
    def reads_images(self) -> bool:
        return self.reader["kind"] == "image"

    def outputs(self, inputs: np.ndarray) -> np.ndarray:
        """The net's outputs for a batch of raw inputs (``N x input shape``)."""
        if tuple(inputs.shape[1:]) != self.input_shape:
            raise UserError(f"inputs of shape {shape_text(inputs.shape[1:])} per sample, but the model takes "
                            f"{shape_text(self.input_shape)}")
        return self.session.run(None, {self.input_name: np.ascontiguousarray(inputs, dtype=np.float32)})[0]

    def predict(self, inputs: np.ndarray) -> list[dict[str, Any]]:
        """``predictions.csv`` rows (``project.inference.predictions``) for a batch of raw inputs."""
        return prediction_rows(self.outputs(inputs), self.task)

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        return probabilities(self.outputs(inputs), self.task)

    # -- reading inputs -------------------------------------------------------------------------

    def image(self, source: str | bytes, name: str | None = None, max_pixels: int | None = None) -> np.ndarray:
        """One image file (a path or its bytes) as the raw input the graph takes; one of more than
        ``max_pixels`` pixels is refused from its header (``inputs.image_pixels``)."""
        if not self.reads_images:
            raise UserError(f"{name or source}: this model takes table rows of {shape_text(self.input_shape)} numbers, not images")
        return image_pixels(source, self.reader["channels"], self.reader["size"], name, max_pixels)

    def rows(self, values: Any, name: str) -> np.ndarray:
        """Table rows (a list of rows, or one row) as raw inputs, with one line for what does not fit."""
        return raw_rows(values, self.input_shape, name)

    def inputs_at(self, path: Path) -> tuple[list[str], Any]:
        """``(names, inputs)`` of what ``predict`` labels at ``path``: a folder of images (any depth,
        as ``train.py predict --data.predict_dir``), one image, or a table file (as ``--data.predict_path``).
        Images are returned as paths, read batch by batch; rows as one array."""
        if self.reads_images:
            if path.is_dir():
                return (files := image_files(path)), files
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                return [str(path)], [str(path)]
            raise UserError(f"{path}: not a folder of images nor an image file ({', '.join(IMAGE_SUFFIXES)})")
        if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
            raise UserError(f"{path}: this model takes table rows of {shape_text(self.input_shape)} numbers "
                            "(a .csv, .npy, .npz or .pt file), not images")
        inputs, _ = read_arrays(str(path), self.reader.get("input_key", "x"), None, 0)
        return [f"row {i}" for i in range(len(inputs))], self.rows(inputs, str(path))

    def batch(self, inputs: Any, start: int, size: int) -> np.ndarray:
        """Raw inputs ``start .. start + size`` of what ``inputs_at`` returned."""
        if self.reads_images:
            return np.stack([self.image(path) for path in inputs[start : start + size]])
        return inputs[start : start + size]


def read_description(path: Path) -> dict[str, Any]:
    """The export's JSON, checked for what a reader needs."""
    if not path.is_file():
        raise UserError(f"{path} not found: an exported model's .json lies beside its .onnx file, with the same name")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is not readable JSON ({error}): export the model again") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path}: not the description of a model exported by train.py export (format {FORMAT})")
    if meta.get("outputs", {}).get("task") not in TASKS:
        raise UserError(f"{path}: outputs.task must be one of {', '.join(TASKS)}")
    return meta
