"""Serve the web demo and the REST API of a face-mask detector on this machine.

    python serve.py [--model_path checkpoints/mask_detector.keras] [--host 127.0.0.1] [--port 8000]
                    [--browser_model PATH|none]
    python serve.py --static runs/web [--model_path ...]     # then: python -m http.server -d runs/web

Open http://127.0.0.1:8000/ for the demo page (webcam or dropped images, run on the server or, switched to "here,
in this browser", by the page itself with onnxruntime-web: no image leaves the browser), or call the API:
``POST /detect`` with the bytes of an image (raw, or a multipart file upload) answers the faces as JSON, boxes
in pixels; ``GET /health`` says the server is up and which model it runs. ``--model_path`` takes every
format ``inference.py`` takes; ``--<setting> VALUE`` overrides a setting (e.g. ``--score_threshold 0.6``).
The model is loaded once; ``--workers`` threads run it and at most ``--max_pending`` requests are admitted at
once (503 beyond), each body at most ``--max_request_mb`` MiB (413 beyond); their defaults are the ``serve_*``
settings of ``components/config.py`` (``ServeSettings``). See ``serving/app.py``.

The in-browser mode runs the decoded ONNX export of the ``.keras`` model (made once at start, cached in
``runs/web_model/``), or the one ``--browser_model`` names; it needs onnxruntime-web (``npm ci`` in the repository).
``--static DIR`` writes the page, the runtime and the model as plain files to DIR (no server needed to open it:
any static web server, e.g. ``python -m http.server -d DIR``) and exits. See ``serving/web_model.py``.
"""
import argparse
import sys

import cli
from components.config import DEFAULT_SETTINGS, DETECTION_KEYS, FLAG_RANGES, flag_type, group_keys
from components.errors import ProjectError

DEFAULT_MODEL_PATH = cli.DEFAULT_MODEL_PATH
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# flag -> the setting it sets: --workers sets serve_workers, ... (every setting of ServeSettings)
SERVE_FLAGS = {key.removeprefix("serve_"): key for key in group_keys("serve")}


def at_least_one(text):
    """A whole number >= 1 (argparse type)."""
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def port_number(text):
    """A TCP port 0..65535 (argparse type; 0 picks a free one)."""
    value = int(text) if text.strip().isdigit() else -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {text!r}")
    return value


def positive_number(text):
    """A number > 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def build_parser():
    parser = cli.parser(__doc__, keys=DETECTION_KEYS)   # the serve_* keys: --workers, --max_pending, ...
    parser.add_argument("--model_path", default=DEFAULT_MODEL_PATH,
                        help="a .keras, .tflite or .onnx model, a SavedModel folder, or a folder holding a .keras "
                             f"model ({cli.DEFAULT_MODEL_HELP})")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    helps = {"workers": "inference threads", "max_pending": "requests admitted at once, running or waiting; more "
             "get 503", "max_request_mb": "largest request body in MiB; larger get 413",
             "max_image_pixels": "largest image, width x height; larger get 413"}
    for flag, key in SERVE_FLAGS.items():
        default = DEFAULT_SETTINGS.value(key)
        kind = flag_type(flag) if flag in FLAG_RANGES else (positive_number if isinstance(default, float)
                                                            else at_least_one)
        parser.add_argument(f"--{flag}", type=kind, default=None,
                            help=f"{helps[flag]} (default {default}, config key {key})")
    parser.add_argument("--browser_model", default=None, metavar="PATH|none",
                        help="decoded ONNX model (export.py --format onnx_decoded) for the page's in-browser mode "
                             "(default: the .keras model's, exported once and cached in runs/web_model/; none: no "
                             "in-browser mode)")
    parser.add_argument("--static", default=None, metavar="DIR",
                        help="write the page, onnxruntime-web and the browser model to DIR as static files "
                             "(in-browser mode only) and exit, instead of serving")
    return parser


def apply_serve_flags(args, settings):
    """``settings`` with the ``serve_*`` settings the serving flags given on the command line set."""
    return settings.replace(**{key: getattr(args, flag) for flag, key in SERVE_FLAGS.items()
                               if getattr(args, flag) is not None})


def page_model(args, model_file, settings, server=True):
    """The BrowserModel of the page (``serving.web_model.browser_model``), or None with ``--browser_model none``
    or, when serving the default one, with a notice where it cannot be made (no npm ci, no [export] extra, not a
    .keras model). A ``--browser_model`` file that cannot be used is an error."""
    from serving.web_model import WebModelError, browser_model
    if args.browser_model is not None and args.browser_model.lower() == "none":
        if not server:
            raise ProjectError("--static needs a browser model: drop --browser_model none")
        return None
    try:
        return browser_model(model_file, settings, args.browser_model, server=server)
    except WebModelError as error:
        if not server or args.browser_model is not None:
            raise
        print(f"note: the page's in-browser mode is off: {error}", file=sys.stderr, flush=True)
        return None


def write_static(args, settings):
    """serve.py --static DIR: the page and the model as plain files."""
    from runtime.model_files import load_model_config, resolve_model_path
    from serving.web_model import write_static_site
    model_file = resolve_model_path(args.model_path)
    size = cli.inference_size(args, settings)
    model_settings = load_model_config(model_file, settings)
    if size is not None:
        model_settings = model_settings.replace(input_size=size)
    files = write_static_site(args.static, page_model(args, model_file, model_settings, server=False))
    print(f"wrote the page, onnxruntime-web and the model ({len(files)} files) to {args.static}; open it with: "
          f"python -m http.server -d {args.static}", flush=True)


def body(args, settings):
    from serving.app import create_app
    from serving.server import bind_socket, load_detector, serve_forever
    settings = apply_serve_flags(args, settings)
    cli.check_exists(args.model_path, "model")
    if args.static:
        write_static(args, settings)
        return
    try:
        listening_socket = bind_socket(args.host, args.port)
    except OSError as error:
        raise ProjectError(f"--host/--port: {error}") from None
    with listening_socket:
        detector = load_detector(args.model_path, settings, cli.inference_size(args, settings))
        cli.print_notes(detector)
        browser = page_model(args, detector.model_path, detector.settings)
        host, port = listening_socket.getsockname()[:2]
        shown_host = f"[{host}]" if ":" in host else host
        print(f"serving {detector.model_path} ({detector.format}) on http://{shown_host}:{port}/ (Ctrl-C to stop)",
              flush=True)
        serve_forever(create_app(detector, settings.serve, browser), listening_socket)


def main(argv=None):
    return cli.run(build_parser(), body, argv)

