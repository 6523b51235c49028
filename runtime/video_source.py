"""Video sources for inference: files, camera indices and network streams (rtsp://, http(s)://, ...), read
through OpenCV, with bounded reconnects for live sources.

A *live* source (a camera index or a URL) that stops giving frames is released and reopened up to
``reconnect_attempts`` times, waiting ``reconnect_delay`` seconds before the first attempt and twice as long
before each further one (at most :data:`MAX_RECONNECT_DELAY_S`); every attempt is reported through ``log``.
A file that stops giving frames has ended: no reconnect.
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import cv2

from components.errors import ProjectError

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    import numpy as np

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
MAX_RECONNECT_DELAY_S = 8.0


class VideoSourceError(ProjectError):
    """A source that cannot be opened or gives no frame; the message names it and the problem."""


class StreamLostError(ProjectError):
    """A live source lost for good after its reconnect attempts (the frames so far were processed)."""

    exit_code = 1


def is_stream_url(source: int | str) -> bool:
    """Whether ``source`` is a network stream URL (``rtsp://...``, ``http://...``, see :data:`STREAM_SCHEMES`)."""
    if not isinstance(source, str) or "://" not in source:
        return False
    return source.split("://", 1)[0].lower() in STREAM_SCHEMES


def parse_source(text: str) -> int | str:
    """A ``--video`` / ``--camera`` value -> a camera index (int) for a whole number that is not an existing
    file, else the string itself (a URL or a file path)."""
    text = text.strip()
    if text.isdigit() and not os.path.exists(text):
        return int(text)
    return text


def describe_source(source: int | str) -> str:
    """How messages name a source: ``camera 0``, the URL or the path."""
    return f"camera {source}" if isinstance(source, int) else source


def _capture(source, timeout_s):
    """cv2.VideoCapture of ``source``; URLs through FFmpeg with open / read timeouts of ``timeout_s``."""
    if is_stream_url(source):
        milliseconds = int(timeout_s * 1000)
        return cv2.VideoCapture(source, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, milliseconds,
                                                         cv2.CAP_PROP_READ_TIMEOUT_MSEC, milliseconds])
    return cv2.VideoCapture(source)


class VideoSource:
    """Frames of a file, camera or stream: ``read()`` -> (ok, frame BGR [H, W, 3]), reconnecting live sources.

    ``gave_up`` becomes True when a live source was lost for good (all reconnect attempts failed);
    ``reconnects`` counts the successful reopenings.
    """

    def __init__(self, source: int | str, reconnect_attempts: int = 5, reconnect_delay: float = 0.5,
                 timeout_s: float = 10.0, log: Callable[[str], None] | None = None,
                 sleep: Callable[[float], Any] = time.sleep) -> None:
        self.source = source
        self.name = describe_source(source)
        self.live = isinstance(source, int) or is_stream_url(source)
        self.reconnect_attempts = int(reconnect_attempts)
        self.reconnect_delay = float(reconnect_delay)
        self.timeout_s = float(timeout_s)
        self.log = log or (lambda message: None)
        self.sleep = sleep
        self.capture = None
        self.gave_up = False
        self.reconnects = 0

    def _open_once(self):
        """(capture, first frame) or (None, None)."""
        capture = _capture(self.source, self.timeout_s)
        ok, frame = capture.read() if capture.isOpened() else (False, None)
        if not ok or frame is None:
            capture.release()
            return None, None
        return capture, frame

    def open(self) -> np.ndarray:
        """Open the source; returns its first frame. Raises VideoSourceError naming the source."""
        if not self.live and not os.path.isfile(self.source):
            raise VideoSourceError(f"{self.name}: video not found")
        self.capture, frame = self._open_once()
        if self.capture is None:
            if isinstance(self.source, int):
                raise VideoSourceError(f"{self.name}: cannot open the camera or read a frame from it")
            raise VideoSourceError(f"{self.name}: cannot open the stream or read a frame from it" if self.live
                                   else f"{self.name}: not a readable video")
        return frame

    def read(self) -> tuple[bool, np.ndarray | None]:
        """The next frame: (True, frame) or (False, None) at the end of a file or once a live source is lost
        for good (``gave_up``)."""
        if self.capture is None:
            return False, None
        ok, frame = self.capture.read()
        if ok and frame is not None:
            return True, frame
        if not self.live:
            return False, None
        return self._reconnect()

    def _reconnect(self):
        self.capture.release()
        self.capture = None
        delay = self.reconnect_delay
        for attempt in range(1, self.reconnect_attempts + 1):
            self.log(f"{self.name}: stream dropped; reopening in {delay:.1f} s "
                     f"(attempt {attempt}/{self.reconnect_attempts})")
            self.sleep(delay)
            self.capture, frame = self._open_once()
            if self.capture is not None:
                self.reconnects += 1
                self.log(f"{self.name}: stream reopened")
                return True, frame
            delay = min(2.0 * delay, MAX_RECONNECT_DELAY_S)
        self.gave_up = True
        self.log(f"{self.name}: stream lost; giving up after {self.reconnect_attempts} reconnect attempts")
        return False, None

    def lost_error(self) -> StreamLostError:
        """The StreamLostError to raise once ``gave_up``."""
        return StreamLostError(f"{self.name}: stream lost after {self.reconnect_attempts} reconnect attempts")

    def get(self, prop: int) -> float:
        """``cv2.VideoCapture.get`` of the open capture (0.0 when closed)."""
        return self.capture.get(prop) if self.capture is not None else 0.0

    def release(self) -> None:
        """Close the capture (idempotent)."""
        if self.capture is not None:
            self.capture.release()
            self.capture = None
