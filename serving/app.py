"""The web demo and REST API of one Detector, as a FastAPI app (:func:`create_app`).

    GET  /          the demo page (``serving/static/index.html``): webcam or dropped images, boxes drawn on it,
                    detected by the server or, in its in-browser mode, by the page itself
    GET  /health    {"status": "ok", "model", "format", "input_size", "labels", "workers", "pending", ...}
    POST /detect    image bytes -> detections in pixels of that image (see :func:`detections_to_json`)
    GET  /model/model.json, /model/model.onnx   the in-browser mode's model spec and decoded ONNX model
                    (``serving/web_model.py``; 404 when the server has none), /ort/<file> onnxruntime-web's files

A body for ``/detect`` is the raw bytes of an image file (Content-Type ``image/*``, ``application/octet-stream``
or none) or a ``multipart/form-data`` upload whose file part is the image; ``?score_threshold=0.6`` overrides
the model's threshold. Bad input gets ``{"error": "<one line>", "status": <code>}`` and never a 500:

* 400: empty body, not a decodable image, a bad parameter or a malformed multipart body;
* 413: a body over ``max_request_bytes`` (refused from its Content-Length before any of it is read, or as soon
  as a streamed body passes the bound) or an image whose header declares more than ``max_image_pixels``;
* 415: any other content type (e.g. form-urlencoded, JSON, text), or a multipart file part of such a type;
* 503: ``max_pending`` requests are already admitted. Admitted requests are read, decoded and detected on a
  pool of ``workers`` threads, the rest of them wait: at most ``max_pending`` bodies are held at once.
"""
from __future__ import annotations

import asyncio
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import cv2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from components.config import ServeSettings
from components.images import ImageError, decode_image_bytes
from serving.web_model import MODEL_FILE, ORT_DIST_DIR, ORT_FILES, SPEC_FILE

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from runtime.detector import Detector
    from runtime.end_to_end_models import EndToEndModel
    from runtime.postprocessing import Detections
    from serving.web_model import BrowserModel

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
RAW_IMAGE_TYPES = ("application/octet-stream",)   # besides image/*
MULTIPART_TYPE = "multipart/form-data"
BODY_NAME = "request body"                          # how error messages name the uploaded image


class ApiError(Exception):
    """A request the API refuses: HTTP ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The JSON body every refusal has: {"error": message, "status": status}."""
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


class Admission:
    """Counts the requests admitted to the worker pool; refuses more than ``limit`` at once. Used from the
    event loop only, so a plain counter is enough."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending = 0

    def enter(self) -> None:
        if self.pending >= self.limit:
            raise ApiError(503, f"server busy: {self.pending} requests pending (the bound is {self.limit}); "
                                "retry shortly")
        self.pending += 1

    def leave(self) -> None:
        self.pending -= 1


def media_type(content_type: str | None) -> str:
    """The lower-case media type of a Content-Type header ('' for none), without its parameters."""
    return (content_type or "").split(";")[0].strip().lower()


def check_content_type(content_type: str | None) -> str:
    """Raise ApiError 415 unless the request is raw image bytes or a multipart upload."""
    kind = media_type(content_type)
    if kind in ("", MULTIPART_TYPE, *RAW_IMAGE_TYPES) or kind.startswith("image/"):
        return kind
    raise ApiError(415, f"unsupported Content-Type {kind!r}: send the image bytes as image/jpeg, image/png, ... "
                        f"or application/octet-stream, or as a {MULTIPART_TYPE} file upload")


def check_declared_length(headers: Headers, limit: int) -> None:
    """Raise ApiError 413 when the Content-Length header declares more than ``limit`` bytes (400 if malformed)."""
    declared = headers.get("content-length")
    if declared is None:
        return
    if not declared.strip().isdigit():
        raise ApiError(400, f"malformed Content-Length header {declared!r}")
    if int(declared) > limit:
        raise ApiError(413, f"{BODY_NAME} too large: {int(declared)} bytes, the limit is {limit}")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read chunk by chunk; ApiError 413 as soon as it passes ``limit`` bytes."""
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"{BODY_NAME} too large: more than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "client disconnected before the body was sent") from None
    return b"".join(chunks)


async def uploaded_file_bytes(headers: Headers, body: bytes) -> bytes:
    """The bytes of the file part of a multipart/form-data ``body`` (the first, if several).

    Raises ApiError 400 for a malformed body or one without a file part, 415 for a part of a non-image type.
    """
    async def stream():
        yield body

    parser = MultiPartParser(headers, stream(), max_files=1, max_fields=16, max_part_size=64 * 1024)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise ApiError(400, f"malformed multipart body ({error.message})") from None
    try:
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise ApiError(400, "multipart body holds no file part: upload the image as a file field "
                                "(e.g. curl -F image=@photo.jpg)")
        kind = media_type(files[0].content_type)
        if kind and kind not in RAW_IMAGE_TYPES and not kind.startswith("image/"):
            raise ApiError(415, f"uploaded file {files[0].filename!r} has type {kind!r}, not an image type")
        return await files[0].read()
    finally:
        await form.close()


def check_pixel_count(data: bytes, limit: int) -> None:
    """Raise ApiError 413 when the image header in ``data`` declares more than ``limit`` pixels (read
    without decoding, so a small file that would decode into gigabytes is refused), 400 when no image
    format is recognised."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise ApiError(413, f"{BODY_NAME}: image too large (over {limit} pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ApiError(400, f"{BODY_NAME}: not a decodable image (send a JPEG, PNG, BMP, WebP or TIFF file)"
                       ) from None
    if width * height > limit:
        raise ApiError(413, f"{BODY_NAME}: image too large ({width}x{height} pixels, the limit is {limit})")


def detections_to_json(detections: Detections, image_shape: Sequence[int],
                       class_names: Sequence[str]) -> dict[str, Any]:
    """A JSON-ready dict of one image's detections.

    Returns {"image": {"width", "height"} in pixels, "faces": [{"label", "score", "box": {"left", "top",
    "right", "bottom"}}] with boxes in pixels of the image, best score first, "counts": {class name: faces}
    for every class but the background}.
    """
    faces: list[dict[str, Any]] = []
    for box, score, label in zip(detections.boxes.tolist(), detections.scores.tolist(), detections.labels()):
        faces.append({"label": label, "score": round(float(score), 4),
                      "box": dict(zip(("left", "top", "right", "bottom"), (round(v, 1) for v in box)))})
    faces.sort(key=lambda face: -face["score"])
    counts = {name: 0 for name in class_names[1:]}
    for face in faces:
        counts[face["label"]] = counts.get(face["label"], 0) + 1
    return {"image": {"width": int(image_shape[1]), "height": int(image_shape[0])}, "faces": faces,
            "counts": counts}


def detect_image_bytes(detector: Detector | EndToEndModel, data: bytes, serve: ServeSettings,
                       score_threshold: float | None = None) -> dict[str, Any]:
    """Decode image file bytes and detect faces in it: the JSON dict of :func:`detections_to_json` plus
    "inference_ms" (model and post-processing). Raises ApiError 400 / 413 for bad images."""
    if not data:
        raise ApiError(400, f"{BODY_NAME}: empty; send the bytes of an image file")
    check_pixel_count(data, serve.serve_max_image_pixels)
    try:
        image_bgr, _ = decode_image_bytes(data, BODY_NAME)
    except ImageError as error:
        raise ApiError(400, str(error)) from None
    image_rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    start = time.perf_counter()
    detections = detector.detect(image_rgb, score_threshold)
    result = detections_to_json(detections, image_rgb.shape, list(detector.settings.model.labels_list))
    result["inference_ms"] = round((time.perf_counter() - start) * 1000.0, 1)
    return result


def parse_score_threshold(text: str | None) -> float | None:
    """``?score_threshold=`` -> float in [0, 1] or None; ApiError 400 otherwise."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ApiError(400, f"score_threshold: must be a number between 0 and 1, got {text!r}")
    return value


def create_app(detector: Detector | EndToEndModel, serve: ServeSettings | None = None,
               browser_model: BrowserModel | None = None) -> FastAPI:
    """The FastAPI app serving ``detector`` (anything with ``detect(image_rgb, score_threshold)`` returning
    Detections and ``settings``: ``model`` and ``detect``), bounded by ``serve`` (``components.config.ServeSettings``,
    default: the defaults);
    ``browser_model`` (a ``serving.web_model.BrowserModel``, or None: no in-browser mode) for the page."""
    serve = serve or ServeSettings()
    executor = ThreadPoolExecutor(max_workers=serve.serve_workers, thread_name_prefix="detect")
    admission = Admission(serve.max_pending)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="Face-mask detector", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.detector, app.state.serve, app.state.admission = detector, serve, admission
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(os.path.join(STATIC_DIR, "index.html"))

    @app.get("/health")
    async def health():
        spec = detector.settings.model
        return {"status": "ok", "model": getattr(detector, "model_path", None),
                "format": getattr(detector, "format", None),
                "input_size": list(spec.input_size), "labels": list(spec.labels_list[1:]),
                "score_threshold": detector.settings.detect.score_threshold,
                "flip_test": getattr(detector, "flip_test", None), "test_scales": getattr(detector, "test_scales", [1]),
                "workers": serve.serve_workers, "pending": admission.pending, "max_pending": serve.max_pending,
                "max_request_bytes": serve.max_request_bytes, "browser_model": browser_model is not None}

    def no_browser_model():
        return error_response(404, "this server has no model for the page's in-browser mode (serve.py "
                                   "--browser_model; a .keras model gets one by default)")

    @app.get(f"/model/{SPEC_FILE}")
    async def model_spec():
        return browser_model.spec if browser_model else no_browser_model()

    @app.get(f"/model/{MODEL_FILE}")
    async def model_file():
        if not browser_model:
            return no_browser_model()
        return FileResponse(browser_model.onnx_path, media_type="application/octet-stream")

    @app.get("/ort/{name}", include_in_schema=False)
    async def runtime_file(name: str):
        path = os.path.join(ORT_DIST_DIR, name)
        if name not in ORT_FILES or not os.path.isfile(path):
            return error_response(404, f"/ort/{name}: not a file of the page's runtime (run `npm ci` for "
                                       "onnxruntime-web)")
        return FileResponse(path)

    @app.post("/detect")
    async def detect(request: Request):
        try:
            kind = check_content_type(request.headers.get("content-type"))
            threshold = parse_score_threshold(request.query_params.get("score_threshold"))
            check_declared_length(request.headers, serve.max_request_bytes)
            admission.enter()
        except ApiError as error:
            return _refusal(error)
        try:
            body = await read_body(request, serve.max_request_bytes)
            if kind == MULTIPART_TYPE:
                body = await uploaded_file_bytes(Headers(scope=request.scope), body)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(executor, detect_image_bytes, detector, body, serve, threshold)
        except ApiError as error:
            return _refusal(error)
        finally:
            admission.leave()

    return app


def _refusal(error):
    headers = {"Retry-After": "1"} if error.status == 503 else None
    return error_response(error.status, error.message, headers)


def _add_error_handlers(app) -> None:
    """Every error as the same JSON body: unknown paths and methods, validation errors (400), and any
    unexpected exception (500, with its type; bad input never gets here)."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, error):
        return error_response(error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, error):
        details = "; ".join(f"{'.'.join(map(str, item.get('loc', ())))}: {item.get('msg')}" for item in error.errors())
        return error_response(400, f"invalid request ({details})")

    @app.exception_handler(Exception)
    async def unexpected_error(_request, error):
        return error_response(500, f"internal error ({type(error).__name__}: {error})")
