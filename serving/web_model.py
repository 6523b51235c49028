"""The page's in-browser mode: the model it runs, the spec it reads, the runtime it loads, and the static export.

The page (``serving/static/``) runs the decoded ONNX model (``export.py --format onnx_decoded``: input ``input``
[1, 3, h, w] NCHW RGB in [-1, 1] of the letterboxed image, outputs ``boxes`` [1, P, 4] corner form normalised to
the input and ``scores`` [1, P, K] foreground probabilities) with onnxruntime-web (npm ``onnxruntime-web``,
installed by ``npm ci`` in the repository root into ``node_modules/``), and reads ``model/model.json``
(:func:`page_spec`). ``serve.py`` serves both and the runtime's files (``serving/app.py``: ``/model/...``,
``/ort/...``); ``serve.py --static DIR`` writes the same layout as plain files (:func:`write_static_site`), which
any static web server serves (``python -m http.server -d DIR``). No file comes from a CDN.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

from components.atomic_io import staging_folder, temporary_path
from components.config import plain
from components.errors import ProjectError

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from components.config import ModelSpec, Settings

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATIC_DIR = os.path.join(REPO_ROOT, "serving", "static")
ORT_DIST_DIR = os.path.join(REPO_ROOT, "node_modules", "onnxruntime-web", "dist")
# what the page loads of onnxruntime-web: the WASM-only ES module, its Emscripten glue and the WebAssembly binary
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
PAGE_FILES = ("index.html", "demo.css", "demo.js", "browser_model.js")   # serving/static/
MODEL_FILE = "model.onnx"       # under model/ on the server and in an export
SPEC_FILE = "model.json"
DEFAULT_CACHE_DIR = os.path.join(REPO_ROOT, "runs", "web_model")   # decoded exports of served .keras models
DECODED_FORMAT = "onnx_decoded"   # deploy/decoded_onnx.py
EXPORT_EXTRA_HINT = "pip install -e \".[export]\""
CACHE_VERSION = 1               # bump when the decoded export changes, so that cached files are made again


class WebModelError(ProjectError):
    """The browser model or the page's runtime is missing or unusable; the message names the file and the fix."""


@dataclass(frozen=True)
class BrowserModel:
    """What the page needs for its in-browser mode: the decoded ONNX file and the spec of :func:`page_spec`."""
    onnx_path: str
    spec: dict


def ort_dir() -> str:
    """The folder of onnxruntime-web's files; WebModelError when ``npm ci`` has not installed them."""
    missing = [name for name in ORT_FILES if not os.path.isfile(os.path.join(ORT_DIST_DIR, name))]
    if missing:
        raise WebModelError(f"{ORT_DIST_DIR}: onnxruntime-web is not installed ({missing[0]} missing): run `npm ci` "
                            f"in {REPO_ROOT}")
    return ORT_DIST_DIR


def onnx_input_size(onnx_path: str) -> tuple[int, int]:
    """(h, w) of a decoded ONNX model's input [1, 3, h, w]; WebModelError unless it has the page's input and
    outputs (``input``; ``boxes``, ``scores``)."""
    from runtime.end_to_end_models import DECODED_INPUT, DECODED_OUTPUTS
    try:
        import onnx
    except ImportError:
        raise WebModelError(f"{onnx_path}: reading the browser model needs the onnx package ({EXPORT_EXTRA_HINT})"
                            ) from None
    try:
        graph = onnx.load(onnx_path, load_external_data=False).graph
    except Exception as error:  # noqa: BLE001  (protobuf raises DecodeError and others)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WebModelError(f"{onnx_path}: not a loadable ONNX model ({reason})") from None
    initialisers = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initialisers]
    outputs = sorted(value.name for value in graph.output)
    if [value.name for value in inputs] != [DECODED_INPUT] or outputs != sorted(DECODED_OUTPUTS):
        raise WebModelError(f"{onnx_path}: not a decoded ONNX model (inputs {[value.name for value in inputs]}, "
                            f"outputs {outputs}; expected {DECODED_INPUT!r} -> {', '.join(DECODED_OUTPUTS)}: export "
                            f"one with export.py --format {DECODED_FORMAT})")
    dims = [dim.dim_value for dim in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3 or dims[2] <= 0 or dims[3] <= 0:
        raise WebModelError(f"{onnx_path}: input {DECODED_INPUT!r} has shape {dims}, expected [1, 3, h, w]")
    return dims[2], dims[3]


def page_spec(settings: Settings, model_name: str, server: bool) -> dict[str, Any]:
    """model.json: what the page needs to run the decoded model as the server's Detector runs the model of
    ``settings`` (its ``model`` spec and ``detect`` thresholds).

    Returns {"model": path of the ONNX file relative to the page, "model_name", "input_name", "output_names",
    "input_size": [h, w], "labels": the K foreground classes in the order of the scores, "score_threshold",
    "nms_threshold", "max_number_keep", "pad_value", "normalisation": {"mean", "std"}, "server": whether a
    serve.py serves the page (POST /detect, GET /health) or it is a static export}.
    """
    from runtime.end_to_end_models import DECODED_INPUT, DECODED_OUTPUTS
    spec, detect = settings.model, settings.detect
    return {"model": f"model/{MODEL_FILE}", "model_name": model_name, "input_name": DECODED_INPUT,
            "output_names": dict(zip(("boxes", "scores"), DECODED_OUTPUTS)),
            "input_size": [int(side) for side in spec.input_size],
            "labels": list(spec.labels_list[1:]), "score_threshold": float(detect.score_threshold),
            "nms_threshold": float(detect.nms_threshold), "max_number_keep": int(detect.max_number_keep),
            "pad_value": 127, "normalisation": {"mean": 127.5, "std": 127.5}, "server": bool(server)}


def cache_key(model_file: str, spec: ModelSpec) -> str:
    """A short hash of the model file's bytes, its own settings (``spec``, the model settings only) and the
    input size: the cached export's name."""
    digest = hashlib.sha256()
    with open(model_file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    settings = {key: plain(getattr(spec, key))
                for key in ("input_size", "labels_list", "min_sizes", "steps", "variances", "clip")}
    digest.update(json.dumps([CACHE_VERSION, settings], sort_keys=True, default=list).encode())
    return digest.hexdigest()[:16]


def decoded_onnx_for(model_file: str, spec: ModelSpec, cache_dir: str = DEFAULT_CACHE_DIR,
                     log: Callable[[str], Any] = print) -> str:
    """The decoded ONNX export of the ``.keras`` model ``model_file`` at ``spec.input_size`` (``spec``: the
    model settings only), made with
    ``deploy.export.export_model_file`` (checked against the Keras model) the first time, then read from
    ``cache_dir`` (``<stem>_<hash>.onnx``). Returns its path."""
    from deploy.export import export_model_file
    stem = os.path.splitext(os.path.basename(model_file))[0]
    path = os.path.join(cache_dir, f"{stem}_{cache_key(model_file, spec)}.onnx")
    if os.path.isfile(path):
        return path
    log(f"exporting {model_file} for the page's in-browser mode (once; cached in {path})")
    os.makedirs(cache_dir, exist_ok=True)
    try:
        export_model_file(model_file, DECODED_FORMAT, output=path, log=log, input_size=tuple(spec.input_size))
    except ImportError as error:   # tf2onnx / onnx / onnxruntime: the [export] extra
        raise WebModelError(f"{model_file}: the decoded ONNX export needs {error.name or error} "
                            f"({EXPORT_EXTRA_HINT})") from None
    except ProjectError as error:
        raise WebModelError(str(error)) from None
    return path


def browser_model(model_file: str, settings: Settings, onnx_path: str | None = None,
                  cache_dir: str = DEFAULT_CACHE_DIR, server: bool = True,
                  log: Callable[[str], Any] = print) -> BrowserModel:
    """The BrowserModel of the served model: ``onnx_path`` (a decoded ONNX file) if given, else the cached decoded
    export of ``model_file`` (a ``.keras`` file). Its spec takes the thresholds of ``settings`` (the server's) and the
    input size of the ONNX file. Raises WebModelError when the model cannot run in the page."""
    ort_dir()
    if onnx_path is None:
        if not str(model_file).endswith(".keras"):
            raise WebModelError(f"{model_file}: the page's in-browser mode exports a .keras model; for another "
                                f"format give a decoded ONNX with --browser_model (export.py --format "
                                f"{DECODED_FORMAT})")
        onnx_path = decoded_onnx_for(model_file, settings.model, cache_dir, log)
    elif not os.path.isfile(onnx_path):
        raise WebModelError(f"--browser_model: {onnx_path}: no such file")
    spec = page_spec(settings.replace(input_size=onnx_input_size(onnx_path)), os.path.basename(model_file), server)
    return BrowserModel(onnx_path, spec)


def write_static_site(folder: str, model: BrowserModel) -> list[str]:
    """Write the page, onnxruntime-web's files and ``model`` (a BrowserModel) to ``folder`` as plain files:
    index.html, static/ (the page's CSS and JS), ort/ (the runtime), model/model.onnx and model/model.json with
    ``"server": false``. The folder is staged and replaces ``folder`` only when complete. Returns the file list
    (relative paths)."""
    runtime = ort_dir()
    folder = os.path.abspath(folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise WebModelError(f"--static: {folder} is a file, expected a folder")
    parent = os.path.dirname(folder)
    with staging_folder(parent) as staging:
        os.makedirs(os.path.join(staging, "static"))
        os.makedirs(os.path.join(staging, "ort"))
        os.makedirs(os.path.join(staging, "model"))
        shutil.copyfile(os.path.join(STATIC_DIR, "index.html"), os.path.join(staging, "index.html"))
        for name in PAGE_FILES[1:]:
            shutil.copyfile(os.path.join(STATIC_DIR, name), os.path.join(staging, "static", name))
        for name in ORT_FILES:
            shutil.copyfile(os.path.join(runtime, name), os.path.join(staging, "ort", name))
        shutil.copyfile(model.onnx_path, os.path.join(staging, "model", MODEL_FILE))
        with open(os.path.join(staging, "model", SPEC_FILE), "w", encoding="utf-8") as handle:
            json.dump(dict(model.spec, server=False), handle, indent=2)
        files = sorted(os.path.relpath(os.path.join(root, name), staging)
                       for root, _, names in os.walk(staging) for name in names)
        old = temporary_path(folder, ".old")
        if os.path.isdir(folder):
            os.replace(folder, old)
        os.replace(staging, folder)
        shutil.rmtree(old, ignore_errors=True)
    return files
