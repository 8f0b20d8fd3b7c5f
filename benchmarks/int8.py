"""INT8 against float32: ``train.py export --quantize int8``, its accuracy and its speed in onnxruntime.

    python benchmarks/int8.py [--rounds 5]

Two models, each exported with ``--quantize int8`` (the export itself checks the int8 graph's
test accuracy against the float graph's and refuses a drop of more than 0.5 points):

- LeNet on scikit-learn's digits (``configs/lenet_digits.yaml`` as shipped, 40 epochs): test
  accuracy of both graphs on the 359 test digits, and their time per image;
- ResNet-18 fine-tuned at 224x224 on generated images (random ImageNet weights planted, one
  epoch): time per image only (its accuracy on 8 generated test images means nothing).

Times are onnxruntime's on this machine at batch 1 and batch 64, the two graphs taking turns in
each of ``--rounds`` rounds; the median round is printed, and the ratio float / int8.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import REPO  # noqa: E402
from serving_load import exported_model  # noqa: E402


def digits_export(work: Path) -> Path:
    train = [sys.executable, str(REPO / "train.py")]
    subprocess.run([*train, "fit", "--config", str(REPO / "configs" / "lenet_digits.yaml"), "--trainer.enable_progress_bar=false"],
                   cwd=work, check=True, capture_output=True)
    run_folder = work / "runs" / "lenet_digits" / "version_0"
    checkpoint = next((run_folder / "checkpoints").glob("best-*.ckpt"))
    subprocess.run([*train, "export", "--config", str(run_folder / "config.yaml"), "--ckpt_path", str(checkpoint),
                    "--quantize", "int8"], cwd=work, check=True, capture_output=True)
    return checkpoint.with_suffix(".onnx")


def time_per_image(sessions: dict[str, object], shape: list[int], rounds: int) -> dict[tuple[str, int], float]:
    """Median over rounds of each session's seconds per image, at batch 1 and 64, taking turns."""
    rng = np.random.default_rng(0)
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for batch, calls in ((1, 200), (64, 10)):
            inputs = rng.random((batch, *shape)).astype(np.float32)
            for name, session in sessions.items():
                session.run(None, {"input": inputs})  # warm
                start = time.perf_counter()
                for _ in range(calls):
                    session.run(None, {"input": inputs})
                results.setdefault((name, batch), []).append((time.perf_counter() - start) / (calls * batch))
    return {key: statistics.median(values) for key, values in results.items()}


def main() -> None:
    import onnxruntime

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="int8-"))
    rows = []
    try:
        (work / "digits").mkdir()
        (work / "resnet").mkdir()
        for name, onnx in (("LeNet, digits", digits_export(work / "digits")),
                           ("ResNet-18, 224x224", exported_model(work / "resnet", "resnet18", "--quantize", "int8"))):
            int8 = onnx.with_name(onnx.stem + ".int8.onnx")
            meta = json.loads(int8.with_suffix(".json").read_text())
            sessions = {kind: onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                        for kind, path in (("float32", onnx), ("int8", int8))}
            times = time_per_image(sessions, meta["input"]["shape"], options.rounds)
            sizes = {kind: path.stat().st_size / 1e6 for kind, path in (("float32", onnx), ("int8", int8))}
            rows.append((name, meta["quantized"], times, sizes))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"onnxruntime on the CPU, median of {options.rounds} rounds, float32 and int8 taking turns\n")
    print("| model | test accuracy float32 / int8 | ms per image, batch 1: float32 / int8 (ratio) | batch 64 (ratio) | file MB |")
    print("|---|---|---|---|---|")
    for name, quantized, times, sizes in rows:
        accuracy = (f"{quantized['float_accuracy']:.4f} / {quantized['accuracy']:.4f} ({quantized['test_samples']} images)"
                    if name.startswith("LeNet") else "not meaningful (8 generated images)")
        cells = [f"{times[('float32', b)] * 1000:.3f} / {times[('int8', b)] * 1000:.3f} "
                 f"({times[('float32', b)] / times[('int8', b)]:.2f}x)" for b in (1, 64)]
        print(f"| {name} | {accuracy} | {cells[0]} | {cells[1]} | {sizes['float32']:.2f} / {sizes['int8']:.2f} |")


if __name__ == "__main__":
    main()
