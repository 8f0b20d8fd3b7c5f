"""``predict_onnx.py``: ``predictions.csv`` from an exported model alone, without Lightning."""

import argparse
import sys
from pathlib import Path

from project.errors import UserError
from project.files import write_whole
from project.inference.model import ExportedModel
from project.inference.predictions import write_predictions


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predict_onnx.py", description="Label images or table rows with a model exported by train.py export "
        "(onnxruntime; no Lightning). Writes the columns train.py predict writes.")
    parser.add_argument("model", help="the exported .onnx file (its .json lies beside it)")
    parser.add_argument("inputs", help="a folder of images (any depth), one image, or a table file (.csv, .npy, .npz, .pt) of input rows")
    parser.add_argument("--output", default="predictions.csv", help="the CSV to write (default: predictions.csv); an existing file is kept unless --overwrite")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    parser.add_argument("--batch_size", type=int, default=64, help="inputs per run of the graph (default: 64)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (default 0: every core)")
    return parser


def predict(model_path: str, inputs_path: str, output: str, overwrite: bool = False, batch_size: int = 64, threads: int = 0) -> Path:
    """Write the predictions for ``inputs_path`` to ``output``; returns its path."""
    if batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {batch_size}")
    target = Path(output)
    if target.exists() and not target.is_file():
        raise UserError(f"--output {target} is not a file (a folder or a device): give the path of a CSV file")
    if target.exists() and not overwrite:
        raise UserError(f"{target} exists: give another --output, or --overwrite to replace it")
    if not Path(inputs_path).exists():
        raise UserError(f"inputs not found: {inputs_path}")
    model = ExportedModel(model_path, threads)
    names, inputs = model.inputs_at(Path(inputs_path))
    rows = []
    for start in range(0, len(names), batch_size):
        rows += model.predict(model.batch(inputs, start, batch_size))
    write_whole(target, lambda partial: write_predictions(partial, names, rows, model.class_names))
    return target


def main(args: list[str] | None = None) -> None:
    options = parser().parse_args(args)
    try:
        path = predict(options.model, options.inputs, options.output, options.overwrite, options.batch_size, options.threads)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"Wrote predictions to {path}")


if __name__ == "__main__":
    main()
