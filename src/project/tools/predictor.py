"""A trained checkpoint in a notebook: raw inputs in, the rows ``train.py predict`` writes out.

    from project.tools.predictor import load_predictor

    predictor = load_predictor("runs/lenet_imagefolder/version_0/checkpoints/best-....ckpt")
    predictor.predict(["cat.png", "dog.png"])      # image files (paths or bytes)
    predictor.predict(rows)                          # a table model: rows as the data file holds them
    predictor.probabilities(...)                     # the same inputs, one row of probabilities each

``ClassificationModule.load_from_checkpoint(path)`` gives the module alone: its ``forward`` takes
inputs as the data module feeds them (normalised, reshaped, standardized), not raw pixels. The
predictor puts the data module's preprocessing in front of the net, from the run's
``config.yaml`` and the statistics the checkpoint saved, as ``train.py export`` does.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from project.engine.checkpoint_io import read_checkpoint
from project.errors import UserError
from project.tools.export import ExportedGraph, raw_inputs_graph
from project.inference.inputs import image_pixels, raw_rows
from project.inference.predictions import prediction_rows, probabilities


class Predictor:
    """The net behind its preprocessing (``graph``), and how a raw input is read (``reader``)."""

    def __init__(self, graph: ExportedGraph, reader: dict[str, Any], raw_shape: tuple[int, ...], task: str,
                 class_names: list[str] | None) -> None:
        self.graph, self.reader, self.raw_shape, self.task, self.class_names = graph, reader, raw_shape, task, class_names

    def raw(self, inputs: Any) -> np.ndarray:
        """Image files (paths or bytes) read as the data module reads them, or rows as given."""
        if self.reader["kind"] == "image":
            items = [inputs] if isinstance(inputs, (str, Path, bytes)) else list(inputs)
            return np.stack([image_pixels(str(item) if isinstance(item, Path) else item, self.reader["channels"], self.reader["size"])
                             for item in items])
        return raw_rows(inputs, self.raw_shape, "the rows")

    @torch.no_grad()
    def outputs(self, inputs: Any) -> np.ndarray:
        """The net's outputs (logits, or regression values) for raw ``inputs``."""
        return self.graph(torch.from_numpy(self.raw(inputs))).numpy()

    def probabilities(self, inputs: Any) -> np.ndarray:
        return probabilities(self.outputs(inputs), self.task)

    def predict(self, inputs: Any) -> list[dict[str, Any]]:
        """The rows of ``predictions.csv`` (``pred``, ``prob``) for raw ``inputs``."""
        return prediction_rows(self.outputs(inputs), self.task)


def load_predictor(checkpoint: str | Path, config: str | Path | None = None) -> Predictor:
    """A ``Predictor`` for ``checkpoint``, built from ``config`` (default: the ``config.yaml`` of the
    run that wrote it, ``runs/<name>/version_N/``). The config is checked as the command line checks
    it (``engine.kinds``); the checkpoint gives weights and saved statistics only."""
    from project.tools.cli import ProjectCLI
    from project.engine.internals import quiet_known_noise

    quiet_known_noise()
    checkpoint = Path(checkpoint)
    config = Path(config) if config is not None else checkpoint.resolve().parent.parent / "config.yaml"
    if not config.is_file():
        raise UserError(f"{config} not found: pass config= the config.yaml of the run that wrote {checkpoint}")
    saved = yaml.safe_load(config.read_text())
    for option in ("ckpt_path", "weights_only"):  # a subcommand's options: this builds the classes without one
        saved.pop(option, None)
    cli = ProjectCLI(args=["--config", json.dumps(saved), "--trainer.logger=false", "--trainer.enable_progress_bar=false"], run=False)
    graph, inputs = raw_inputs_graph(cli.model, cli.datamodule, read_checkpoint(checkpoint))
    outputs = cli.model.export_outputs()
    return Predictor(graph, inputs.reader, tuple(inputs.raw_shape), outputs["task"], outputs.get("class_names"))
