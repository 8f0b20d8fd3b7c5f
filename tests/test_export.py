"""From a checkpoint to a model an application can use: ``train.py export`` (ONNX with its
preprocessing, safetensors, JSON), checked equal to the trained model; ``predict_onnx.py``
without Lightning, writing what ``train.py predict`` writes; ``serve.py`` answering real HTTP
requests; and one line for each bad input."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import torchvision
from conftest import QUIET, REPO, make_image_tree, make_mnist_files, read_csv, write_png
from safetensors.torch import load_file
from sklearn.datasets import load_digits
from torch import nn

from project.datamodules import ImageFolderDataModule, ImageTransforms, TensorDataModule, TorchvisionDataModule
from project.__main__ import main
from project.engine.internals import EXPORT_CALL, EXPORT_SUMMARY, export_failure
from project.engine.kinds import imported
from project.inference.inputs import IMAGE_SUFFIXES

pytestmark = pytest.mark.xdist_group("export")  # the runs below are made once, on one worker

CONFIGS = REPO / "configs"
RESIZED = ["--data.transforms.image_size=32", "--data.loader.num_workers=0", "--data.loader.global_batch_size=8"]
RUNS = {  # name -> (config, extra fit options, the inputs predict reads, the option that names them)
    "lenet_digits": ("lenet_digits", ["--trainer.max_epochs=1"], "rows.csv", "--data.predict_path"),
    "lenet_imagefolder": ("lenet_imagefolder", ["--trainer.max_epochs=1", "--data.data_dir=images", "--data.loader.num_workers=0"],
                          "new", "--data.predict_dir"),
    "two_layer_imagefolder": ("lenet_imagefolder", ["--trainer.max_epochs=1", "--data.data_dir=images", "--data.loader.num_workers=0",
                                                     "--model.net=project.nets.TwoLayerNet", "--trainer.logger.init_args.name=two_layer_imagefolder"],
                              "new", "--data.predict_dir"),
    "two_layer_regression": ("two_layer_regression", ["--trainer.max_epochs=2", "--data.path=data/regression.csv",
                                                      "--data.num_target_columns=2", "--data.standardize=true"],
                             "regression_rows.csv", "--data.predict_path"),
    "resnet_finetune": ("resnet_finetune", ["--trainer.max_epochs=1", "--data.data_dir=images", *RESIZED], "new", "--data.predict_dir"),
    "resnet_finetune_unfreeze": ("resnet_finetune_unfreeze", ["--trainer.max_epochs=2", "--model.unfreeze_at_epoch=1",
                                                              "--data.data_dir=images", *RESIZED], "new", "--data.predict_dir"),
}


class BranchingNet(nn.Module):
    """Branches in Python on a tensor's value: trains, but torch.export cannot trace it."""

    def __init__(self, num_outputs: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.layer = nn.Linear(int(np.prod(input_shape)), num_outputs)

    def forward(self, x):
        if x.sum() > 0:
            return self.layer(x.flatten(1))
        return -self.layer(x.flatten(1))


class AlwaysDropoutNet(BranchingNet):
    """Drops out in eval mode too (``training=True``): exports, but computes something else each call."""

    def forward(self, x):
        return self.layer(nn.functional.dropout(x.flatten(1), p=0.5, training=True))


def best_checkpoint(root: Path, name: str) -> Path:
    return next((root / "runs" / name / "version_0" / "checkpoints").glob("best-*.ckpt"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A working folder with data of each kind and a trained, exported run per entry of ``RUNS``."""
    root = tmp_path_factory.mktemp("export")
    make_image_tree(root / "images", per_class=12)
    for i in range(5):
        write_png(root / "new" / f"sample{i}.png", i % 2, "RGB", size=20, seed=700 + i)
    np.savetxt(root / "rows.csv", load_digits().data[:30] / 16.0, delimiter=",", fmt="%.6f")
    generator = np.random.default_rng(0)
    x = generator.normal(size=(120, 6)) * [1, 10, 100, 1, 1, 1]
    (root / "data").mkdir()
    np.savetxt(root / "data" / "regression.csv", np.hstack([x, x[:, :2] @ [[1.0, 0.5], [0.1, -1.0]]]), delimiter=",")
    np.savetxt(root / "regression_rows.csv", x[:15], delimiter=",")
    (root / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(5)
    torch.save(torchvision.models.resnet18().state_dict(), root / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("TORCH_HOME", str(root / "torch"))
        for name, (config, extra, _, _) in RUNS.items():
            main(["fit", "--config", str(CONFIGS / f"{config}.yaml"), *extra, *QUIET])
            run = root / "runs" / name / "version_0"
            main(["export", "--config", str(run / "config.yaml"), "--ckpt_path", str(best_checkpoint(root, name)), *QUIET])
    return root


def exported(root: Path, name: str) -> Path:
    return best_checkpoint(root, name).with_suffix(".onnx")


def predict_onnx(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "predict_onnx.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_an_export_is_onnx_safetensors_and_json_and_takes_any_batch(workdir, name):
    onnx_path = exported(workdir, name)
    meta = json.loads(onnx_path.with_suffix(".json").read_text())
    checkpoint = torch.load(best_checkpoint(workdir, name), map_location="cpu", weights_only=True)
    assert meta["check"]["max_abs_difference"] <= 1e-4 and meta["check"]["same_classes"] and meta["check"]["samples"] > 0
    # Paths relative to the export's folder: the files travel to other machines.
    assert (onnx_path.parent / meta["source"]["checkpoint"]).resolve() == best_checkpoint(workdir, name).resolve()
    assert (onnx_path.parent / meta["source"]["run_record"]).resolve() == (onnx_path.parent.parent / "record.json").resolve()
    for written in (onnx_path.read_bytes(), onnx_path.with_suffix(".json").read_bytes()):
        assert str(workdir).encode() not in written and str(REPO).encode() not in written and b"stack_trace" not in written
    assert meta["outputs"]["task"] == ("regression" if "regression" in name else "multiclass")
    assert meta["outputs"].get("class_names", checkpoint.get("class_names")) == checkpoint.get("class_names")
    weights = load_file(onnx_path.with_suffix(".safetensors"))
    net_state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    assert weights.keys() == net_state.keys() and all(torch.equal(weights[k], net_state[k].float()) for k in weights)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    shape = meta["input"]["shape"]
    for batch in (1, 3, 64):  # the batch axis is dynamic
        assert session.run(None, {"input": np.random.rand(batch, *shape).astype(np.float32)})[0].shape[0] == batch
    assert not list(onnx_path.parent.glob(".export-*"))  # the scratch folder is gone
    # The JSON's net config, as written, builds the net the safetensors file holds the weights of.
    net = imported(meta["net"]["class_path"])(**meta["net"]["init_args"])
    net.load_state_dict(weights, strict=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet_digits", "lenet_imagefolder", "two_layer_regression"])
def test_the_onnx_reference_evaluator_computes_what_onnxruntime_does(workdir, name):
    """A second runtime, onnx's own reference implementation, runs the exported graph to the same numbers."""
    from onnx.reference import ReferenceEvaluator

    onnx_path = exported(workdir, name)
    shape = json.loads(onnx_path.with_suffix(".json").read_text())["input"]["shape"]
    inputs = np.random.default_rng(3).random((4, *shape)).astype(np.float32)
    runtime = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": inputs})[0]
    reference = ReferenceEvaluator(str(onnx_path)).run(None, {"input": inputs})[0]
    assert np.abs(runtime - reference).max() < 1e-4


def test_preprocessing_that_is_arithmetic_is_inside_the_graph(workdir):
    digits = json.loads(exported(workdir, "lenet_digits").with_suffix(".json").read_text())
    assert digits["input"]["shape"] == [64] and digits["preprocessing"]["reader"]["kind"] == "table"
    assert digits["preprocessing"]["in_graph"]["reshape"] == [1, 8, 8] and digits["preprocessing"]["in_graph"]["resize_to"] == 32
    assert len(digits["preprocessing"]["in_graph"]["mean"]) == 1  # standardised per channel, in the graph
    # ... with the statistics the checkpoint keeps: Lightning saves the data module's state under its class name
    checkpoint = torch.load(best_checkpoint(workdir, "lenet_digits"), map_location="cpu", weights_only=True)
    assert checkpoint[TensorDataModule.__qualname__]["mean"].flatten().tolist() == digits["preprocessing"]["in_graph"]["mean"]
    resnet = json.loads(exported(workdir, "resnet_finetune").with_suffix(".json").read_text())
    assert resnet["input"]["shape"] == [3, 32, 32]
    assert resnet["preprocessing"]["in_graph"]["mean"] == pytest.approx([0.485, 0.456, 0.406])  # the caller feeds 0-1 pixels
    assert resnet["preprocessing"]["reader"] == {"kind": "image", "channels": 3, "size": 32}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_predict_from_the_export_alone_writes_the_rows_train_py_predict_writes(workdir, name, monkeypatch):
    _, _, inputs, option = RUNS[name]
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("TORCH_HOME", str(workdir / "torch"))
    run = workdir / "runs" / name / "version_0"
    main(["predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(best_checkpoint(workdir, name)), f"{option}={inputs}", *QUIET])
    lightning_rows = read_csv(max((workdir / "runs" / name).glob("version_*/predictions.csv"), key=os.path.getmtime))
    output = f"onnx_{name}.csv"
    done = predict_onnx(str(exported(workdir, name)), inputs, "--output", output, cwd=workdir)
    assert done.returncode == 0, done.stderr
    onnx_rows = read_csv(workdir / output)
    assert [row["input"] for row in onnx_rows] == [row["input"] for row in lightning_rows] and len(onnx_rows) >= 5
    if "regression" in name:  # numbers written in full: float32 rounding of two runtimes
        assert list(onnx_rows[0]) == ["input", "prediction_0", "prediction_1"]
        def values(rows):
            return np.array([[float(v) for key, v in row.items() if key != "input"] for row in rows])

        assert np.allclose(values(onnx_rows), values(lightning_rows), atol=1e-5)
    else:
        assert onnx_rows == lightning_rows


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet_digits", "lenet_imagefolder", "two_layer_regression"])
def test_a_checkpoint_in_a_notebook_predicts_on_raw_inputs_what_train_py_predict_does(workdir, name, monkeypatch):
    """``load_predictor(checkpoint)``: the run's preprocessing in front of the net, on raw pixels or rows."""
    from project.tools.predictor import load_predictor

    _, _, inputs, option = RUNS[name]
    monkeypatch.chdir(workdir)
    run, best = workdir / "runs" / name / "version_0", best_checkpoint(workdir, name)
    main(["predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(best), f"{option}={inputs}", *QUIET])
    lightning_rows = read_csv(max((workdir / "runs" / name).glob("version_*/predictions.csv"), key=os.path.getmtime))
    predictor = load_predictor(best)
    if option == "--data.predict_dir":
        raw = sorted(str(p) for p in (workdir / inputs).glob("*.png"))
    else:
        raw = np.loadtxt(workdir / inputs, delimiter=",", dtype=np.float32)
    rows = predictor.predict(raw)
    assert len(rows) == len(lightning_rows) >= 5
    if "regression" in name:
        assert np.allclose([r["pred"] for r in rows], [[float(r["prediction_0"]), float(r["prediction_1"])] for r in lightning_rows], atol=1e-5)
    else:
        names = predictor.class_names or [str(i) for i in range(100)]
        assert [names[r["pred"]] for r in rows] == [r["predicted_class"] for r in lightning_rows]
        assert [f"{r['prob']:.4f}" for r in rows] == [r["probability"] for r in lightning_rows]


def test_predict_from_the_export_imports_neither_lightning_nor_torch(workdir):
    script = ("import sys; from project.inference.predict import main; main(sys.argv[1:]); "
              "assert not [m for m in sys.modules if m.split('.')[0] in ('lightning', 'torch', 'torchvision')], 'imported'")
    done = subprocess.run([sys.executable, "-c", script, str(exported(workdir, "lenet_digits")), "rows.csv", "--output",
                           "no_torch.csv"], cwd=workdir, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(read_csv(workdir / "no_torch.csv")) == 30


# -- the HTTP server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(workdir):
    """``serve.py`` on a free localhost port for the image model; yields its URL."""
    process = subprocess.Popen([sys.executable, str(REPO / "serve.py"), str(exported(workdir, "lenet_imagefolder")), "--port", "0",
                                "--max_upload_mb", "10"], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert "Serving" in line, process.stderr.read()
    yield line.split(" at ")[1].split()[0]
    process.terminate()
    process.wait(timeout=30)


def post(url: str, body: bytes, content_type: str | None) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/predict", data=body, method="POST")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def multipart(files: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n" for name, content in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.slow
def test_the_server_answers_images_and_batches_as_predict_onnx_does(workdir, server):
    pictures = sorted((workdir / "new").glob("*.png"))
    status, answer = post(server, pictures[0].read_bytes(), "image/png")
    assert status == 200
    (first,) = answer["predictions"]
    assert set(first["probabilities"]) == {"cat", "dog"} and sum(first["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert first["class"] == first["top_k"][0]["class"] and first["probability"] == first["top_k"][0]["probability"]
    status, answer = post(server, *multipart({p.name: p.read_bytes() for p in pictures}))
    assert status == 200 and [p["input"] for p in answer["predictions"]] == [p.name for p in pictures]
    done = predict_onnx(str(exported(workdir, "lenet_imagefolder")), "new", "--output", "served.csv", cwd=workdir)
    assert done.returncode == 0, done.stderr
    rows = read_csv(workdir / "served.csv")
    assert [(p["class"], f"{p['probability']:.4f}") for p in answer["predictions"]] == [(r["predicted_class"], r["probability"]) for r in rows]
    with urllib.request.urlopen(server + "/health", timeout=30) as health:
        assert json.loads(health.read()) == {"status": "ok"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"),
    [
        (b"just some text, not a picture", "image/png", 400, "cannot read image the upload"),
        (b"", "image/png", 400, "the body is empty"),
        (bytes(20 * 1024 * 1024), "image/png", 413, "more than the 10 MB"),
        (b'{"inputs": [[1, 2', "application/json", 400, "not valid JSON"),
        (b'{"rows": []}', "application/json", 422, 'expected a JSON object {"inputs"'),
        (b'{"inputs": [[1, 2, 3]]}', "application/json", 422, "numbers, got shape 1x3"),
        (b"x", "text/plain", 415, "Content-Type text/plain is not taken"),
        ("multipart-text", None, 400, "cannot read image notes.txt"),
        ("multipart-many", None, 413, "257 files in one request, more than the 256"),
    ],
)
def test_every_bad_request_gets_a_4xx_with_one_line_of_reason(server, body, content_type, status, says):
    if body == "multipart-text":
        body, content_type = multipart({"notes.txt": b"a text file posing as a picture"})
    elif body == "multipart-many":
        body, content_type = multipart({f"{i}.png": b"counted before it is read" for i in range(257)})
    got, answer = post(server, body, content_type)
    assert got == status and says in answer["error"] and "\n" not in answer["error"], answer
    assert post(server, *multipart({"ok.png": (REPO / "tests").joinpath("conftest.py").read_bytes()}))[0] == 400  # still serving


@pytest.mark.slow
def test_a_route_or_method_the_server_lacks_gets_the_same_error_shape(server):
    assert get(server + "/nowhere") == (404, b'{"error":"Not Found"}')
    assert get(server + "/predict") == (405, b'{"error":"Method Not Allowed"}')


# -- bad input -----------------------------------------------------------------------------------


def export_error(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main(["export", *args, *QUIET])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_exports_get_one_line_and_leave_nothing(workdir, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(workdir)
    digits_config = str(workdir / "runs" / "lenet_digits" / "version_0" / "config.yaml")
    image_config = str(workdir / "runs" / "lenet_imagefolder" / "version_0" / "config.yaml")
    digits = str(best_checkpoint(workdir, "lenet_digits"))
    assert "error: checkpoint not found: nowhere.ckpt" in export_error(["--config", digits_config, "--ckpt_path", "nowhere.ckpt"], capsys)
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(Path(digits).read_bytes()[:300])
    assert "is not a readable checkpoint" in export_error(["--config", digits_config, "--ckpt_path", str(damaged)], capsys)
    assert "the data has 2 classes (cat, dog) but model.num_classes is 10" in export_error(
        ["--config", image_config, "--ckpt_path", digits], capsys)  # a checkpoint of another model
    (tmp_path / "a_file").write_text("")
    assert "cannot write the export to" in export_error(
        ["--config", digits_config, "--ckpt_path", digits, "--output", str(tmp_path / "a_file" / "exports")], capsys)
    assert "export needs --ckpt_path" in export_error(["--config", digits_config], capsys)
    # A full disk while the graph or the weights are written: one line that says so, nothing left.
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "full"
    with monkeypatch.context() as patch:
        patch.setattr(torch.onnx.ONNXProgram, "save", full)
        assert f"cannot write the export to {out}: No space left on device; nothing was written" in export_error(
            ["--config", digits_config, "--ckpt_path", digits, "--output", str(out)], capsys)
    with monkeypatch.context() as patch:
        real = Path.write_bytes
        patch.setattr(Path, "write_bytes", lambda self, data: full() if self.suffix == ".safetensors" else real(self, data))
        assert f"cannot write the export to {out}: No space left on device" in export_error(
            ["--config", digits_config, "--ckpt_path", digits, "--output", str(out)], capsys)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(("net", "says"), [
    ("BranchingNet", "BranchingNet does not export to ONNX: GuardOnDataDependentSymNode"),
    ("AlwaysDropoutNet", "the exported AlwaysDropoutNet does not compute what the checkpoint does on"),
])
def test_a_net_that_does_not_export_is_named_with_the_line_that_failed(net, says, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(CONFIGS / "two_layer_digits.yaml"), f"--model.net=test_export.{net}", "--trainer.max_epochs=1", *QUIET])
    checkpoint = best_checkpoint(tmp_path, "two_layer_digits")
    capsys.readouterr()
    err = export_error(["--config", str(checkpoint.parents[1] / "config.yaml"), "--ckpt_path", str(checkpoint)], capsys)
    assert says in err
    if net == "BranchingNet":
        assert "test_export.py" in err and "if x.sum() > 0:" in err
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == sorted(p.name for p in checkpoint.parent.glob("*.ckpt"))


def test_the_exporters_failure_wording_is_what_export_failure_reads():
    """torch's wording (internals.export_failure): an exception summary, then the call that raised."""
    try:
        torch.onnx.export(BranchingNet(2, (4,)).eval(), (torch.rand(3, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},),
                          external_data=False, verbose=False)
    except Exception as error:  # noqa: BLE001
        message = str(error)
    assert EXPORT_SUMMARY in message and EXPORT_CALL in message
    assert export_failure(message).startswith("GuardOnDataDependentSymNode: Could not guard on data-dependent expression")


@pytest.mark.parametrize("kind", ["torchvision", "image_folder"])
def test_image_data_modules_give_raw_pixels_that_their_normalisation_makes_their_test_inputs(kind, tmp_path):
    transforms = ImageTransforms(image_size=28, channels=1, mean=[0.1307], std=[0.3081])
    if kind == "torchvision":
        data = TorchvisionDataModule(root=str(make_mnist_files(tmp_path)), transforms=transforms)
    else:
        data = ImageFolderDataModule(data_dir=str(make_image_tree(tmp_path / "images", per_class=10)), transforms=transforms)
    data.setup("test")
    inputs = data.inference_inputs()
    raw, target = inputs.test_inputs[3]
    normalised, expected_target = data.test_set[3]
    assert torch.allclose((raw - inputs.mean) / inputs.std, normalised, atol=1e-6) and target == expected_target
    assert 0 <= raw.min() and raw.max() <= 1 and inputs.raw_shape == (1, 28, 28)
    assert inputs.reader == {"kind": "image", "channels": 1, "size": 28}
    assert inputs.example_path == (None if kind == "torchvision" else str(tmp_path / "images"))


def test_the_image_suffixes_are_torchvisions():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    assert IMAGE_SUFFIXES == IMG_EXTENSIONS


@pytest.mark.parametrize(("make", "says"), [
    (lambda root, model: ["missing.onnx", "rows.csv"], "exported model not found: missing.onnx"),
    (lambda root, model: [str(model), "nowhere.csv"], "inputs not found: nowhere.csv"),
    (lambda root, model: [str(model), "regression_rows.csv"], "a row of this model holds 64 numbers, got shape 15x6"),
    (lambda root, model: [str(model), "rows.csv", "--output", "rows.csv"], "rows.csv exists: give another --output"),
    (lambda root, model: [str(model), "images"], "this model takes table rows of 64 numbers (a .csv, .npy, .npz or .pt file), not images"),
    (lambda root, model: [str(model), "rows.csv", "--output", "images", "--overwrite"], "--output images is not a file (a folder or a device)"),
    (lambda root, model: [str(model), "rows.csv", "--output", "/dev/null", "--overwrite"], "--output /dev/null is not a file"),
])
def test_predict_onnx_refuses_bad_input_in_one_line(workdir, make, says):
    done = predict_onnx(*make(workdir, exported(workdir, "lenet_digits")), cwd=workdir)
    assert done.returncode == 2 and done.stderr.strip().startswith("error: ") and says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_predict_onnx_refuses_an_export_json_without_its_keys_and_an_output_it_cannot_write(workdir, tmp_path):
    model = exported(workdir, "lenet_digits")
    (tmp_path / "odd.onnx").write_bytes(model.read_bytes())
    description = json.loads(model.with_suffix(".json").read_text())
    del description["preprocessing"]
    (tmp_path / "odd.json").write_text(json.dumps(description))
    done = predict_onnx(str(tmp_path / "odd.onnx"), str(workdir / "rows.csv"), "--output", str(tmp_path / "p.csv"), cwd=tmp_path)
    assert done.returncode == 2 and "odd.json lacks 'preprocessing'" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p.csv").exists()
    full = predict_onnx(str(model), str(workdir / "rows.csv"), "--output", "/dev/full/p.csv", cwd=tmp_path)
    assert full.returncode == 2 and full.stderr.startswith("error: cannot write /dev/full/p.csv") and len(full.stderr.strip().splitlines()) == 1


def test_predict_onnx_refuses_a_damaged_model_and_a_missing_description(workdir, tmp_path):
    model = exported(workdir, "lenet_digits")
    (tmp_path / "cut.onnx").write_bytes(model.read_bytes()[:1000])
    (tmp_path / "cut.json").write_text(model.with_suffix(".json").read_text())
    (tmp_path / "alone.onnx").write_bytes(model.read_bytes())
    for name, says in (("cut.onnx", "is not a readable ONNX model"), ("alone.onnx", "alone.json not found")):
        done = predict_onnx(str(tmp_path / name), str(workdir / "rows.csv"), "--output", str(tmp_path / "p.csv"), cwd=tmp_path)
        assert done.returncode == 2 and says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


# -- the server under hostile and operational traffic -----------------------------------------------------


def start_server(workdir: Path, *options: str, env: dict[str, str] | None = None,
                 name: str = "lenet_imagefolder") -> tuple[subprocess.Popen, str]:
    """``serve.py`` for the model ``name`` with ``options``, its stderr in ``workdir/serve-<id>.log``; ``(process, URL)``."""
    log = (workdir / f"serve-{uuid.uuid4().hex[:8]}.log").open("w")
    process = subprocess.Popen([sys.executable, str(REPO / "serve.py"), str(exported(workdir, name)), "--port", "0",
                                *options], cwd=workdir, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    line = process.stdout.readline()
    assert "Serving" in line, Path(log.name).read_text()
    process.log_path = Path(log.name)
    return process, line.split(" at ")[1].split()[0]


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def raw_connection(url: str) -> "socket.socket":
    import socket

    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def read_answer(connection) -> str:
    """One HTTP answer from a raw socket: its headers, then as many bytes as its Content-Length says."""
    answer = b""
    while b"\r\n\r\n" not in answer and (chunk := connection.recv(10_000)):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(next((line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), b"0"))
    while len(body) < length and (chunk := connection.recv(10_000)):
        body += chunk
    return (head + b"\r\n\r\n" + body).decode()


def test_the_listening_socket_switches_nagle_off_for_every_connection():
    """asyncio sets TCP_NODELAY on an accepted connection only if its socket's proto is IPPROTO_TCP;
    without it each answer on a kept-alive connection waited ~40 ms (benchmarks/serving_load.py measures it)."""
    import socket

    from project.inference.server import listening_socket

    with listening_socket("127.0.0.1", 0) as listening:
        assert listening.proto == socket.IPPROTO_TCP
        with socket.create_connection(listening.getsockname()[:2]) as client:
            accepted, _ = listening.accept()
            with accepted:
                assert accepted.proto == socket.IPPROTO_TCP and accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            client.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "status", "says"),
    [
        ("100,000 empty file parts", 413, "100000 files in one request, more than the 256"),
        ("a 13000 x 13000 PNG", 413, "13000 x 13000 pixels, more than the 16,000,000"),
        ("a 5,000-digit integer", 422, "a row of this model holds 3x32x32 numbers"),  # read as a float, never a 500
        ("10**400", 422, "a row of this model holds 3x32x32 numbers"),
        ("100,000-deep nesting", 400, "nested 100002 deep"),
    ],
)
def test_hostile_requests_get_a_4xx_before_the_work_and_health_answers_meanwhile(workdir, server, make, status, says):
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    if make == "100,000 empty file parts":
        boundary = "b" * 16
        part = f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n\r\n\r\n'.encode()
        body, content_type = part * 100_000 + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
    elif make == "a 13000 x 13000 PNG":
        Image.new("L", (13000, 13000)).save(workdir / "huge.png")  # 164 kB of zeros
        body, content_type = (workdir / "huge.png").read_bytes(), "image/png"
    else:
        inner = {"a 5,000-digit integer": "1" * 5000, "10**400": "1" + "0" * 400, "100,000-deep nesting": "[" * 100_000 + "]" * 100_000}[make]
        body, content_type = f'{{"inputs": [{inner}]}}'.encode(), "application/json"
    with ThreadPoolExecutor(1) as pool:
        hostile = pool.submit(post, server, body, content_type)
        health = [get(server + "/health")[0] for _ in range(5)]
        got, answer = hostile.result()
    assert got == status and says in answer["error"] and "\n" not in answer["error"], answer
    assert health == [200] * 5


@pytest.fixture(scope="module")
def guarded_server(workdir):
    """``serve.py`` with an API key and a 1-second body timeout."""
    (workdir / "key.txt").write_text("s3cret-key\n")
    process, url = start_server(workdir, "--api_key_file", "key.txt", "--body_timeout_s", "1")
    yield process, url
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.slow
def test_ready_metrics_and_the_api_key(workdir, guarded_server):
    _, url = guarded_server
    assert get(url + "/health") == (200, b'{"status":"ok"}') and get(url + "/ready") == (200, b'{"status":"ready"}')
    image = sorted((workdir / "new").glob("*.png"))[0].read_bytes()
    request = urllib.request.Request(url + "/predict", data=image, method="POST", headers={"Content-Type": "image/png"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401 and "API key" in json.loads(refused.value.read())["error"]
    for header in ({"Authorization": "Bearer s3cret-key"}, {"X-API-Key": "s3cret-key"}):
        request = urllib.request.Request(url + "/predict", data=image, method="POST", headers={"Content-Type": "image/png", **header})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
    assert get(url + "/metrics")[0] == 401 and get(url + "/predict", {"X-API-Key": "wrong"})[0] == 401
    status, text = get(url + "/metrics", {"X-API-Key": "s3cret-key"})
    metrics = text.decode()
    assert status == 200
    assert 'serve_requests_total{route="/predict",status="200"} 2.0' in metrics
    assert 'serve_requests_total{route="/predict",status="401"} 2.0' in metrics
    assert "serve_batch_size_count 2.0" in metrics and "serve_request_seconds_bucket" in metrics
    assert "serve_requests_in_flight 1.0" in metrics  # this request


@pytest.mark.slow
def test_slow_and_vanishing_clients_are_cut_off_with_one_log_line(workdir, guarded_server):
    import time

    process, url = guarded_server
    with raw_connection(url) as slow_headers:  # a header line, then nothing: closed after --body_timeout_s
        slow_headers.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        assert slow_headers.recv(1000) == b""  # closed by the server (the socket's own timeout would raise)
    with raw_connection(url) as slow_body:  # headers, then part of the body: 408
        slow_body.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-API-Key: s3cret-key\r\nContent-Type: image/png\r\n"
                          b"Content-Length: 1000\r\n\r\n" + bytes(10))
        answer = read_answer(slow_body)
        assert answer.startswith("HTTP/1.1 408") and "took more than 1 s to arrive" in answer
    with raw_connection(url) as vanishing:  # gone mid-body
        vanishing.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-API-Key: s3cret-key\r\nContent-Type: image/png\r\n"
                          b"Content-Length: 1000\r\n\r\n" + bytes(10))
        time.sleep(0.3)
    for _ in range(300):  # the server writes its line once it sees the connection go
        log = process.log_path.read_text()
        if "disconnected" in log:
            break
        time.sleep(0.1)
    assert "request headers took over 1 s" in log and "disconnected before its request had arrived" in log, log
    assert "Traceback" not in log, log
    assert get(url + "/health")[0] == 200


@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight_and_exits_0(workdir):
    import signal
    import time

    process, url = start_server(workdir)
    image = sorted((workdir / "new").glob("*.png"))[0].read_bytes()
    with raw_connection(url) as client:
        client.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(image)}\r\n\r\n".encode()
                       + image[:100])
        for _ in range(600):  # until the server has this request in flight (and the one asking)
            if b"serve_requests_in_flight 2.0" in get(url + "/metrics")[1]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the request never showed as in flight")
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the signal is handled; the request still waits for the rest of its body
        client.sendall(image[100:])
        answer = read_answer(client)
    assert answer.startswith("HTTP/1.1 200") and '"predictions"' in answer
    assert process.wait(timeout=30) == 0
    assert "stopped" in process.stdout.read()


@pytest.mark.parametrize(("option", "says"), [(["--port", "99999"], "99999 is not a port"), (["--max_batch", "0"], "0 is less than 1"),
                                               (["--api_key_file", "missing.txt"], "cannot read the API key file")])
def test_serve_refuses_bad_options_in_one_line(tmp_path, option, says):
    done = subprocess.run([sys.executable, str(REPO / "serve.py"), "model.onnx", *option],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium driven by Selenium (Debian's chromium and chromium-driver; .ci/run installs them)."""
    import shutil

    webdriver = pytest.importorskip("selenium.webdriver")
    driver_path = shutil.which("chromedriver")
    if driver_path is None or shutil.which("chromium") is None:
        pytest.skip("needs chromium and chromedriver (apt-get install chromium chromium-driver; .ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=900,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    yield driver
    driver.quit()


@pytest.mark.slow
def test_the_page_shows_the_top_classes_of_a_dropped_image_and_the_error_of_a_bad_file(workdir, server, browser, tmp_path,
                                                                                      record_property):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    assert browser.title == exported(workdir, "lenet_imagefolder").stem
    picture = sorted((workdir / "new").glob("*.png"))[0]
    browser.find_element(By.ID, "file").send_keys(str(picture))
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#result tr"))
    rows = [row.text.split() for row in browser.find_elements(By.CSS_SELECTOR, "#result tr")]
    status, answer = post(server, picture.read_bytes(), "image/png")
    expected = [[top["class"], f"{top['probability']:.4f}"] for top in answer["predictions"][0]["top_k"]]
    assert rows == expected
    screenshot = tmp_path / "page.png"
    browser.save_screenshot(str(screenshot))
    record_property("screenshot", str(screenshot))
    print(f"screenshot of the page: {screenshot}")
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("a text file posing as a picture")
    browser.find_element(By.ID, "file").send_keys(str(not_an_image))
    WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "error").text)
    assert "cannot read image the upload" in browser.find_element(By.ID, "error").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#result tr")


# -- int8 and micro-batching ------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_int8_export_keeps_the_accuracy_and_is_served_as_it_is(workdir, monkeypatch, capsys, caplog):
    from project.tools import export
    from project.inference.model import ExportedModel

    monkeypatch.chdir(workdir)
    run, best = workdir / "runs" / "lenet_digits" / "version_0", best_checkpoint(workdir, "lenet_digits")
    main(["export", "--config", str(run / "config.yaml"), "--ckpt_path", str(best), "--quantize", "int8", *QUIET])
    int8 = best.with_name(best.stem + ".int8.onnx")
    quantized = json.loads(int8.with_suffix(".json").read_text())["quantized"]
    assert quantized["float_accuracy"] - quantized["accuracy"] <= 0.005 and quantized["test_samples"] > 0
    assert f"test accuracy {quantized['accuracy']:.4f}" in caplog.text
    rows = np.loadtxt(workdir / "rows.csv", delimiter=",", dtype=np.float32)
    float_classes = [r["pred"] for r in ExportedModel(exported(workdir, "lenet_digits")).predict(rows)]
    int8_classes = [r["pred"] for r in ExportedModel(int8).predict(rows)]
    assert np.mean(np.array(float_classes) == np.array(int8_classes)) >= 0.9
    # A drop past the limit refuses the whole export, and leaves the files already there as they were.
    before = {path.name: path.stat().st_mtime_ns for path in best.parent.iterdir()}
    monkeypatch.setattr(export, "INT8_MAX_DROP", -1.0)
    message = export_error(["--config", str(run / "config.yaml"), "--ckpt_path", str(best), "--quantize", "int8"], capsys)
    assert "points below the float graph's" in message and "nothing was written" in message
    assert {path.name: path.stat().st_mtime_ns for path in best.parent.iterdir()} == before


@pytest.mark.slow
def test_int8_is_refused_in_one_line_where_it_is_not_offered(workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    run, best = workdir / "runs" / "two_layer_regression" / "version_0", best_checkpoint(workdir, "two_layer_regression")
    assert "offered for classification" in export_error(["--config", str(run / "config.yaml"), "--ckpt_path", str(best),
                                                          "--quantize", "int8"], capsys)
    assert "--quantize takes int8" in export_error(["--config", str(run / "config.yaml"), "--ckpt_path", str(best),
                                                    "--quantize", "int4"], capsys)


def test_micro_batching_runs_concurrent_requests_as_one_batch_and_answers_each_its_own():
    import asyncio

    from project.inference.batching import MicroBatcher

    batches = []

    def run(inputs: np.ndarray) -> np.ndarray:
        batches.append(len(inputs))
        if (inputs < 0).any():
            raise ValueError("a negative input")
        return inputs * 10

    async def requests(batcher: MicroBatcher, sizes: list[int], sign: int = 1) -> list[np.ndarray]:
        return await asyncio.gather(*(batcher(sign * np.full((n, 2), i + 1.0)) for i, n in enumerate(sizes)), return_exceptions=True)

    answers = asyncio.run(requests(MicroBatcher(run, max_size=64, max_wait_s=0.05), [1, 2, 3, 1]))
    assert batches == [7]  # all four waited together
    assert [a.tolist() for a in answers] == [[[10.0, 10.0]] * n for n in (1,)] + [[[20.0, 20.0]] * 2, [[30.0, 30.0]] * 3, [[40.0, 40.0]]]
    batches.clear()
    asyncio.run(requests(MicroBatcher(run, max_size=3, max_wait_s=0.05), [2, 2, 5]))
    assert batches == [4, 5]  # stops growing at max_size; a larger request runs alone, never split
    answers = asyncio.run(requests(MicroBatcher(run, max_size=64, max_wait_s=0.05), [1, 1], sign=-1))
    assert all(isinstance(a, ValueError) for a in answers)  # each request of a failed batch gets the error


@pytest.mark.slow
def test_the_server_answers_the_same_with_micro_batching(workdir, server):
    from concurrent.futures import ThreadPoolExecutor

    process, batched = start_server(workdir, "--micro_batching", "on", "--batch_wait_ms", "20")
    try:
        pictures = sorted((workdir / "new").glob("*.png"))
        with ThreadPoolExecutor(len(pictures)) as pool:
            together = list(pool.map(lambda p: post(batched, p.read_bytes(), "image/png"), pictures))
        alone = [post(server, p.read_bytes(), "image/png") for p in pictures]
        assert [status for status, _ in together] == [200] * len(pictures)
        for (_, one), (_, other) in zip(together, alone):
            assert one["predictions"][0]["class"] == other["predictions"][0]["class"]
            assert one["predictions"][0]["probability"] == pytest.approx(other["predictions"][0]["probability"], abs=1e-5)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_the_page_of_a_table_model_predicts_a_pasted_row(workdir, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    process, url = start_server(workdir, name="lenet_digits")
    try:
        row = (workdir / "rows.csv").read_text().splitlines()[0]
        browser.get(url + "/")
        assert not browser.find_element(By.ID, "images").is_displayed()
        browser.find_element(By.ID, "row").send_keys(row)
        browser.find_element(By.ID, "send").click()
        WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#result tr"))
        shown = [line.text.split() for line in browser.find_elements(By.CSS_SELECTOR, "#result tr")]
        status, answer = post(url, json.dumps({"input": [float(v) for v in row.split(",")]}).encode(), "application/json")
        assert status == 200
        assert shown == [[top["class"], f"{top['probability']:.4f}"] for top in answer["predictions"][0]["top_k"]]
        browser.find_element(By.ID, "row").clear()
        browser.find_element(By.ID, "row").send_keys("1, 2, 3")
        browser.find_element(By.ID, "send").click()
        WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "error").text)
        assert "a row of this model holds 64 numbers" in browser.find_element(By.ID, "error").text
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_large_jpeg_is_reduced_while_it_decodes_and_a_large_png_is_refused_from_its_header(tmp_path):
    from PIL import Image

    from project.inference.inputs import TooManyPixels, image_pixels

    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 255, (2000, 2000, 3), dtype=np.uint8))
    picture.save(tmp_path / "big.jpg", quality=90)
    picture.save(tmp_path / "big.png")
    pixels = image_pixels(str(tmp_path / "big.jpg"), 3, 32, max_pixels=1_000_000)  # decoded at 1/8: 250 x 250
    assert pixels.shape == (3, 32, 32) and np.isfinite(pixels).all()
    with pytest.raises(TooManyPixels, match="2000 x 2000 pixels, more than the 1,000,000"):
        image_pixels(str(tmp_path / "big.png"), 3, 32, max_pixels=1_000_000)
    assert image_pixels(str(tmp_path / "big.png"), 3, 32).shape == (3, 32, 32)  # no bound: read whole, as training does


def test_the_api_key_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    from project.inference.server import api_key_of, parser

    monkeypatch.delenv("SERVE_API_KEY", raising=False)
    assert api_key_of(parser().parse_args(["m.onnx"])) is None
    monkeypatch.setenv("SERVE_API_KEY", "from-the-environment")
    assert api_key_of(parser().parse_args(["m.onnx"])) == "from-the-environment"
    (tmp_path / "key").write_text("  from-a-file\n")
    assert api_key_of(parser().parse_args(["m.onnx", "--api_key_file", str(tmp_path / "key")])) == "from-a-file"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(Exception, match="is empty"):
        api_key_of(parser().parse_args(["m.onnx", "--api_key_file", str(tmp_path / "empty")]))
