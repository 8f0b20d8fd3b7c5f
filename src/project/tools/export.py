"""``train.py export``: a checkpoint as an ONNX graph, safetensors weights and a JSON description,
checked against the trained model before anything is written.

The graph takes raw inputs (pixels in [0, 1], or table rows as a file holds them) with any batch
size: the data module's normalisation or standardisation is inside it (``InputPreprocessing``),
so a caller needs only what the JSON's ``preprocessing.reader`` says (``project.inference``).
"""

import contextlib
import copy
import hashlib
import importlib.metadata
import inspect
import io
import json
import math
import os
import shlex
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Subset

from project.engine.checkpoint_io import current_umask, read_checkpoint
from project.engine.data import InferenceInputs, ProjectDataModule
from project.errors import UserError
from project.engine.internals import STACK_TRACE, datamodule_state, export_failure
from project.engine.kinds import imported
from project.engine.sizing import mirror_averaged
from project.engine.paths import PREDICT_ONNX_PY, SERVE_PY, check_folder_can_be_written, script_command
from project.inference.model import FORMAT
from project.inference.predictions import predicted_classes

LIMIT = 1e-4  # the largest difference allowed between the trained model's outputs and the export's
INPUT, OUTPUT = "input", "outputs"  # the graph's input and output names


class InputPreprocessing(nn.Module):
    """What the data module does to a raw input after reading it, as tensor operations (``InferenceInputs``)."""

    def __init__(self, inputs: InferenceInputs) -> None:
        super().__init__()
        self.reshape, self.resize_to = inputs.reshape, inputs.resize_to
        self.standardize = inputs.mean is not None and inputs.std is not None
        if self.standardize:
            self.register_buffer("mean", inputs.mean.detach().float().clone())
            self.register_buffer("std", inputs.std.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reshape is not None:
            x = x.reshape(x.shape[0], *self.reshape)
        if self.resize_to is not None:
            x = F.interpolate(x, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False)
        if self.standardize:
            x = (x - self.mean) / self.std
        return x


class ExportedGraph(nn.Module):
    """Raw inputs in, the net's outputs out (averaged with the mirrored input's for ``model.tta: hflip``)."""

    def __init__(self, preprocessing: InputPreprocessing, net: nn.Module, mirrored: bool = False) -> None:
        super().__init__()
        self.preprocessing, self.net, self.mirrored = preprocessing, net, mirrored

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocessing(x)
        return mirror_averaged(self.net, x) if self.mirrored else self.net(x)


def combined(outputs: torch.Tensor, task: str) -> torch.Tensor:
    """The members' outputs (``members x batch x ...``) as one model's: the mean of their
    probabilities, given back as logits (the log of that mean, for a sigmoid its log-odds), so that
    softmax or sigmoid of them is the mean exactly and a reader of one model's outputs reads these
    unchanged; regression values are averaged."""
    if task == "regression":
        return outputs.mean(0)
    if task == "multiclass":
        return torch.logsumexp(F.log_softmax(outputs, dim=-1), dim=0) - math.log(len(outputs))
    return torch.logsumexp(F.logsigmoid(outputs), dim=0) - torch.logsumexp(F.logsigmoid(-outputs), dim=0)


class EnsembleGraph(nn.Module):
    """Raw inputs in; each member's graph (its own preprocessing: a fold's standardisation
    statistics differ) and their outputs ``combined``."""

    def __init__(self, members: list[ExportedGraph], task: str) -> None:
        super().__init__()
        self.members, self.task = nn.ModuleList(members), task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return combined(torch.stack([member(x) for member in self.members]), self.task)


def raw_inputs_graph(model: LightningModule, datamodule: ProjectDataModule,
                     checkpoint: dict[str, Any]) -> tuple[ExportedGraph, InferenceInputs]:
    """``model`` with ``checkpoint``'s weights, in float32 and eval mode, behind the preprocessing of
    ``datamodule`` (set up for its test split, with the statistics the checkpoint saved): the
    graph that takes raw inputs, and how the data module reads them."""
    datamodule.setup("test")
    if (state := datamodule_state(checkpoint, datamodule)) is not None:
        datamodule.load_state_dict(state)  # the statistics the model was trained with
    model.size_net_for(datamodule)
    model.on_load_checkpoint(checkpoint)  # refuses the checkpoint of another model in one line
    model.load_state_dict(checkpoint["state_dict"])
    model.float().eval()  # float32, whatever the training precision
    inputs = datamodule.inference_inputs()
    return ExportedGraph(InputPreprocessing(inputs), model.net, mirrored=model.tta == "hflip").eval(), inputs


def export_checkpoint(model: LightningModule, datamodule: ProjectDataModule, ckpt_path: str | None,
                      output: str | None, check_samples: int, quantize: str | None = None,
                      read: Any = read_checkpoint, ensemble: list[str] | None = None) -> Path:
    """Write ``<name>.onnx``, ``<name>.safetensors`` and ``<name>.json`` for the checkpoint
    ``<name>.ckpt``, beside it or in ``output``; returns the ``.onnx`` path. With ``ensemble`` (more
    checkpoints of the same model, say the other folds'), one graph of all of them, ``ensemble.onnx``
    and so on. Every file is first written to a temporary folder and moved into place only once the
    export matches the model(s) on ``check_samples`` test samples, so a failed export leaves an
    earlier one as it was."""
    if ckpt_path is None:
        raise UserError("export needs --ckpt_path: the checkpoint to export (runs/<name>/version_N/checkpoints/best.ckpt)")
    if check_samples < 1:
        raise UserError(f"--check_samples must be >= 1 (test samples the export is checked on), got {check_samples}")
    if quantize not in QUANTIZED:
        raise UserError(f"--quantize takes {' or '.join(str(q) for q in QUANTIZED if q)} (or leave it out), got {quantize!r}")
    sources = [Path(ckpt_path), *(Path(path) for path in ensemble or [])]
    if ensemble is not None and (quantize or len(set(map(os.path.realpath, sources))) != len(sources)):
        raise UserError("--quantize int8 takes one checkpoint, not an --ensemble" if quantize else
                        "--ensemble names a checkpoint twice (or --ckpt_path again): each member counts once in the mean")
    folder = Path(output) if output else sources[0].parent
    check_folder_can_be_written(folder, f"cannot write the export to {folder}")
    copies = [copy.deepcopy(model) for _ in sources[1:]]  # before the first is sized and loaded
    checkpoint = read(sources[0])  # the trainer's checkpoint_io: the command line read this file already
    graph, inputs = raw_inputs_graph(model, datamodule, checkpoint)
    samples = min(check_samples, len(inputs.test_inputs))  # type: ignore[arg-type]
    if samples == 0:
        raise UserError("the test split is empty: the export is checked on test samples (set data.test_fraction > 0)")
    expected = trained_outputs(model, datamodule, samples)
    members = None
    if ensemble is not None:
        members = [Member(sources[0], validation_fold(checkpoint, datamodule), graph, inputs, expected)]
        for member_model, source in zip(copies, sources[1:]):
            members.append(load_member(member_model, datamodule, source, read(source), samples, model))
        task = model.export_outputs()["task"]
        graph = EnsembleGraph([member.graph for member in members], task).eval()
        expected = combined(torch.stack([member.expected for member in members]), task)

    folder.mkdir(parents=True, exist_ok=True)  # only now: a refused checkpoint or data leaves no new folder
    try:
        return write_export(model, graph, inputs, checkpoint, sources[0], folder, expected, quantize, members)
    except OSError as error:  # a full or read-only disk: the scratch folder is gone, earlier exports untouched
        raise UserError(f"cannot write the export to {folder}: {error.strerror or error}; nothing was written") from error


@dataclass
class Member:
    """One checkpoint of an ensemble export: its graph, and its outputs on the first test samples as
    its data module feeds them."""

    source: Path
    fold: dict[str, Any] | None  # the fold its run validated on (data.folds), without the sample list
    graph: ExportedGraph
    inputs: InferenceInputs
    expected: torch.Tensor


def load_member(model: LightningModule, datamodule: ProjectDataModule, source: Path, checkpoint: dict[str, Any],
                samples: int, first: LightningModule) -> Member:
    """``model`` (a copy of the first member's, not yet loaded) with ``checkpoint``'s weights and data
    statistics; refused in one line when it is not a checkpoint of the same model and classes."""
    try:
        graph, inputs = raw_inputs_graph(model, datamodule, checkpoint)
    except (RuntimeError, UserError) as error:  # other layers or sizes: say which member
        raise UserError(f"--ensemble {source} is not a checkpoint of the model of --ckpt_path: {str(error).splitlines()[0]}") from error
    names, first_names = model.export_outputs().get("class_names"), first.export_outputs().get("class_names")
    if names != first_names:
        raise UserError(f"--ensemble {source} has classes {names}, but --ckpt_path has {first_names}: "
                        "an ensemble averages the probabilities of the same classes")
    return Member(source, validation_fold(checkpoint, datamodule), graph, inputs, trained_outputs(model, datamodule, samples))


def validation_fold(checkpoint: dict[str, Any], datamodule: ProjectDataModule) -> dict[str, Any] | None:
    """What the checkpoint's data module saved of the fold it validated on, without the sample list."""
    fold = (datamodule_state(checkpoint, datamodule) or {}).get("validation_fold")
    return {key: value for key, value in fold.items() if key != "validation"} if fold else None


def write_export(model: LightningModule, graph: nn.Module, inputs: InferenceInputs, checkpoint: dict[str, Any],
                 source: Path, folder: Path, expected: torch.Tensor, quantize: str | None, members: list[Member] | None) -> Path:
    """``export``'s files, written in a scratch folder inside ``folder`` and moved into place once
    the graph computes ``expected`` (what the trained model, or the ensemble's members averaged,
    give on the first test samples)."""
    name = "ensemble" if members else source.stem
    samples = len(expected)
    task = model.export_outputs()["task"]
    with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as scratch:
        written = Path(scratch)
        onnx_file = written / f"{name}.onnx"
        write_onnx(graph, torch.stack([inputs.test_inputs[i][0] for i in range(min(2, samples))]).float(), onnx_file)
        difference, same_classes = compare(expected, inputs, onnx_file, task)
        check = {"split": "test", "samples": samples, "max_abs_difference": difference, "limit": LIMIT, "same_classes": same_classes}
        what = f"the {len(members)} checkpoints averaged" if members else "the checkpoint"
        if difference > LIMIT or not same_classes:
            found = f"largest difference {difference:.2g} (limit {LIMIT:g})" + ("" if same_classes else ", and predicted classes differ")
            raise UserError(f"the exported {type(model.net).__name__} does not compute what {what} does on {samples} test "
                            f"samples: {found}; nothing was written. Look in forward() for randomness in eval mode "
                            "(F.dropout(training=True)) and for values taken out of torch (numpy, .item()), which are traced as constants")
        nets = {f"member_{k}": member.graph.net for k, member in enumerate(members)} if members else {"": model.net}
        write_weights(nets, written / f"{name}.safetensors")
        description = describe(model, inputs, checkpoint, source, check, folder, name)
        if members:
            scores = scores_on_test_split(onnx_file, inputs, task)
            description["ensemble"] = describe_members(members, folder, scores)
            description["preprocessing"]["in_graph"] = [in_graph_steps(member.inputs, model) for member in members]
        (written / f"{name}.json").write_text(json.dumps(description, indent=2) + "\n")
        if quantize == "int8":
            int8_file = written / f"{name}.int8.onnx"
            quantized = write_int8(onnx_file, int8_file, inputs, task)
            int8_description = {**description, "files": {**description["files"], "onnx": int8_file.name}, "quantized": quantized}
            int8_file.with_suffix(".json").write_text(json.dumps(int8_description, indent=2) + "\n")
        for file in written.iterdir():
            os.chmod(file, 0o666 & ~current_umask())  # as readable as the checkpoint (safetensors writes 0600)
            os.replace(file, folder / file.name)
    onnx_path = folder / f"{name}.onnx"
    lines = [(f"Exported {onnx_path} (and .safetensors, .json); checked{f' against {what}' if members else ''} on {samples} test samples: "
              f"largest difference {difference:.2g} (limit {LIMIT:g}), same predicted classes")]
    if members:
        lines += [f"The ensemble's probabilities are the mean of its {len(members)} members'; on the whole test split: "
                  + ", ".join(f"{metric} {value:.4f}" for metric, value in scores.items() if metric != "samples")
                  + f" ({scores['samples']} samples)"]
    if quantize == "int8":
        lines += [f"Quantized {folder / (name + '.int8.onnx')} (and .int8.json): test accuracy {quantized['accuracy']:.4f} "
                  f"against the float graph's {quantized['float_accuracy']:.4f} on {quantized['test_samples']} test samples"]
    lines += ["Serve it over HTTP (no Lightning; POST /predict):", "  " + shlex.join(script_command(SERVE_PY, [str(onnx_path)]))]
    if inputs.example_path is not None:
        lines += ["Predict with it alone (predictions.csv, as train.py predict writes):",
                  "  " + shlex.join(script_command(PREDICT_ONNX_PY, [str(onnx_path), inputs.example_path]))]
    rank_zero_info("\n".join(lines))
    return onnx_path


def describe_members(members: list[Member], folder: Path, scores: dict[str, float]) -> dict[str, Any]:
    """What the JSON says of an ensemble: how it combines, each member's checkpoint (and the fold it
    validated on), and the ensemble's scores on the test split."""
    return {
        "combines": "the mean of the members' probabilities (regression: of their values); the outputs are its log "
                    "(log-odds for a sigmoid), so softmax or sigmoid of them gives it back",
        "members": [{"checkpoint": os.path.relpath(member.source.resolve(), folder.resolve()), "sha256": file_sha256(member.source),
                     "weights_prefix": f"member_{k}.", "validation_fold": member.fold}
                    for k, member in enumerate(members)],
        "test": scores,
    }


def scores_on_test_split(onnx_file: Path, inputs: InferenceInputs, task: str) -> dict[str, float]:
    """The graph's accuracy (classification: of every label for multilabel) or mean squared error
    (regression) on the whole test split."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    right = squared = total = values = 0.0
    for x, y in DataLoader(inputs.test_inputs, batch_size=256):
        outputs = session.run(None, {INPUT: x.float().numpy()})[0]
        if task == "regression":
            squared += float(((outputs.reshape(len(y), -1) - y.numpy().reshape(len(y), -1)) ** 2).sum())
            values += y.numel()
        else:
            right += int((predicted_classes(outputs, task).reshape(-1) == y.numpy().reshape(-1)).sum())
            values += y.numel()
        total += len(y)
    metric = {"mse": squared / values} if task == "regression" else {"accuracy": right / values}
    return {**metric, "samples": int(total)}


def write_onnx(graph: ExportedGraph, example: torch.Tensor, path: Path) -> None:
    """``graph`` as ONNX (torch's exporter, from ``torch.export``) with a dynamic batch axis, in one
    file, without the source lines and paths of this machine the exporter writes into every node."""
    chatter = io.StringIO()  # the exporter prints its steps, and whole graphs when it fails
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, (example,), input_names=[INPUT], output_names=[OUTPUT],
                                        dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False)
    except Exception as error:  # the exporter raises many kinds
        raise UserError(f"{type(graph.net).__name__} does not export to ONNX: {export_failure(str(error))[:600]}. Write "
                        "forward() with torch operations only, without Python branches on tensor values") from error
    program.save(str(path))  # a full disk here is the caller's OSError, not a net that does not export
    without_stack_traces(path)


def without_stack_traces(path: Path) -> None:
    """Remove the ``pkg.torch.onnx.stack_trace`` entry torch's exporter adds to each node's metadata:
    the absolute paths of this machine's source files, which should not travel with the model."""
    import onnx

    model = onnx.load(str(path))
    for node in [*model.graph.node, *(node for function in model.functions for node in function.node)]:
        kept = [entry for entry in node.metadata_props if entry.key != STACK_TRACE]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.save(model, str(path))


@torch.no_grad()
def trained_outputs(model: LightningModule, datamodule: ProjectDataModule, samples: int) -> torch.Tensor:
    """The model's outputs on the first ``samples`` test samples, as its data module feeds them."""
    trained = []
    for batch in datamodule.test_dataloader():
        trained.append(model(datamodule.on_after_batch_transfer(batch, 0)[0].float()))
        if sum(len(t) for t in trained) >= samples:
            break
    return torch.cat(trained)[:samples]


def compare(expected: torch.Tensor, inputs: InferenceInputs, onnx_file: Path, task: str) -> tuple[float, bool]:
    """The largest difference between ``expected`` and the exported graph's outputs on the same
    test samples' raw inputs, and whether they predict the same classes."""
    import onnxruntime

    samples = len(expected)
    expected = expected.reshape(samples, -1).numpy()
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    raw = DataLoader(Subset(inputs.test_inputs, range(samples)), batch_size=64)
    got = np.concatenate([session.run(None, {INPUT: x.float().numpy()})[0] for x, *_ in raw]).reshape(samples, -1)
    classes = predicted_classes(expected, task)
    return float(np.abs(expected - got).max()), classes is None or bool((classes == predicted_classes(got, task)).all())


QUANTIZED = (None, "int8")  # --quantize
INT8_MAX_DROP = 0.005  # the most test accuracy (a fraction) an int8 graph may lose against the float one
CALIBRATION_SAMPLES = 256  # training samples that set the int8 graph's activation ranges


def write_int8(float_file: Path, int8_file: Path, inputs: InferenceInputs, task: str) -> dict[str, Any]:
    """``float_file`` statically quantized to int8 (onnxruntime's QDQ format: int8 weights per
    channel, uint8 activations whose ranges come from ``CALIBRATION_SAMPLES`` training samples),
    written to ``int8_file``; refused (``UserError``) when its test-split accuracy is more than
    ``INT8_MAX_DROP`` below the float graph's. Returns what the JSON says of it."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if task not in ("multiclass", "binary") or inputs.train_inputs is None:
        raise UserError(f"--quantize int8 is offered for classification with a training split (this model: {task}); "
                        "export without it")

    class TrainingSamples(CalibrationDataReader):
        def __init__(self) -> None:
            chosen = Subset(inputs.train_inputs, range(min(CALIBRATION_SAMPLES, len(inputs.train_inputs))))
            self.batches = iter(DataLoader(chosen, batch_size=32))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT: batch[0].float().numpy()}

    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = int8_file.with_suffix(".prepared.onnx")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        quant_pre_process(str(float_file), str(prepared))  # shapes inferred, graph simplified: what onnxruntime advises
        quantize_static(str(prepared), str(int8_file), TrainingSamples(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    prepared.unlink()
    scores = {name: scores_on_test_split(file, inputs, task) for name, file in (("float", float_file), ("int8", int8_file))}
    accuracy, total = {name: score["accuracy"] for name, score in scores.items()}, scores["int8"]["samples"]
    drop = accuracy["float"] - accuracy["int8"]
    if drop > INT8_MAX_DROP:
        raise UserError(f"the int8 graph's test accuracy is {accuracy['int8']:.4f}, {drop * 100:.2f} points below the float graph's "
                        f"{accuracy['float']:.4f} (at most {INT8_MAX_DROP * 100:g} allowed); nothing was written: serve the float export")
    return {"kind": "int8 static, QDQ, weights per channel", "calibration_samples": min(CALIBRATION_SAMPLES, len(inputs.train_inputs)),
            "test_samples": total, "accuracy": accuracy["int8"], "float_accuracy": accuracy["float"]}


def write_weights(nets: dict[str, nn.Module], path: Path) -> None:
    """The nets' state dicts as safetensors, each key after its net's prefix (``""`` for one net:
    ``net.load_state_dict(safetensors.torch.load_file(path))``; ``member_K`` for an ensemble's)."""
    from safetensors.torch import save

    tensors = {f"{prefix}.{key}" if prefix else key: tensor.detach().contiguous()
               for prefix, net in nets.items() for key, tensor in net.state_dict().items()}
    # Serialized here and written by Python, so a full disk is an OSError like every other write's.
    path.write_bytes(save(tensors, metadata={"net": type(next(iter(nets.values()))).__name__}))


def describe(model: LightningModule, inputs: InferenceInputs, checkpoint: dict[str, Any], source: Path,
             check: dict[str, Any], folder: Path, name: str) -> dict[str, Any]:
    """The JSON beside the graph (in ``folder``): what a caller feeds it, what comes out, the net
    that reads the safetensors file, and where it came from (paths relative to ``folder``)."""
    record = source.parent.parent / "record.json"  # runs/<name>/version_N/checkpoints/<file>.ckpt
    return {
        "format": FORMAT,
        "files": {"onnx": f"{name}.onnx", "weights": f"{name}.safetensors"},
        "input": {"name": INPUT, "shape": list(inputs.raw_shape), "dtype": "float32", "batch_axis": 0},
        "preprocessing": {
            "reader": inputs.reader,
            "reader_steps": reader_steps(inputs.reader),
            "in_graph": in_graph_steps(inputs, model),
        },
        "outputs": {"name": OUTPUT, **model.export_outputs()},
        "net": net_config(checkpoint.get("hyper_parameters", {}).get("net"), model),
        "source": {"checkpoint": os.path.relpath(source.resolve(), folder.resolve()), "sha256": file_sha256(source),
                   "epoch": checkpoint.get("epoch"), "global_step": checkpoint.get("global_step"),
                   "run_record": os.path.relpath(record.resolve(), folder.resolve()) if record.is_file() else None},
        "check": check,
        "versions": {package: importlib.metadata.version(package) for package in ("torch", "onnx", "onnxruntime")},
    }


def in_graph_steps(inputs: InferenceInputs, model: LightningModule) -> dict[str, Any]:
    """The arithmetic the graph does to a raw input before the net, in the JSON's words."""
    steps = {"reshape": list(inputs.reshape) if inputs.reshape is not None else None, "resize_to": inputs.resize_to,
             "mean": inputs.mean.flatten().tolist() if inputs.mean is not None else None,
             "std": inputs.std.flatten().tolist() if inputs.std is not None else None,
             "tta": "hflip: the outputs are the mean of the net's on the input and on it mirrored left to right"
             if model.tta == "hflip" else None}
    return {key: value for key, value in steps.items() if value is not None}


def net_config(net: Any, model: LightningModule) -> Any:
    """The net's ``{class_path, init_args}`` with its two sizes written in (the data gave them), so
    that ``Net(**init_args)`` builds the net the safetensors file holds the weights of."""
    if not isinstance(net, dict) or "class_path" not in net or model.net_sizes is None:
        return net
    outputs, input_shape = model.net_sizes
    sizes = list(inspect.signature(imported(net["class_path"])).parameters)[:2]
    return {**net, "init_args": {sizes[0]: outputs, sizes[1]: list(input_shape), **(net.get("init_args") or {})}}


def reader_steps(reader: dict[str, Any]) -> list[str]:
    """``reader`` in words, for a caller who reads files in another language."""
    if reader["kind"] == "image":
        mode = "grayscale (PIL mode L)" if reader["channels"] == 1 else "RGB"
        return [f"convert to {mode}", f"resize to {reader['size']}x{reader['size']} (PIL bilinear)",
                "pixels as float32 / 255, channels first (C x H x W)"]
    return ["a row of numbers as the data file holds it (CSV columns, or the rows of the .npz/.pt array), as float32"]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
