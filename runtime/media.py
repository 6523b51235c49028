"""Showing and writing what the detector found: annotated images, video files, camera and network streams
(``runtime/video_source.py``), the detection lines printed for an image."""
from __future__ import annotations

import os
import socket
import sys
import time
from typing import TYPE_CHECKING

import cv2
from tqdm import tqdm

from components.atomic_io import atomic_path, remove_stale_temporaries, temporary_path
from components.drawing import draw_detections
from components.errors import ProjectError, os_error
from runtime.video_source import VideoSource

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy as np

    from components.config import StreamSettings
    from runtime.detector import Detector
    from runtime.end_to_end_models import EndToEndModel
    from runtime.postprocessing import Detections

WINDOW_NAME = "face mask detector"
FPS_SMOOTHING = 0.1        # weight of the newest frame in the exponential moving average of the FPS
FALLBACK_VIDEO_FPS = 25.0  # written to the output when the source does not report its frame rate
QUIT_KEYS = (ord("q"), ord("Q"), 27)  # q or Esc


class UsageError(ProjectError):
    """A command-line mistake; the message names the path or flag and the problem."""


def write_image_atomically(path: str, image_bgr: np.ndarray) -> None:
    """Encode ``image_bgr`` in the format of ``path``'s extension and write it through a temporary file."""
    extension = os.path.splitext(path)[1]
    try:
        ok, encoded = cv2.imencode(extension or ".jpg", image_bgr)
    except cv2.error:
        ok = False
    if not ok:
        raise UsageError(f"{path}: cannot write an image with extension {extension!r} (use .jpg or .png)")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            handle.write(encoded.tobytes())
    except OSError as error:
        raise os_error(error, path) from None


NO_WINDOW_HINT = "record with --output OUT.mp4 instead, or run serve.py and open its page in a browser"


def x_display_reachable(display: str) -> bool:
    """Whether the X server of ``display`` (``:0``, ``unix:1.0``, ``host:10.0``) accepts a connection: OpenCV's
    Qt windows abort the whole process when it does not."""
    host, _, number = display.rpartition(":")
    number = number.split(".")[0]
    if not number.isdigit():
        return False
    if host not in ("", "unix"):
        try:
            socket.create_connection((host, 6000 + int(number)), timeout=2).close()
            return True
        except OSError:
            return False
    for address in (f"\0/tmp/.X11-unix/X{number}", f"/tmp/.X11-unix/X{number}"):   # abstract socket, then file
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(2)
            try:
                connection.connect(address)
                return True
            except OSError:
                continue
    return False


def open_window(flag: str = "--show") -> None:
    """Create the display window; raises UsageError naming ``flag`` (``--show`` or ``--camera``) and what to do
    when there is no display or OpenCV has no GUI (the headless build)."""
    if sys.platform.startswith("linux") and not os.environ.get("WAYLAND_DISPLAY"):
        display = os.environ.get("DISPLAY")
        if not display:
            raise UsageError(f"{flag}: no display to show a window on (DISPLAY is not set); {NO_WINDOW_HINT}")
        if not x_display_reachable(display):
            raise UsageError(f"{flag}: cannot reach the display {display} (DISPLAY); {NO_WINDOW_HINT}")
    try:
        cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise UsageError(f"{flag}: this OpenCV has no window support (opencv-python-headless): pip uninstall -y "
                         f"opencv-python-headless && pip install opencv-python; or {NO_WINDOW_HINT}") from None


def detection_lines(detections: Detections) -> list[str]:
    """``<class> <score> <left> <top> <right> <bottom>`` per detection, integer pixels."""
    return [f"{label} {score:.3f} " + " ".join(str(int(round(value))) for value in box)
            for label, score, box in zip(detections.labels(), detections.scores, detections.boxes)]


def summary_line(detections: Detections, class_names: Sequence[str], milliseconds: float, flip_test: bool = False,
                 test_scales: Sequence[float] = (1,)) -> str:
    """``N faces: M mask, K unmask; model X ms`` (``+ flip test`` when the mirrored image was run too,
    ``+ 2x scale`` for each larger scale of the multi-scale test)."""
    labels = detections.labels()
    counts = ", ".join(f"{labels.count(name)} {name}" for name in class_names)
    return (f"{len(labels)} face{'' if len(labels) == 1 else 's'}: {counts}; model {milliseconds:.1f} ms"
            + "".join(f" (+ {name})" for name in ["flip test"] * bool(flip_test)
                      + [f"{scale}x scale" for scale in test_scales[1:]]))


def run_image(detector: Detector | EndToEndModel, image_bgr: np.ndarray, output_path: str,
              show: bool) -> tuple[Detections, float]:
    """Detect, draw and save one image. Returns (Detections, milliseconds of one detection pass).

    The timed pass follows an untimed warm-up pass, so graph tracing is not counted.
    """
    remove_stale_temporaries(os.path.dirname(os.path.abspath(output_path)))   # left by a killed run
    image_rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    detector.detect(image_rgb)
    start = time.perf_counter()
    detections = detector.detect(image_rgb)
    milliseconds = 1000.0 * (time.perf_counter() - start)
    annotated = draw_detections(image_bgr, detections)
    write_image_atomically(output_path, annotated)
    if show:
        cv2.imshow(WINDOW_NAME, annotated)
        while cv2.waitKey(100) & 0xFF not in QUIT_KEYS:
            if cv2.getWindowProperty(WINDOW_NAME, cv2.WND_PROP_VISIBLE) < 1:
                break
        cv2.destroyAllWindows()
    return detections, milliseconds


def open_video_source(source: int | str, stream: StreamSettings,
                      log: Callable[[str], None] | None = None) -> tuple[VideoSource, np.ndarray]:
    """A ``runtime.video_source.VideoSource`` for ``source`` (path, camera index or URL) with the reconnect
    settings ``stream`` (only this group of the settings), opened. Returns (source, its first frame BGR
    [H, W, 3]); raises VideoSourceError (a ProjectError) naming the source. ``log(message)`` hears of reconnects."""
    video = VideoSource(source, stream.stream_reconnect_attempts, stream.stream_reconnect_delay,
                        stream.stream_timeout, log=log)
    return video, video.open()


def run_stream(detector: Detector | EndToEndModel, capture: VideoSource | cv2.VideoCapture, first_frame: np.ndarray,
               output_path: str | None, show: bool, progress: bool = True) -> tuple[int, float, bool]:
    """Detect in ``first_frame`` and every further frame of ``capture`` (a VideoSource or cv2.VideoCapture;
    a reopened stream that comes back at another size is resized for the writer); draw boxes and a smoothed FPS
    (exponential moving average of the measured per-frame rate), write and/or show the frames.

    The output (mp4v) is written to a temporary name and renamed when the stream ends, also on q / Ctrl-C
    (not on an error). Releases ``capture``. Returns (frames processed, mean FPS over the loop, stopped by the user).
    """
    ok, frame = True, first_frame
    writer, temporary = None, None
    if output_path:
        source_fps = capture.get(cv2.CAP_PROP_FPS)
        fps = source_fps if source_fps and 1.0 <= source_fps <= 240.0 else FALLBACK_VIDEO_FPS
        os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
        temporary = temporary_path(output_path, suffix=os.path.splitext(output_path)[1])  # OpenCV picks formats by it
        height, width = frame.shape[:2]
        writer = cv2.VideoWriter(temporary, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))  # type: ignore[attr-defined]
        if not writer.isOpened():
            raise UsageError(f"{output_path}: cannot write a video here (use a .mp4 name)")
    detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))  # warm-up (graph tracing), not timed
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    frames, smoothed_fps, stopped, finished = 0, None, False, False
    bar = tqdm(total=total if total > 0 else None, unit="frame", disable=not progress)
    start = previous = time.perf_counter()
    try:
        while ok and frame is not None:
            detections = detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            now = time.perf_counter()
            instant_fps = 1.0 / max(now - previous, 1e-6)
            previous = now
            smoothed_fps = instant_fps if smoothed_fps is None else (
                FPS_SMOOTHING * instant_fps + (1.0 - FPS_SMOOTHING) * smoothed_fps)
            annotated = draw_detections(frame, detections, fps=smoothed_fps)
            if writer is not None:
                if annotated.shape[:2] != (height, width):
                    annotated = cv2.resize(annotated, (width, height))
                writer.write(annotated)
            frames += 1
            bar.update(1)
            if show:
                cv2.imshow(WINDOW_NAME, annotated)
                if cv2.waitKey(1) & 0xFF in QUIT_KEYS:
                    stopped = True
                    break
            ok, frame = capture.read()  # type: ignore[assignment]
        finished = True
    except KeyboardInterrupt:
        stopped = finished = True
    finally:
        bar.close()
        elapsed = time.perf_counter() - start
        capture.release()
        if show:
            cv2.destroyAllWindows()
        if writer is not None:
            writer.release()
            if finished and frames:
                os.replace(temporary, output_path)  # type: ignore[arg-type]   # both set when writer is
            elif os.path.exists(temporary):  # type: ignore[arg-type]
                os.remove(temporary)  # type: ignore[arg-type]
    return frames, frames / max(elapsed, 1e-6), stopped
