"""``serve.py``: an exported model over HTTP (FastAPI on uvicorn, no Lightning).

FastAPI with uvicorn rather than LitServe: one process and no worker pool to start, so the first
answer comes within a second of launch, and every status code and error body is ours to choose.

    POST /predict   an image file (the body, Content-Type image/*), several image files
                    (multipart/form-data), or JSON {"inputs": [row, ...]} / {"input": row}
    GET  /health    {"status": "ok"}
    GET  /metadata  the export's JSON

An answer is ``{"predictions": [{"input", "class", "probability", "probabilities", "top_k"}, ...]}``
(regression: ``{"input", "prediction"}``). A bad request gets a 4xx status and ``{"error": one line}``.
"""

import argparse
import json
import socket
import sys
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from project.engine.errors import UserError
from project.inference.inputs import UnreadableImage, shape_text
from project.inference.model import ExportedModel

MEGABYTE = 1 << 20
DRAINED = 200 * MEGABYTE  # the most of a too-large body read (and dropped) before answering 413


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_app(model: ExportedModel, max_upload_bytes: int = 10 * MEGABYTE, max_batch: int = 256) -> FastAPI:
    """The HTTP app of one exported model."""
    app = FastAPI(title=f"{model.path.stem} ({model.task})", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, error: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return model.meta

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        body = await limited_body(request, max_upload_bytes)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        files = await multipart_files(request, body, max_upload_bytes, max_batch) if kind == "multipart/form-data" else []
        names, inputs = await run_in_threadpool(read_request, model, kind, body, files, max_batch)
        probabilities_or_values = await run_in_threadpool(answer_values, model, inputs)
        return {"predictions": [answer(model, name, row) for name, row in zip(names, probabilities_or_values)]}

    return app


async def limited_body(request: Request, limit: int) -> bytes:
    """The request's body, refused with 413 once it passes ``limit`` bytes (also without a
    Content-Length). The rest of a body too large is read and dropped before the answer (up to
    ``DRAINED``): a client still sending would otherwise see its connection reset, not the 413."""
    declared = request.headers.get("content-length")
    too_large = declared is not None and declared.isdigit() and int(declared) > limit
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            too_large = True
        if too_large and size > DRAINED:
            break
        if not too_large:
            chunks.append(chunk)
    if too_large:
        shown = int(declared) if declared and declared.isdigit() else size
        raise BadRequest(413, f"the body is {shown / MEGABYTE:.1f} MB, more than the {limit / MEGABYTE:g} MB this server takes"
                         " (serve.py --max_upload_mb)")
    body = b"".join(chunks)
    if not body:
        raise BadRequest(400, "the body is empty: send an image file, multipart image files, or JSON {\"inputs\": [row, ...]}")
    return body


def read_request(model: ExportedModel, kind: str, body: bytes, files: list[tuple[str, bytes]],
                 max_batch: int) -> tuple[list[str], np.ndarray]:
    """``(names, raw inputs)`` of a request, by its Content-Type ``kind`` (``files``: a multipart body's)."""
    try:
        if kind == "application/json":
            names, inputs = json_inputs(model, body)
        elif kind == "multipart/form-data":
            names = [name for name, _ in files]
            inputs = np.stack([model.image(content, name) for name, content in files])
        elif kind.startswith("image/") or kind == "application/octet-stream":
            names, inputs = ["upload"], model.image(body, "the upload")[None]
        else:
            raise BadRequest(415, f"Content-Type {kind or '(none)'} is not taken: send image/*, multipart/form-data or application/json")
    except UnreadableImage as error:
        raise BadRequest(400, str(error)) from None
    except UserError as error:  # inputs that do not fit the model
        raise BadRequest(422, str(error)) from None
    if len(inputs) > max_batch:
        raise BadRequest(413, f"{len(inputs)} inputs in one request, more than the {max_batch} this server takes")
    return names, inputs


def json_inputs(model: ExportedModel, body: bytes) -> tuple[list[str], np.ndarray]:
    try:
        content = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(400, f"the body is not valid JSON: {error}") from None
    if not isinstance(content, dict) or not ({"inputs", "input"} & set(content)):
        raise BadRequest(422, 'expected a JSON object {"inputs": [row, ...]} or {"input": row}')
    rows = model.rows(content["inputs"] if "inputs" in content else [content["input"]], "the JSON inputs")
    return [str(i) for i in range(len(rows))], rows


async def multipart_files(request: Request, body: bytes, limit: int, max_batch: int) -> list[tuple[str, bytes]]:
    """The uploaded files of a multipart body, as ``(file name, content)``."""

    async def stream():  # the body, read (and size-checked) already
        yield body

    try:
        # No count limit of starlette's (its refusal is a 400): the body's size bounds the count, and the 413 below names it.
        form = await MultiPartParser(request.headers, stream(), max_files=limit, max_fields=16, max_part_size=limit).parse()
    except MultiPartException as error:
        raise BadRequest(400, f"the multipart body cannot be read: {error.message}") from None
    files = [(value.filename or key, await value.read()) for key, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise BadRequest(422, "the multipart body holds no file: send each image as a file field")
    if len(files) > max_batch:
        raise BadRequest(413, f"{len(files)} files in one request, more than the {max_batch} this server takes")
    return files


def answer_values(model: ExportedModel, inputs: np.ndarray) -> np.ndarray:
    return model.outputs(inputs) if model.task == "regression" else model.probabilities(inputs)


def answer(model: ExportedModel, name: str, values: np.ndarray) -> dict[str, Any]:
    """One input's answer: class name, its probability, every class's, and the top k."""
    if model.task == "regression":
        return {"input": name, "prediction": values.tolist()}
    names = model.class_names or [str(i) for i in range(len(values))]
    if model.task == "binary":  # one sigmoid: the probability of the second class
        values = np.array([1 - values[0], values[0]])
    if model.task == "multilabel":
        chosen = [names[i] for i in np.flatnonzero(values > 0.5)]
        return {"input": name, "labels": chosen, "probabilities": dict(zip(names, values.round(6).tolist()))}
    order = np.argsort(-values, kind="stable")
    top_k = min(int(model.meta["outputs"].get("top_k", 5)), len(names))
    return {"input": name, "class": names[order[0]], "probability": round(float(values[order[0]]), 6),
            "probabilities": dict(zip(names, values.round(6).tolist())),
            "top_k": [{"class": names[i], "probability": round(float(values[i]), 6)} for i in order[:top_k]]}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serve.py", description="Serve a model exported by train.py export over HTTP "
                                     "(POST /predict: an image, multipart images, or JSON rows).")
    parser.add_argument("model", help="the exported .onnx file (its .json lies beside it)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one, printed at start)")
    parser.add_argument("--max_upload_mb", type=float, default=10, help="largest request body in MB (default 10)")
    parser.add_argument("--max_batch", type=int, default=256, help="most inputs in one request (default 256)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (default 0: every core)")
    return parser


def main(args: list[str] | None = None) -> None:
    import uvicorn

    options = parser().parse_args(args)
    try:
        model = ExportedModel(options.model, options.threads)
        listening = socket.create_server((options.host, options.port))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        print(f"error: cannot listen on {options.host}:{options.port}: {error.strerror or error}", file=sys.stderr)
        sys.exit(2)
    app = create_app(model, int(options.max_upload_mb * MEGABYTE), options.max_batch)
    host, port = listening.getsockname()[:2]
    print(f"Serving {model.path} ({model.task}, input {shape_text(model.input_shape)}) at http://{host}:{port}  "
          f"(POST /predict, GET /health, GET /metadata; Ctrl-C stops)", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listening])
