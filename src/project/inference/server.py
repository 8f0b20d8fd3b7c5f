"""``serve.py``: an exported model over HTTP (FastAPI on uvicorn, no Lightning).

FastAPI with uvicorn rather than LitServe: one process and no worker pool to start, so the first
answer comes within a second of launch, and every status code and error body is ours to choose.

    POST /predict   an image file (the body, Content-Type image/*), several image files
                    (multipart/form-data), or JSON {"inputs": [row, ...]} / {"input": row}
    GET  /health    {"status": "ok"}: the process answers (never behind the API key)
    GET  /ready     200 {"status": "ready"} once the model is loaded and one warm-up inference has
                    run, 503 before (never behind the API key)
    GET  /metrics   Prometheus metrics: requests by route and status, latency, batch sizes, in flight
    GET  /metadata  the export's JSON
    GET  /          a page to try the model: drop an image or paste a row, see the top classes

An answer is ``{"predictions": [{"input", "class", "probability", "probabilities", "top_k"}, ...]}``
(regression: ``{"input", "prediction"}``). A bad request gets a 4xx status and ``{"error": one line}``.

Every request's work is bounded before it is done: the body's bytes (``--max_upload_mb``), the
time it may take to arrive (``--body_timeout_s``; a request whose headers have not arrived within
that time has its connection closed), the number of multipart parts (counted before they are
parsed), each image's pixels (read from its header, ``--max_pixels``), JSON numbers (read as
floats, never as big integers) and nesting. Decoding and inference run off the event loop, so
``/health`` answers while they run. With ``--api_key_file`` (or ``SERVE_API_KEY``) every route
but ``/``, ``/health`` and ``/ready`` wants ``Authorization: Bearer KEY`` (or ``X-API-Key: KEY``),
compared in constant time. SIGTERM stops accepting, finishes what is in flight, and exits 0.
"""

import argparse
import asyncio
import hmac
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from project.errors import UserError
from project.inference.inputs import TooManyPixels, UnreadableImage, shape_text
from project.inference.model import ExportedModel
from project.inference.page import page
from project.inference.predictions import probabilities

MEGABYTE = 1 << 20
DRAINED = 200 * MEGABYTE  # the most of a too-large body read (and dropped) before answering 413
OPEN_ROUTES = ("/health", "/ready", "/")  # without the API key: probes, and the page (its requests send the key)
log = logging.getLogger("serve")


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ClientGone(Exception):
    """The client closed its connection before its request had arrived."""


@dataclass(frozen=True)
class Limits:
    """What one request may cost (``serve.py --help`` says each)."""

    max_upload_bytes: int = 10 * MEGABYTE
    max_batch: int = 256
    max_pixels: int = 16_000_000  # 4,000 x 4,000: a phone photo; 48 MB as RGB while it is decoded
    body_timeout_s: float = 30.0
    max_json_depth: int = 32  # {"inputs": [[...]]} of any model here is under 8 deep


@dataclass(frozen=True)
class Batching:
    """Micro-batching of concurrent requests (``inference.batching``); ``enabled=False`` runs each
    request's inputs as they come, several at once in threads. Off by default: on 2 CPU cores it
    gained at most 7% on ResNet-18 and nothing on LeNet without a wait (docs/serving.md)."""

    enabled: bool = False
    max_size: int = 64
    wait_ms: float = 0.0


def create_app(model: ExportedModel, limits: Limits = Limits(), api_key: str | None = None,  # noqa: B008
               batching: Batching = Batching()) -> FastAPI:  # noqa: B008
    """The HTTP app of one exported model."""
    from project.inference.batching import MicroBatcher
    from project.inference.metrics import ServerMetrics

    metrics = ServerMetrics()
    try_it_page = page(model.meta, model.path.stem)  # the same for every request
    batcher = MicroBatcher(model.outputs, batching.max_size, batching.wait_ms / 1000) if batching.enabled else None
    ready = asyncio.Event()

    async def warm_up(app: FastAPI):  # the first inference allocates onnxruntime's buffers: before /ready says so
        await run_in_threadpool(model.outputs, np.zeros((1, *model.input_shape), np.float32))
        ready.set()
        yield

    app = FastAPI(title=f"{model.path.stem} ({model.task})", docs_url=None, redoc_url=None, openapi_url=None, lifespan=warm_up)

    app.add_middleware(MeasuredAndAuthorised, metrics=metrics, api_key=api_key)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, error: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:  # 404, 405: the same shape
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, error: ClientGone) -> Response:
        log.warning("client %s disconnected before its request had arrived", client_name(request))
        return Response(status_code=499)  # nobody reads it; nginx's code for this, in the metrics

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> JSONResponse:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(error).__name__, error)
        return JSONResponse({"error": f"the server failed on this request ({type(error).__name__}); it is logged"}, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def try_it() -> str:
        return try_it_page

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def readiness() -> JSONResponse:
        if ready.is_set():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "warming up"}, status_code=503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=metrics.content_type)

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return model.meta

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        try:
            async with asyncio.timeout(limits.body_timeout_s):
                body = await limited_body(request, limits.max_upload_bytes)
        except TimeoutError:
            raise BadRequest(408, f"the body took more than {limits.body_timeout_s:g} s to arrive (serve.py --body_timeout_s)") from None
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        files = await multipart_files(request, body, limits) if kind == "multipart/form-data" else []
        names, inputs = await run_in_threadpool(read_request, model, kind, body, files, limits)
        metrics.batch_sizes.observe(len(inputs))
        outputs = await (batcher(inputs) if batcher is not None else run_in_threadpool(model.outputs, inputs))
        probabilities_or_values = answer_values(model, outputs)
        return {"predictions": [answer(model, name, row) for name, row in zip(names, probabilities_or_values)]}

    return app


ROUTES = ("/", "/health", "/ready", "/metrics", "/metadata", "/predict")


class MeasuredAndAuthorised:
    """ASGI middleware: counts and times every request for ``/metrics``, and answers 401 to one
    without the API key (``api_key``; None: no key wanted) outside ``OPEN_ROUTES``."""

    def __init__(self, app: Any, metrics: Any, api_key: str | None) -> None:
        self.app, self.metrics, self.api_key = app, metrics, api_key

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status = 500

        async def sent(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            if self.api_key is not None and route not in OPEN_ROUTES and not authorised(Headers(scope=scope), self.api_key):
                refusal = JSONResponse({"error": "this server wants an API key: Authorization: Bearer KEY, or X-API-Key: KEY"},
                                       status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await refusal(scope, receive, sent)
            else:
                await self.app(scope, receive, sent)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.observe(route, status, time.perf_counter() - started)


def authorised(headers: Headers, api_key: str) -> bool:
    """Whether the request carries ``api_key`` (compared in constant time)."""
    given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), api_key.encode())


def client_name(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


async def limited_body(request: Request, limit: int) -> bytes:
    """The request's body, refused with 413 once it passes ``limit`` bytes (also without a
    Content-Length). The rest of a body too large is read and dropped before the answer (up to
    ``DRAINED``): a client still sending would otherwise see its connection reset, not the 413."""
    declared = request.headers.get("content-length")
    too_large = declared is not None and declared.isdigit() and int(declared) > limit
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                too_large = True
            if too_large and size > DRAINED:
                break
            if not too_large:
                chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone() from None
    if too_large:
        shown = int(declared) if declared and declared.isdigit() else size
        raise BadRequest(413, f"the body is {shown / MEGABYTE:.1f} MB, more than the {limit / MEGABYTE:g} MB this server takes"
                         " (serve.py --max_upload_mb)")
    body = b"".join(chunks)
    if not body:
        raise BadRequest(400, "the body is empty: send an image file, multipart image files, or JSON {\"inputs\": [row, ...]}")
    return body


def read_request(model: ExportedModel, kind: str, body: bytes, files: list[tuple[str, bytes]],
                 limits: Limits) -> tuple[list[str], np.ndarray]:
    """``(names, raw inputs)`` of a request, by its Content-Type ``kind`` (``files``: a multipart body's)."""
    try:
        if kind == "application/json":
            names, inputs = json_inputs(model, body, limits.max_json_depth)
        elif kind == "multipart/form-data":
            names = [name for name, _ in files]
            inputs = np.stack([model.image(content, name, limits.max_pixels) for name, content in files])
        elif kind.startswith("image/") or kind == "application/octet-stream":
            names, inputs = ["upload"], model.image(body, "the upload", limits.max_pixels)[None]
        else:
            raise BadRequest(415, f"Content-Type {kind or '(none)'} is not taken: send image/*, multipart/form-data or application/json")
    except TooManyPixels as error:
        raise BadRequest(413, f"{error} (serve.py --max_pixels)") from None
    except UnreadableImage as error:
        raise BadRequest(400, str(error)) from None
    except UserError as error:  # inputs that do not fit the model
        raise BadRequest(422, str(error)) from None
    if len(inputs) > limits.max_batch:
        raise BadRequest(413, f"{len(inputs)} inputs in one request, more than the {limits.max_batch} this server takes")
    return names, inputs


def json_inputs(model: ExportedModel, body: bytes, max_depth: int) -> tuple[list[str], np.ndarray]:
    """The rows of a JSON body. Nesting deeper than ``max_depth`` is refused before it is parsed;
    numbers are read as floats (a 5,000-digit integer is inf, refused as not finite, not a 500)."""
    depth = nesting_depth(body)
    if depth > max_depth:
        raise BadRequest(400, f"the JSON is nested {depth} deep; rows of numbers need at most {max_depth}")
    try:
        content = json.loads(body, parse_int=float)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(400, f"the body is not valid JSON: {error}") from None
    if not isinstance(content, dict) or not ({"inputs", "input"} & set(content)):
        raise BadRequest(422, 'expected a JSON object {"inputs": [row, ...]} or {"input": row}')
    rows = model.rows(content["inputs"] if "inputs" in content else [content["input"]], "the JSON inputs")
    return [str(i) for i in range(len(rows))], rows


def nesting_depth(body: bytes) -> int:
    """How deep JSON ``body``'s arrays and objects nest (brackets inside strings counted too: an
    upper bound), in C-speed passes over the bytes rather than a Python loop over each."""
    brackets = body.translate(None, delete=bytes(set(range(256)) - set(b"[]{}")))
    depth = deepest = 0
    for run in brackets.replace(b"]", b"}").split(b"}"):  # an opening run, then one closing bracket
        depth += len(run)
        deepest = max(deepest, depth)
        depth = max(depth - 1, 0)
    return deepest


async def multipart_files(request: Request, body: bytes, limits: Limits) -> list[tuple[str, bytes]]:
    """The uploaded files of a multipart body, as ``(file name, content)``. The parts are counted
    from the boundary before anything is parsed."""
    boundary = request.headers.get("content-type", "").partition("boundary=")[2].split(";")[0].strip().strip('"')
    parts = body.count(b"--" + boundary.encode("latin-1")) - 1 if boundary else 0
    if parts > limits.max_batch:
        raise BadRequest(413, f"{parts} files in one request, more than the {limits.max_batch} this server takes")

    async def stream():  # the body, read (and size-checked) already
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=limits.max_batch, max_fields=16,
                                     max_part_size=limits.max_upload_bytes).parse()
    except MultiPartException as error:
        raise BadRequest(400, f"the multipart body cannot be read: {error.message}") from None
    files = [(value.filename or key, await value.read()) for key, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise BadRequest(422, "the multipart body holds no file: send each image as a file field")
    return files


def answer_values(model: ExportedModel, outputs: np.ndarray) -> np.ndarray:
    """The net's ``outputs`` as the answer gives them: probabilities, or the values of a regression."""
    return outputs if model.task == "regression" else probabilities(outputs, model.task)


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


class HeaderTimeout(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request headers have not all
    arrived ``header_timeout`` seconds after it opened or after its last answer. uvicorn 0.55 times
    out idle kept-alive connections only (``timeout_keep_alive``), so a client that sends a header
    line every few seconds held its connection forever. Reads ``self.conn`` (the connection's
    ``h11.Connection``), ``self.loop``, ``self.transport`` and ``self.client`` of uvicorn 0.55: the slow-client test
    in ``tests/test_export.py`` fails if they move."""

    header_timeout = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.answered = 0
        self.header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self.arm_header_timer()

    def on_response_complete(self) -> None:
        self.answered += 1
        super().on_response_complete()
        self.arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.header_timer is not None:  # a timer left pending would keep this connection alive for its time
            self.header_timer.cancel()
        super().connection_lost(exc)

    def arm_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
        self.header_timer = self.loop.call_later(self.header_timeout, self.close_if_still_waiting, self.answered)

    def close_if_still_waiting(self, answered: int) -> None:
        """Close the connection if no request's headers have come since the timer was armed."""
        if answered == self.answered and self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.warning("closed the connection of %s: its request headers took over %g s",
                        "%s:%d" % self.client if self.client else "?", self.header_timeout)
            self.transport.close()


def port_number(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0 to 65535; 0 picks a free one)")
    return port


def at_least(minimum: float, kind: type = int):
    def parse(text: str) -> Any:
        value = kind(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serve.py", description="Serve a model exported by train.py export over HTTP "
                                     "(POST /predict: an image, multipart images, or JSON rows).")
    limits = Limits()
    parser.add_argument("model", help="the exported .onnx file (its .json lies beside it)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=port_number, default=8000, help="port (default 8000; 0 picks a free one, printed at start)")
    parser.add_argument("--max_upload_mb", type=at_least(0.001, float), default=limits.max_upload_bytes / MEGABYTE,
                        help="largest request body in MB (default %(default)g)")
    parser.add_argument("--max_batch", type=at_least(1), default=limits.max_batch, help="most inputs in one request (default %(default)s)")
    parser.add_argument("--max_pixels", type=at_least(1), default=limits.max_pixels,
                        help="most pixels of one image, read from its header before it is decoded (default %(default)s)")
    parser.add_argument("--body_timeout_s", type=at_least(0.001, float), default=limits.body_timeout_s,
                        help="seconds a request's headers, and then its body, may take to arrive (default %(default)g)")
    parser.add_argument("--api_key_file", type=Path, default=None,
                        help="a file holding the API key every route but /, /health and /ready wants (or set SERVE_API_KEY)")
    batching = Batching()
    parser.add_argument("--micro_batching", choices=["on", "off"], default="on" if batching.enabled else "off",
                        help="run the inputs of requests that arrive together as one batch (default %(default)s; docs/serving.md)")
    parser.add_argument("--batch_max_size", type=at_least(1), default=batching.max_size,
                        help="most inputs in one micro-batch (default %(default)s)")
    parser.add_argument("--batch_wait_ms", type=at_least(0, float), default=batching.wait_ms,
                        help="how long a micro-batch's first request waits for others (default %(default)g: it takes those queued)")
    parser.add_argument("--threads", type=at_least(0), default=0, help="onnxruntime threads (default 0: every core)")
    return parser


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port``, made with ``proto=IPPROTO_TCP``.

    ``socket.create_server`` leaves ``proto`` 0, and asyncio switches Nagle's algorithm off
    (``TCP_NODELAY``) on an accepted connection only when its socket says ``IPPROTO_TCP``: without
    it every answer on a kept-alive connection waited ~40 ms for the client's delayed ACK."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
                                                         flags=socket.AI_PASSIVE)[0]
    listening = socket.socket(family, kind, proto)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets on Linux, too
        listening.bind(address)
        listening.listen(socket.SOMAXCONN)
    except OSError:
        listening.close()
        raise
    return listening


def api_key_of(options: argparse.Namespace) -> str | None:
    if options.api_key_file is not None:
        try:
            key = options.api_key_file.read_text().strip()
        except OSError as error:
            raise UserError(f"cannot read the API key file {options.api_key_file}: {error.strerror or error}") from None
        if not key:
            raise UserError(f"the API key file {options.api_key_file} is empty")
        return key
    return os.environ.get("SERVE_API_KEY") or None


def main(args: list[str] | None = None) -> None:
    import uvicorn

    options = parser().parse_args(args)
    try:
        api_key = api_key_of(options)
        model = ExportedModel(options.model, options.threads)
        listening = listening_socket(options.host, options.port)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        print(f"error: cannot listen on {options.host}:{options.port}: {error.strerror or error}", file=sys.stderr)
        sys.exit(2)
    limits = Limits(int(options.max_upload_mb * MEGABYTE), options.max_batch, options.max_pixels, options.body_timeout_s)
    app = create_app(model, limits, api_key, Batching(options.micro_batching == "on", options.batch_max_size, options.batch_wait_ms))
    host, port = listening.getsockname()[:2]
    logging.basicConfig(format="serve.py: %(message)s", level=logging.WARNING)
    print(f"Serving {model.path} ({model.task}, input {shape_text(model.input_shape)}) at http://{host}:{port}  "
          f"(POST /predict, GET /health /ready /metrics /metadata{'; API key required' if api_key else ''}; Ctrl-C stops)",
          flush=True)
    HeaderTimeout.header_timeout = options.body_timeout_s
    # uvicorn re-raises the signal it stopped on once it has finished what was in flight: ignored
    # here, so that a SIGTERM (an orchestrator stopping the server) ends with status 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", http=HeaderTimeout, timeout_keep_alive=5))
    server.run(sockets=[listening])
    print("serve.py: stopped", flush=True)


if __name__ == "__main__":
    main()
