"""A small HTTP load generator for ``POST /detect`` (used by benchmark_serve.py): ``concurrency`` client threads,
each on its own keep-alive connection, send one image until ``requests`` answers are in."""
from __future__ import annotations

import http.client
import itertools
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.timing import Timing

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class NoDelayConnection(http.client.HTTPConnection):
    """An HTTP connection with Nagle's algorithm off, as browsers and curl have it: http.client sends the headers
    and a large body in separate writes, and the body's last segment would otherwise wait for the server's
    delayed ACK (about 40 ms on Linux)."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass
class LoadResult:
    """Latencies [N] in seconds of the answered requests, failures (non-200 or broken), wall time in seconds."""
    concurrency: int
    latencies: np.ndarray
    failed: int
    wall_s: float
    failures: list

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.failed

    def summary(self) -> dict[str, Any]:
        """{"concurrency", "requests", "failed", "requests/s", "p50 ms", "p99 ms"} (requests/s counts successes)."""
        timing = Timing(tuple(float(value) for value in self.latencies))
        return {"concurrency": self.concurrency, "requests": self.requests, "failed": self.failed,
                "requests/s": len(self.latencies) / self.wall_s, "p50 ms": timing.median_ms,
                "p99 ms": timing.percentile_ms(99)}


def run_load(host: str, port: int, body: bytes, content_type: str, concurrency: int, requests: int,
             timeout_s: float = 60.0, on_done: Callable[[], Any] | None = None) -> LoadResult:
    """Send ``requests`` POST /detect requests of ``body`` from ``concurrency`` threads; returns LoadResult.

    ``on_done()`` is called after each answer (e.g. a progress bar's update). A failure is any answer but 200
    or a broken connection (reopened for the next request); the first few are kept in ``failures``."""
    tickets = itertools.count()
    lock = threading.Lock()
    latencies, failures = [], []

    def client() -> None:
        connection = NoDelayConnection(host, port, timeout=timeout_s)
        try:
            while next(tickets) < requests:
                start = time.perf_counter()
                try:
                    connection.request("POST", "/detect", body=body, headers={"Content-Type": content_type})
                    response = connection.getresponse()
                    answer = response.read()
                    problem = None if response.status == 200 else f"HTTP {response.status}: {answer[:200]!r}"
                except (OSError, http.client.HTTPException) as error:
                    problem = f"{type(error).__name__}: {error}"
                    connection.close()
                elapsed = time.perf_counter() - start
                with lock:
                    if problem is None:
                        latencies.append(elapsed)
                    else:
                        failures.append(problem)
                if on_done is not None:
                    on_done()
        finally:
            connection.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [pool.submit(client) for _ in range(concurrency)]:
            future.result()
    wall = time.perf_counter() - start
    return LoadResult(concurrency, np.array(latencies), len(failures), wall, failures[:5])
