"""Tests of runtime/video_source.py and inference.py (cli/inference.py) on streams: a local HTTP server (a thread of the test)
serves an MJPG clip (multipart/x-mixed-replace JPEG) made from the sample images, drops the connection after
each clip and, after a set number of clips, refuses further connections."""
import http.server
import os
import socketserver
import threading

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, SAMPLE_IMAGES

from components.errors import ProjectError
from runtime.video_source import StreamLostError, VideoSource, VideoSourceError, is_stream_url, parse_source

CLIP_FRAMES = 6
FRAME_SIZE = (320, 240)   # (width, height)
BOUNDARY = b"frame"


def mjpg_clip():
    """JPEG bytes of CLIP_FRAMES frames alternating between the sample images, resized to FRAME_SIZE."""
    frames = [cv2.imencode(".jpg", cv2.resize(cv2.imread(path), FRAME_SIZE))[1].tobytes() for path in SAMPLE_IMAGES]
    return [frames[index % len(frames)] for index in range(CLIP_FRAMES)]


class MjpgServer:
    """An MJPG server on 127.0.0.1 (random port) in a thread: each of the first ``clips`` connections gets
    the clip once and is then closed (a dropped stream); later connections get 503."""

    def __init__(self, clips):
        frames, state = mjpg_clip(), {"connections": 0}
        self.state = state

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                state["connections"] += 1
                if state["connections"] > clips:
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
                self.end_headers()
                for frame in frames:
                    self.wfile.write(b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(frame)).encode() + b"\r\n\r\n" + frame + b"\r\n")
                self.wfile.flush()

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def connections(self):
        return self.state["connections"]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def read_all(source):
    frames = [source.open()]
    while True:
        ok, frame = source.read()
        if not ok:
            return frames
        frames.append(frame)


def test_source_values_are_indices_urls_or_paths(tmp_path):
    assert parse_source("0") == 0 and parse_source(" 2 ") == 2
    assert parse_source("rtsp://camera.local/live") == "rtsp://camera.local/live"
    assert parse_source("clip.mp4") == "clip.mp4"
    numbered = tmp_path / "3"
    numbered.write_bytes(b"")
    assert parse_source(str(numbered)) == str(numbered)       # an existing file named like an index stays a file
    assert is_stream_url("rtsp://host/x") and is_stream_url("HTTPS://host/x.mjpg") and is_stream_url("http://h")
    assert not is_stream_url("clip.mp4") and not is_stream_url(0) and not is_stream_url("file:///tmp/x.mp4")


def test_dropped_stream_is_reopened_then_given_up():
    messages, waits = [], []
    with MjpgServer(clips=2) as server:
        source = VideoSource(server.url, reconnect_attempts=3, reconnect_delay=0.01, timeout_s=5.0,
                             log=messages.append, sleep=waits.append)
        frames = read_all(source)
        source.release()
        connections = server.connections
    assert len(frames) == 2 * CLIP_FRAMES                      # the clip before and after the drop
    assert frames[0].shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)
    assert source.reconnects == 1 and source.gave_up
    assert connections == 2 + 3                                # the two clips, then 3 refused attempts
    assert waits == [0.01, 0.01, 0.02, 0.04]                   # back-off doubles after each failed attempt
    assert sum("reopening" in message for message in messages) == 4
    assert "giving up after 3 reconnect attempts" in messages[-1]
    lost = source.lost_error()
    assert isinstance(lost, StreamLostError) and isinstance(lost, ProjectError) and lost.exit_code == 1
    assert str(lost) == f"{server.url}: stream lost after 3 reconnect attempts"
    # the frames are the sample images (JPEG-compressed), in order
    expected = cv2.resize(cv2.imread(SAMPLE_IMAGES[1]), FRAME_SIZE).astype(np.float32)
    assert np.abs(frames[1].astype(np.float32) - expected).mean() < 8


def test_a_file_that_ends_is_not_reopened(tmp_path):
    path = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 10.0, FRAME_SIZE)
    for _ in range(4):
        writer.write(cv2.resize(cv2.imread(SAMPLE_IMAGES[0]), FRAME_SIZE))
    writer.release()
    messages = []
    source = VideoSource(path, reconnect_attempts=3, log=messages.append, sleep=lambda seconds: None)
    assert len(read_all(source)) == 4
    assert not source.gave_up and messages == []


def test_unreachable_stream_is_a_clear_error():
    with MjpgServer(clips=0) as server:
        source = VideoSource(server.url, timeout_s=5.0)
        with pytest.raises(VideoSourceError, match="cannot open the stream"):
            source.open()
    with pytest.raises(VideoSourceError, match="video not found"):
        VideoSource("no_such_clip.mp4").open()


@pytest.mark.slow
def test_inference_reads_an_mjpg_url_and_reports_the_lost_stream(tiny_model, tmp_path, run_script):
    output = tmp_path / "annotated.mp4"
    with MjpgServer(clips=2) as server:
        run = run_script([os.path.join(REPO_ROOT, "inference.py"), "--model_path", tiny_model, "--video",
                          server.url, "--output", str(output), "--stream_reconnect_attempts", "2",
                          "--stream_reconnect_delay", "0.05", "--stream_timeout", "5"], cwd=str(tmp_path))
    assert run.returncode == 1, run.stderr
    assert run.stdout.splitlines()[0].startswith(f"{2 * CLIP_FRAMES} frames processed")
    assert "reopening in 0.1 s (attempt 2/2)" in run.stderr and "stream reopened" in run.stderr
    assert run.stderr.strip().splitlines()[-1] == f"error: {server.url}: stream lost after 2 reconnect attempts"
    capture = cv2.VideoCapture(str(output))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 2 * CLIP_FRAMES   # the frames so far are written
    capture.release()
