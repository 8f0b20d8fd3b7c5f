"""``serve.py`` under load, as real clients use it: kept-alive connections and new ones, from a real load generator.

    python benchmarks/serving_load.py [--duration 3] [--concurrency 1 8 32 128] [--server-src DIR]

Trains LeNet on a folder of generated 32x32 RGB images (one epoch) and exports it, then:

- **load**: `hey` (Debian's package `hey`) POSTs one PNG per request for ``--duration`` seconds
  at each concurrency, with connections kept alive and with a new connection per request;
  requests/s, p50 and p99 latency, errors, and the server's resident memory after each level;
  beside it, the same image through onnxruntime in this process (no HTTP), one call at a time;
- **hostile requests**: each case below is sent while a kept-alive client asks ``/health`` in a
  loop; the answer's status, and the slowest ``/health`` answer meanwhile.

``--server-src DIR`` runs the server from another checkout's ``src`` (``git worktree add``), to
measure an earlier version side by side.
"""

import argparse
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import REPO, write_images  # noqa: E402


def rss_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) memory of process ``pid`` in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    value = {key: float(re.search(rf"{key}:\s+(\d+)", status).group(1)) / 1024 for key in ("VmRSS", "VmHWM")}
    return value["VmRSS"], value["VmHWM"]


def hey(url: str, image: Path, concurrency: int, duration: float, keep_alive: bool) -> dict[str, float]:
    command = ["hey", "-z", f"{duration}s", "-c", str(concurrency), "-m", "POST", "-T", "image/png", "-D", str(image)]
    output = subprocess.run([*command, *([] if keep_alive else ["-disable-keepalive"]), url + "/predict"],
                            capture_output=True, text=True, check=True).stdout
    ok = sum(int(n) for n in re.findall(r"\[200\]\s+(\d+) responses", output))
    total = sum(int(n) for n in re.findall(r"\[\d+\]\s+(\d+) responses", output))
    failed = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]\s+\w+ ", output.partition("Error distribution:")[2], re.MULTILINE))
    slowest = float(re.search(r"Slowest:\s+([\d.]+) secs", output).group(1))
    quantile = {q: float(found.group(1) if (found := re.search(rf"\b{q}% in ([\d.]+) secs", output)) else slowest) * 1000
                for q in ("50", "99")}  # hey leaves out the 99th percentile of under 100 answers: then the slowest
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)), "p50": quantile["50"],
            "p99": quantile["99"], "errors": total - ok + failed}


def in_process(onnx: Path, image: Path, seconds: float) -> dict[str, float]:
    from project.inference.model import ExportedModel

    model = ExportedModel(onnx)
    times, started = [], time.perf_counter()
    while time.perf_counter() - started < seconds:
        start = time.perf_counter()
        model.probabilities(model.image(image.read_bytes(), "x")[None])
        times.append(time.perf_counter() - start)
    times.sort()
    return {"rps": len(times) / sum(times), "p50": times[len(times) // 2] * 1000, "p99": times[int(len(times) * 0.99)] * 1000}


def hostile_bodies(work: Path) -> dict[str, tuple[bytes, str]]:
    boundary = "b" * 16
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n\r\n\r\n'.encode()
    Image.new("L", (13000, 13000)).save(work / "huge.png")
    return {
        "7.9 MB multipart of 100,000 empty files": (part * 100_000 + f"--{boundary}--\r\n".encode(),
                                                    f"multipart/form-data; boundary={boundary}"),
        "13000x13000 PNG (164 kB)": ((work / "huge.png").read_bytes(), "image/png"),
        "JSON 10**400": (b'{"inputs": [1' + b"0" * 400 + b"]}", "application/json"),
        "JSON 5,000-digit integer": (b'{"inputs": [' + b"7" * 5000 + b"]}", "application/json"),
        "JSON nested 100,000 deep": (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json"),
    }


def during(url: str, body: bytes, content_type: str) -> tuple[int, float]:
    """(status of the hostile request, slowest /health answer in ms while it was in flight)."""
    host, port = url.removeprefix("http://").split(":")
    result: dict[str, int] = {}

    def send() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        connection.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
        result["status"] = connection.getresponse().status

    health = http.client.HTTPConnection(host, int(port), timeout=60)
    slowest = 0.0
    sender = threading.Thread(target=send)
    sender.start()
    while sender.is_alive() or not slowest:
        start = time.perf_counter()
        health.request("GET", "/health")
        health.getresponse().read()
        slowest = max(slowest, time.perf_counter() - start)
    sender.join()
    return result["status"], slowest * 1000


def exported_model(work: Path, model: str, *export_options: str) -> Path:
    """Train ``model`` (lenet: LeNet on 32x32; resnet18: ResNet-18 fine-tuned at 224x224, with random
    ImageNet weights planted, no download) one epoch on generated images in ``work``, export it; the .onnx."""
    for label, name in enumerate(("cat", "dog")):
        write_images(work / "data" / name, 40, seed=label, label=label)
    write_images(work / "one", 1, seed=7)
    train = [sys.executable, str(REPO / "train.py")]
    recipe = "lenet_imagefolder" if model == "lenet" else "resnet_finetune"
    environment = {**os.environ, "TORCH_HOME": str(work / "torch")}
    if model == "resnet18":
        import torch
        import torchvision

        (work / "torch" / "hub" / "checkpoints").mkdir(parents=True)
        torch.save(torchvision.models.resnet18().state_dict(), work / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    subprocess.run([*train, "fit", "--config", str(REPO / "configs" / f"{recipe}.yaml"), "--data.data_dir=data",
                    "--trainer.max_epochs=1", "--data.loader.num_workers=0", "--trainer.enable_progress_bar=false"],
                   cwd=work, check=True, capture_output=True, env=environment)
    run_folder = work / "runs" / recipe / "version_0"
    checkpoint = next((run_folder / "checkpoints").glob("best-*.ckpt"))
    subprocess.run([*train, "export", "--config", str(run_folder / "config.yaml"), "--ckpt_path", str(checkpoint), *export_options],
                   cwd=work, check=True, capture_output=True, env=environment)
    return checkpoint.with_suffix(".onnx")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per load level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--server-src", type=Path, default=None, help="run serve.py from this src folder")
    parser.add_argument("--serve-options", default="", help="more options for serve.py, e.g. '--micro_batching off'")
    parser.add_argument("--no-hostile", action="store_true", help="leave out the hostile requests")
    parser.add_argument("--model", choices=["lenet", "resnet18"], default="lenet",
                        help="LeNet on 32x32 images, or ResNet-18 fine-tuned at 224x224 (random ImageNet weights planted: no download)")
    options = parser.parse_args()
    if shutil.which("hey") is None:
        sys.exit("this benchmark needs the load generator hey: apt-get install hey")
    work = Path(tempfile.mkdtemp(prefix="serving-load-"))
    try:
        onnx, image = exported_model(work, options.model), work / "one" / "0000.png"
        environment = {**os.environ, **({"PYTHONPATH": str(options.server_src.resolve())} if options.server_src else {})}
        server = subprocess.Popen([sys.executable, str(REPO / "serve.py"), str(onnx), "--port", "0", *options.serve_options.split()], cwd=work,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=environment)
        try:
            url = server.stdout.readline().split(" at ")[1].split()[0]
            time.sleep(1)
            idle_rss = rss_mb(server.pid)[0]
            rows = []
            for concurrency in options.concurrency:
                for keep_alive in (True, False):
                    result = hey(url, image, concurrency, options.duration, keep_alive)
                    rows.append((concurrency, "kept alive" if keep_alive else "new per request", result, rss_mb(server.pid)))
            hostile = {} if options.no_hostile else {name: (*during(url, body, kind), rss_mb(server.pid))
                                                     for name, (body, kind) in hostile_bodies(work).items()}
        finally:
            server.terminate()
            server.wait()
        alone = in_process(onnx, image, options.duration)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    model = "LeNet 3x32x32" if options.model == "lenet" else "ResNet-18 3x224x224"
    print(f"serve.py {options.serve_options}, {model}, one PNG per POST, {options.duration:g} s per level, hey; "
          f"server idle at {idle_rss:.0f} MB\n")
    print("| concurrency | connections | requests/s | p50 | p99 | errors | server RSS (peak) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for concurrency, connections, result, (rss, peak) in rows:
        print(f"| {concurrency} | {connections} | {result['rps']:,.0f} | {result['p50']:.2f} ms | {result['p99']:.2f} ms | "
              f"{result['errors']} | {rss:.0f} MB ({peak:.0f}) |")
    print(f"| 1 | onnxruntime in this process, no HTTP | {alone['rps']:,.0f} | {alone['p50']:.2f} ms | {alone['p99']:.2f} ms | 0 | |")
    if not hostile:
        return
    print("\n| hostile request | answer | slowest /health meanwhile | server RSS after (peak) |")
    print("|---|---:|---:|---:|")
    for name, (status, slowest, (rss, peak)) in hostile.items():
        print(f"| {name} | {status} | {slowest:.1f} ms | {rss:.0f} MB ({peak:.0f}) |")


if __name__ == "__main__":
    main()
