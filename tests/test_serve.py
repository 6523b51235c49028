"""The REST API of serve.py (serving/app.py): answers match the Detector, every bad input gets a JSON 4xx
(never a 500), the body and image size bounds, the bounded worker pool (503) and the page's static files.

One server with the shipped model runs for the whole module in a background thread on a free port.
"""
import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, SAMPLE_IMAGES

SAMPLES = SAMPLE_IMAGES[::-1]   # the crowd first
MAX_REQUEST_MB = 0.5   # above the samples (at most 190 kB), small enough to send in a test
MAX_REQUEST_BYTES = int(MAX_REQUEST_MB * 2 ** 20)


@pytest.fixture(scope="module")
def served():
    """(server, detector) of the shipped model, served for this module."""
    from components.config import DEFAULT_SETTINGS, ServeSettings
    from serving.app import create_app
    from serving.server import BackgroundServer, load_detector
    detector = load_detector(os.path.join(REPO_ROOT, "checkpoints", "mask_detector.keras"), DEFAULT_SETTINGS)
    serve = ServeSettings(serve_max_request_mb=MAX_REQUEST_MB, serve_max_image_pixels=20_000_000)
    assert serve.max_request_bytes == MAX_REQUEST_BYTES
    with BackgroundServer(create_app(detector, serve)) as server:
        yield server, detector


def request(server, method, path, body=None, headers=None):
    """(status, parsed JSON body, response headers) of one request to ``server``."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None, dict(response.getheaders())
    finally:
        connection.close()


def multipart(fields, boundary="testboundary1234"):
    """A multipart/form-data body and its Content-Type from (name, filename or None, content type, bytes)."""
    parts = []
    for name, filename, content_type, data in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        parts.append(head.encode() + b"\r\n" + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def read_sample(path):
    with open(path, "rb") as handle:
        return handle.read()


def png_header_only(width, height):
    """A small PNG whose header declares ``width`` x ``height`` (a 'decompression bomb' shape)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_health_names_the_loaded_model(served):
    server, detector = served
    status, body, _ = request(server, "GET", "/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["format"] == detector.format == "keras"
    assert body["labels"] == list(detector.settings.model.labels_list[1:])
    assert body["input_size"] == list(detector.input_size)
    assert body["pending"] == 0 and body["max_request_bytes"] == MAX_REQUEST_BYTES


@pytest.mark.parametrize("sample", SAMPLES, ids=["handshaking", "test_00002330"])
def test_detect_answers_what_the_detector_finds(served, sample):
    server, detector = served
    data = read_sample(sample)
    image_rgb = cv2.cvtColor(cv2.imread(sample), cv2.COLOR_BGR2RGB)
    expected = detector.detect(image_rgb)
    assert len(expected) > 0
    raw_status, raw, _ = request(server, "POST", "/detect", data, {"Content-Type": "image/jpeg"})
    body, content_type = multipart([("image", "photo.jpg", "image/jpeg", data)])
    form_status, form, _ = request(server, "POST", "/detect", body, {"Content-Type": content_type})
    assert raw_status == form_status == 200
    assert raw["faces"] == form["faces"]
    assert raw["image"] == {"width": image_rgb.shape[1], "height": image_rgb.shape[0]}
    order = np.argsort(-expected.scores, kind="stable")
    assert [face["label"] for face in raw["faces"]] == [expected.labels()[i] for i in order]
    boxes = np.array([[face["box"][key] for key in ("left", "top", "right", "bottom")] for face in raw["faces"]])
    np.testing.assert_allclose(boxes, expected.boxes[order], atol=0.06)
    np.testing.assert_allclose([face["score"] for face in raw["faces"]], expected.scores[order], atol=6e-5)
    for name in detector.settings.model.labels_list[1:]:
        assert raw["counts"][name] == expected.labels().count(name)


def test_score_threshold_parameter_keeps_only_confident_faces(served):
    server, _ = served
    data = read_sample(SAMPLES[1])
    _, everything, _ = request(server, "POST", "/detect", data, {"Content-Type": "image/jpeg"})
    threshold = float(np.median([face["score"] for face in everything["faces"]]))
    status, confident, _ = request(server, "POST", f"/detect?score_threshold={threshold}", data,
                                   {"Content-Type": "image/jpeg"})
    assert status == 200
    assert 0 < len(confident["faces"]) < len(everything["faces"])
    assert all(face["score"] >= threshold - 1e-4 for face in confident["faces"])


def _bad_inputs():
    jpeg = read_sample(SAMPLES[0])
    text = b"just some text, not an image\n" * 10
    missing_file, missing_file_type = multipart([("note", None, None, b"hello")])
    text_file, text_file_type = multipart([("image", "notes.txt", "text/plain", text)])
    not_image_file, not_image_file_type = multipart([("image", "photo.jpg", "image/jpeg", text)])
    return [
        ("empty body", b"", "image/jpeg", 400),
        ("random bytes", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
         "application/octet-stream", 400),
        ("text sent as png", text, "image/png", 400),
        ("truncated jpeg", jpeg[:len(jpeg) // 2], "image/jpeg", 400),
        ("multipart without a file", missing_file, missing_file_type, 400),
        ("multipart file of text", not_image_file, not_image_file_type, 400),
        ("multipart without its boundary", text_file, "multipart/form-data", 400),
        ("json", b'{"image": "x"}', "application/json", 415),
        ("plain text", text, "text/plain", 415),
        ("form-urlencoded", b"image=abc", "application/x-www-form-urlencoded", 415),
        ("multipart text/plain part", text_file, text_file_type, 415),
        ("png declaring 100000x100000 pixels", png_header_only(100_000, 100_000), "image/png", 413),
        ("body over the limit", b"\xff" * (MAX_REQUEST_BYTES + 1), "image/jpeg", 413),
    ]


@pytest.mark.parametrize("name, body, content_type, expected_status", _bad_inputs(),
                         ids=[case[0] for case in _bad_inputs()])
def test_bad_input_gets_a_json_4xx(served, name, body, content_type, expected_status):
    server, _ = served
    status, answer, headers = request(server, "POST", "/detect", body, {"Content-Type": content_type})
    assert status == expected_status, answer
    assert answer["status"] == status
    assert isinstance(answer["error"], str) and answer["error"] and "\n" not in answer["error"]
    assert headers["content-type"].startswith("application/json")


def test_corrupted_images_never_get_a_500(served):
    server, _ = served
    original = np.frombuffer(read_sample(SAMPLES[0]), np.uint8)
    rng = np.random.default_rng(13)
    for _ in range(8):
        corrupted = original.copy()
        where = rng.integers(0, len(corrupted), 40)
        corrupted[where] = rng.integers(0, 256, len(where), dtype=np.uint8)
        status, answer, _ = request(server, "POST", "/detect", corrupted.tobytes(), {"Content-Type": "image/jpeg"})
        assert status in (200, 400), answer
    assert request(server, "GET", "/health")[1]["pending"] == 0


@pytest.mark.parametrize("query", ["score_threshold=2", "score_threshold=abc", "score_threshold=nan"])
def test_bad_parameter_gets_400(served, query):
    server, _ = served
    status, answer, _ = request(server, "POST", f"/detect?{query}", read_sample(SAMPLES[0]),
                                {"Content-Type": "image/jpeg"})
    assert status == 400 and "score_threshold" in answer["error"]


def test_unknown_path_and_method_get_json_errors(served):
    server, _ = served
    assert request(server, "GET", "/nothing")[:2] == (404, {"error": "Not Found", "status": 404})
    status, answer, _ = request(server, "GET", "/detect")
    assert status == 405 and answer["status"] == 405


def raw_exchange(server, head, body_parts):
    """Send ``head`` and then ``body_parts`` on a bare socket and return (status, JSON body) of the answer;
    sending stops early if the server has already answered and closed."""
    with socket.create_connection((server.host, server.port), timeout=30) as connection:
        connection.sendall(head)
        try:
            for part in body_parts:
                connection.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    head_text, _, body = response.partition(b"\r\n\r\n")
    status = int(head_text.split()[1])
    if b"transfer-encoding: chunked" in head_text.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[:int(size, 16)]
    return status, json.loads(body)


def test_declared_oversized_body_is_refused_before_it_is_sent(served):
    server, _ = served
    head = (f"POST /detect HTTP/1.1\r\nHost: {server.host}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {50 * 2 ** 30}\r\nConnection: close\r\n\r\n").encode()
    start = time.monotonic()
    status, answer = raw_exchange(server, head, [])   # no byte of the 50 GiB body is ever sent
    assert status == 413 and "too large" in answer["error"]
    assert time.monotonic() - start < 10


def test_streamed_body_is_cut_off_at_the_limit(served):
    server, _ = served
    head = (f"POST /detect HTTP/1.1\r\nHost: {server.host}\r\nContent-Type: image/jpeg\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    sizes = [65536] * (MAX_REQUEST_BYTES // 65536) + [MAX_REQUEST_BYTES % 65536 + 1]   # one byte too many
    parts = [b"%x\r\n" % size + b"\xff" * size + b"\r\n" for size in sizes]
    # no terminating chunk: the server must answer once the bound is passed, not wait for the end
    status, answer = raw_exchange(server, head, parts)
    assert status == 413 and "too large" in answer["error"]


class BlockingDetector:
    """Stands in for a Detector whose inference takes until ``release`` is set."""

    def __init__(self):
        from components.config import DEFAULT_SETTINGS
        self.settings = DEFAULT_SETTINGS
        self.release = threading.Event()

    def detect(self, image_rgb, score_threshold=None):
        from runtime.postprocessing import Detections
        self.release.wait(timeout=30)
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                          list(self.settings.model.labels_list))


def test_burst_beyond_the_pending_bound_gets_503():
    from components.config import ServeSettings
    from serving.app import create_app
    from serving.server import BackgroundServer
    detector = BlockingDetector()
    app = create_app(detector, ServeSettings(serve_workers=1, serve_max_pending=2))
    image = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    with BackgroundServer(app) as server:
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(
            request(server, "POST", "/detect", image, {"Content-Type": "image/png"}))) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while app.state.admission.pending < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        status, answer, headers = request(server, "POST", "/detect", image, {"Content-Type": "image/png"})
        assert request(server, "GET", "/health")[1]["pending"] == 2
        detector.release.set()
        for thread in threads:
            thread.join(timeout=30)
    assert status == 503 and answer["status"] == 503 and "busy" in answer["error"]
    assert headers["retry-after"] == "1"
    assert [item[0] for item in answers] == [200, 200]
    assert answers[0][1]["faces"] == [] and answers[0][1]["counts"] == {"mask": 0, "unmask": 0}


def test_page_and_its_files_are_served_without_outside_links(served):
    server, _ = served
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    texts = {}
    for path in ("/", "/static/demo.js", "/static/demo.css", "/static/browser_model.js"):
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200, path
        texts[path] = response.read().decode()
    connection.close()
    # relative links: the same index.html works from serve.py --static's folder
    assert 'src="static/demo.js"' in texts["/"] and 'href="static/demo.css"' in texts["/"]
    for path, text in texts.items():
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path


def run_serve(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "serve.py"), *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_serve_refuses_a_missing_model_and_a_taken_port(tmp_path):
    missing = run_serve("--model_path", str(tmp_path / "nothing.keras"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: {tmp_path / 'nothing.keras'}: model not found"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        busy = run_serve("--port", str(port))
    assert busy.returncode == 2
    assert busy.stderr.strip().startswith(f"error: --host/--port: cannot listen on 127.0.0.1:{port}")
    bad_port = run_serve("--port", "70000")
    assert bad_port.returncode == 2 and "--port" in bad_port.stderr


def test_serve_flags_set_the_config_keys_of_the_settings():
    from cli.serve import apply_serve_flags, build_parser
    from components.config import DEFAULT_SETTINGS, ServeSettings, config_from_args
    parser = build_parser()
    defaults = parser.parse_args([])
    assert apply_serve_flags(defaults, config_from_args(defaults)).serve == ServeSettings() == DEFAULT_SETTINGS.serve
    assert ServeSettings().max_pending == DEFAULT_SETTINGS.serve.serve_max_pending   # the default admits >= 1 per worker
    given = parser.parse_args(["--workers", "3", "--max_pending", "2", "--max_request_mb", "0.5",
                               "--max_image_pixels", "1000"])
    serve = apply_serve_flags(given, config_from_args(given)).serve
    assert serve == ServeSettings(serve_max_request_mb=0.5, serve_max_image_pixels=1000, serve_workers=3,
                                  serve_max_pending=2)
    # the bounds the app takes: whole bytes, and at least one admitted request per worker
    assert (serve.max_request_bytes, serve.max_pending) == (512 * 1024, 3)


@pytest.mark.parametrize("flag, value", [("--workers", "0"), ("--max_pending", "x"), ("--max_request_mb", "-1")])
def test_bad_serve_flag_is_one_line_naming_it(flag, value, capsys):
    from cli.serve import main
    status = main([flag, value])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and flag in err


def test_load_generator_counts_answers_and_failures():
    from benchmarks.load import run_load
    from components.config import ServeSettings
    from serving.app import create_app
    from serving.server import BackgroundServer
    detector = BlockingDetector()
    detector.release.set()
    image = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    with BackgroundServer(create_app(detector, ServeSettings())) as server:
        answered = run_load(server.host, server.port, image, "image/png", concurrency=3, requests=9)
        refused = run_load(server.host, server.port, image, "text/plain", concurrency=2, requests=4)
    assert (answered.requests, answered.failed, len(answered.latencies)) == (9, 0, 9)
    summary = answered.summary()
    assert summary["requests/s"] > 0 and 0 < summary["p50 ms"] <= summary["p99 ms"]
    assert (refused.requests, refused.failed) == (4, 4) and refused.failures[0].startswith("HTTP 415")
