"""Running the app of ``serving.app`` with uvicorn: in the foreground (``serve.py``) or in a background thread
(tests, benchmarks), on a socket bound beforehand so that a taken port is a clear error and port 0 works."""
from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import uvicorn

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fastapi import FastAPI

    from components.config import Settings
    from runtime.detector import Detector

STARTUP_TIMEOUT_S = 30.0


def load_detector(model_path: str, settings: Settings, input_size: Sequence[int] | None = None) -> Detector:
    """``runtime.detector.Detector`` for ``model_path``, warmed up so that the first requests do not pay for
    tracing the graphs: two detections on a blank image that keep different numbers of candidates (so the
    post-processing is traced for any number). ``settings`` and ``input_size`` (h, w): as ``Detector.from_path``."""
    from runtime.detector import Detector
    detector = Detector.from_path(model_path, settings, input_size)
    blank = np.full((*detector.input_size, 3), 127, np.uint8)
    detector.detect(blank)
    detector.detect(blank, score_threshold=0.0)
    return detector


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a free port). Raises OSError naming the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as error:
        raise OSError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None


def make_server(app: FastAPI, log_level: str = "warning") -> uvicorn.Server:
    """A uvicorn Server for ``app`` (no access log: a webcam page sends several requests a second)."""
    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_keep_alive=5, server_header=False)
    return uvicorn.Server(config)


def serve_forever(app: FastAPI, listening_socket: socket.socket, log_level: str = "warning") -> None:
    """Serve ``app`` on ``listening_socket`` until interrupted (Ctrl-C: a graceful shutdown)."""
    make_server(app, log_level).run(sockets=[listening_socket])


class BackgroundServer:
    """``with BackgroundServer(app) as server:`` serves ``app`` on 127.0.0.1 at a free port (``server.url``)
    from a daemon thread, and stops it on exit."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.socket = bind_socket(host, port)
        self.host, self.port = host, self.socket.getsockname()[1]
        self.server = make_server(app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True,
                                       name="uvicorn")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()
