"""Serve the web demo and the REST API of a face-mask detector on this machine.

    python serve.py [--model_path checkpoints/] [--host 127.0.0.1] [--port 8000]

Open http://127.0.0.1:8000/ for the demo page (webcam or dropped images), or call the API:
``POST /detect`` with the bytes of an image (raw, or a multipart file upload) answers the faces as JSON, boxes
in pixels; ``GET /health`` says the server is up and which model it runs. ``--model_path`` takes every
format ``inference.py`` takes; ``--<config key> VALUE`` overrides a setting (e.g. ``--score_threshold 0.6``).
The model is loaded once; ``--workers`` threads run it and at most ``--max_pending`` requests are admitted at
once (503 beyond), each body at most ``--max_request_mb`` MiB (413 beyond). See ``serving/app.py``.
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, REPO_ROOT)

from components.config import add_config_arguments, config_from_args  # noqa: E402
from serving.app import ServeSettings, create_app  # noqa: E402
from serving.server import bind_socket, load_detector, serve_forever  # noqa: E402

DEFAULT_MODEL_PATH = os.path.join(REPO_ROOT, "checkpoints")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def port_number(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {text!r}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def build_parser():
    defaults = ServeSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_path", default=DEFAULT_MODEL_PATH,
                        help="a .keras, .tflite or .onnx model, a SavedModel folder, or a folder holding a .keras "
                             "model (default: checkpoints/ of the repository)")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                        help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--workers", type=positive_int, default=defaults.workers,
                        help=f"inference threads (default {defaults.workers})")
    parser.add_argument("--max_pending", type=positive_int, default=defaults.max_pending,
                        help=f"requests admitted at once, running or waiting; more get 503 (default "
                             f"{defaults.max_pending})")
    parser.add_argument("--max_request_mb", type=positive_float, default=defaults.max_request_bytes / 2 ** 20,
                        help=f"largest request body in MiB; larger get 413 (default "
                             f"{defaults.max_request_bytes / 2 ** 20:g})")
    add_config_arguments(parser)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    settings = ServeSettings(max_request_bytes=int(args.max_request_mb * 2 ** 20), workers=args.workers,
                             max_pending=max(args.max_pending, args.workers))
    try:
        cfg = config_from_args(args)
        if not os.path.exists(args.model_path):
            raise ValueError(f"--model_path: {args.model_path}: model not found")
        try:
            listening_socket = bind_socket(args.host, args.port)
        except OSError as error:
            raise ValueError(f"--host/--port: {error}") from None
        detector = load_detector(args.model_path, cfg)
    except (ValueError, OSError) as error:   # ModelLoadError included
        print(f"error: {error}", file=sys.stderr)
        return 2
    host, port = listening_socket.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"serving {detector.model_path} ({detector.format}) on http://{shown_host}:{port}/ "
          "(Ctrl-C to stop)", flush=True)
    serve_forever(create_app(detector, settings), listening_socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
