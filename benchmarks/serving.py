"""The load benchmark of the REST API (``benchmark_serve.py``): the server in its own process, loaded by
``benchmarks.load.run_load`` at several concurrencies, and the report of the results."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tqdm import tqdm

from benchmarks.load import run_load
from benchmarks.report import Report, Table
from benchmarks.timing import load_average
from components.errors import ProjectError
from serving.server import bind_socket

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 180
COLUMNS = ("concurrency", "requests", "failed", "requests/s", "p50 ms", "p99 ms")
# the folder holding this checkout's packages: the server process runs its ``serve.py`` from it, so it imports
# the same code as the benchmark, installed or not
PACKAGES_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now."""
    with bind_socket(HOST, 0) as probe:
        return probe.getsockname()[1]


def start_server(model_path: str, port: int, workers: int) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """``serve.py`` (its default bounds) as a subprocess on ``HOST``:``port``; returns (process, /health
    answer) once it answers. Raises ProjectError with the server's last line when it exits or never answers."""
    command = [sys.executable, os.path.join(PACKAGES_ROOT, "serve.py"), "--model_path", model_path,
               "--host", HOST, "--port", str(port), "--workers", str(workers)]
    # the server's output goes to a file, not a pipe that nobody reads while it runs; stop_server closes it
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(command, cwd=PACKAGES_ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    process.log = log  # type: ignore[attr-defined]   # closed by stop_server
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            lines = [line for line in log.read().splitlines() if line.strip()]
            log.close()
            raise ProjectError(f"serve.py exited with status {process.returncode}: {lines[-1] if lines else ''}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as response:
                return process, json.loads(response.read())
        except OSError:
            time.sleep(0.5)
    stop_server(process)
    raise ProjectError(f"serve.py did not answer /health within {STARTUP_TIMEOUT_S} s")


def stop_server(process: subprocess.Popen[str]) -> None:
    """Stop the server of :func:`start_server` (terminate, then kill after 30 s) and close its log."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.log.close()  # type: ignore[attr-defined]


@dataclass
class ServeBenchmark:
    """What :func:`measure` found: the server's /health answer, one ``LoadResult.summary()`` row per
    concurrency, and the load average before and after."""
    image_path: str
    image_bytes: int
    health: dict
    workers: int
    requests: int
    warmup: int
    load_before: str
    load_after: str = ""
    rows: list = field(default_factory=list)


def measure(model_path: str, image_path: str, concurrency_levels: Sequence[int], requests: int, warmup: int,
            workers: int, port: int = 0, log: Callable[[str], Any] = print, progress: bool = True) -> ServeBenchmark:
    """Start the server, post ``image_path`` (a JPEG) ``warmup`` times untimed, then ``requests`` times at each
    concurrency, stop the server; returns ServeBenchmark. Failed requests are reported through ``log``."""
    with open(image_path, "rb") as handle:
        body = handle.read()
    load_before = load_average()
    port = port or free_port()
    process, health = start_server(model_path, port, workers)
    result = ServeBenchmark(image_path, len(body), health, workers, requests, warmup, load_before)
    try:
        run_load(HOST, port, body, "image/jpeg", 1, warmup)
        for concurrency in concurrency_levels:
            with tqdm(total=requests, desc=f"concurrency {concurrency}", unit="req", leave=False,
                      disable=not progress) as bar:
                load = run_load(HOST, port, body, "image/jpeg", concurrency, requests, on_done=bar.update)
            for failure in load.failures:
                log(f"failed request at concurrency {concurrency}: {failure}")
            result.rows.append(load.summary())
    finally:
        stop_server(process)
    result.load_after = load_average()
    return result


def report(result: ServeBenchmark, relative_to: str) -> Report:
    """The Report of a ServeBenchmark: one row per concurrency of ``COLUMNS`` under a line saying what ran
    (paths relative to ``relative_to``)."""
    health = result.health
    heading = (f"`POST /detect` of {os.path.relpath(result.image_path, relative_to)} "
               f"({result.image_bytes / 1024:.0f} KiB JPEG), model {os.path.relpath(health['model'], relative_to)} "
               f"({health['format']}, flip test {health['flip_test']}), {result.workers} inference worker(s), "
               f"{result.requests} requests per row after {result.warmup} warm-up requests; load average "
               f"{result.load_before} before, {result.load_after} after")
    rows = [[f"{row[key]:.1f}" if isinstance(row[key], float) else str(row[key]) for key in COLUMNS]
            for row in result.rows]
    return Report(tables=[Table(COLUMNS, rows, [heading], right=COLUMNS)])
