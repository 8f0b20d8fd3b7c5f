"""From a trained checkpoint to answers: ``train.py predict`` vs ``predict_onnx.py`` vs ``serve.py``.

    python benchmarks/serving.py [--rounds 3] [--images 4000]

Trains LeNet on a folder of generated 32x32 RGB images (one epoch), exports it, then measures, in
rounds that take the three paths in turn (the median of the rounds is printed):

- start-up to first prediction: launching the process until the answer for one image exists
  (``predictions.csv`` written; for the server, the first ``POST /predict`` answered);
- per-image time at batch 1 and 64, with the image files read and decoded: for the two
  commands, ``(time for N images - time for 1 image) / (N - 1)``; for the server, the client's
  time for N images sent one per request (batch 1) or 64 per multipart request, over N, on one
  kept-alive connection.
"""

import argparse
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def write_images(folder: Path, count: int, seed: int, label: int | None = None) -> None:
    """``count`` PNGs, bright on the left half (class 0) or the right (class 1; alternating when no ``label``)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(count):
        side = i % 2 if label is None else label
        pixels = rng.integers(0, 60, (32, 32, 3)).astype(np.uint8)
        pixels[:, 16 * side : 16 * side + 16] += 180
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")


def run(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def multipart(paths: list[Path]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{p.name}"\r\n\r\n'.encode()
                    + p.read_bytes() + b"\r\n" for p in paths)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def serve(onnx: Path, images: list[Path], work: Path) -> tuple[float, float, float]:
    """(start-up to first answer, per image at batch 1, per image at batch 64) of serve.py, asked over
    one kept-alive connection, as browsers and HTTP client libraries ask (``serving_load.py``
    measures it under load, with a load generator)."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(REPO / "serve.py"), str(onnx), "--port", "0"], cwd=work,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        host, port = process.stdout.readline().split(" at http://")[1].split()[0].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=120)

        def post(body: bytes, content_type: str) -> dict:
            connection.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
            return json.loads(connection.getresponse().read())

        post(images[0].read_bytes(), "image/png")
        first = time.perf_counter() - start
        start = time.perf_counter()
        for path in images:
            post(path.read_bytes(), "image/png")
        one_by_one = (time.perf_counter() - start) / len(images)
        start = time.perf_counter()
        for i in range(0, len(images), 64):
            post(*multipart(images[i : i + 64]))
        batched = (time.perf_counter() - start) / len(images)
    finally:
        process.terminate()
        process.wait()
    return first, one_by_one, batched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=4000)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="serving-"))
    try:
        for label, name in enumerate(("cat", "dog")):
            write_images(work / "data" / name, 40, seed=label, label=label)
        write_images(work / "one", 1, seed=7)
        write_images(work / "many", options.images, seed=8)
        train = [sys.executable, str(REPO / "train.py")]
        subprocess.run([*train, "fit", "--config", str(REPO / "configs" / "lenet_imagefolder.yaml"), "--data.data_dir=data",
                        "--trainer.max_epochs=1", "--data.loader.num_workers=0", "--trainer.enable_progress_bar=false"],
                       cwd=work, check=True, capture_output=True)
        run_folder = work / "runs" / "lenet_imagefolder" / "version_0"
        checkpoint = next((run_folder / "checkpoints").glob("best-*.ckpt"))
        subprocess.run([*train, "export", "--config", str(run_folder / "config.yaml"), "--ckpt_path", str(checkpoint)],
                       cwd=work, check=True, capture_output=True)
        onnx = checkpoint.with_suffix(".onnx")
        images = sorted((work / "many").glob("*.png"))

        def lightning(folder: str, batch: int) -> float:
            loader = json.dumps({"global_batch_size": None, "batch_size": batch, "num_workers": 0})
            return run([*train, "predict", "--config", str(run_folder / "config.yaml"), "--ckpt_path", str(checkpoint),
                        f"--data.predict_dir={folder}", f"--data.loader={loader}", "--trainer.enable_progress_bar=false"], work)

        def exported(folder: str, batch: int) -> float:
            return run([sys.executable, str(REPO / "predict_onnx.py"), str(onnx), folder, "--output", "p.csv", "--overwrite",
                        "--batch_size", str(batch)], work)

        results: dict[str, list[tuple[float, float, float]]] = {"train.py predict": [], "predict_onnx.py": [], "serve.py": []}
        for _ in range(options.rounds):
            for name, predict in (("train.py predict", lightning), ("predict_onnx.py", exported)):
                one = predict("one", 1)
                marginal = [(predict("many", batch) - one) / (len(images) - 1) for batch in (1, 64)]
                results[name].append((one, *marginal))
            results["serve.py"].append(serve(onnx, images, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"LeNet, 32x32 RGB PNGs, {len(images)} images, median of {options.rounds} rounds\n")
    print("| path | start-up to first prediction | per image, batch 1 | per image, batch 64 |")
    print("|---|---:|---:|---:|")
    for name, rounds in results.items():
        first, one, many = (statistics.median(values) for values in zip(*rounds))
        print(f"| {name} | {first:.2f} s | {one * 1000:.2f} ms | {many * 1000:.2f} ms |")
    base = statistics.median(r[0] for r in results["train.py predict"])
    for name in ("predict_onnx.py", "serve.py"):
        print(f"\n{name}: first prediction {base / statistics.median(r[0] for r in results[name]):.1f}x sooner than train.py predict", end="")
    print()


if __name__ == "__main__":
    main()
