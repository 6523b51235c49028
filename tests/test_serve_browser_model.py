"""The demo page's in-browser mode (``serving/static/browser_model.js``, ``serving/web_model.py``): the decoded ONNX
model run by onnxruntime-web in headless Chromium (Debian's ``chromium`` through Playwright, as
``tests/test_serve_browser.py``), on the two sample images and on a fake webcam playing them.

The page's boxes must match what the server's ``POST /detect`` answers for the same picture (IoU >= 0.9, same
labels), the time per frame must be shown, and no request the page makes in this mode may carry an image (no
POST, no body, nothing but GETs of the page, the runtime and the model). The static export (``serve.py --static``)
must work under ``python -m http.server`` with no server of ours. With UPDATE_ASSETS=1 in the environment the
camera test refreshes ``assets/serve_browser_mode.png`` (shown in the README); a plain run leaves it alone.
"""
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import REPO_ROOT
from test_serve_browser import (
    CHROMIUM,
    SAMPLES,
    assert_same_faces,
    chromium_context,
    face_boxes,
    page_state,
    post_detect,
    webcam_clip,
)

MIN_IOU = 0.9                 # page box against the API's box for the same pixels
MAX_BODY_BYTES = 256          # the largest request body the page may send in in-browser mode (it sends none)
CAMERA_TIMEOUT_S = 90
SCREENSHOT = os.path.join(REPO_ROOT, "assets", "serve_browser_mode.png")   # refreshed only with UPDATE_ASSETS=1
SCREENSHOT_VIEWPORT = {"width": 1100, "height": 720}
SCREENSHOT_MAX_BYTES = 300_000   # a 256-colour PNG

needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not found: install Debian's "
                                    "chromium package (apt-get install -y chromium; .ci/run does)")


def ort_missing():
    from serving.web_model import WebModelError, ort_dir
    try:
        ort_dir()
    except WebModelError as error:
        return str(error)
    return ""


# ---- without a browser: the routes and the CLI's refusals -------------------------------------------------------

def stub_detector():
    """Enough of a Detector for create_app's routes other than /detect (no TensorFlow)."""
    from components.config import DEFAULT_SETTINGS
    return SimpleNamespace(settings=DEFAULT_SETTINGS.replace(labels_list=["background", "mask", "unmask"]),
                           model_path="stub.keras", format="keras")


def http_get(server, path):
    import http.client
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("content-type"), response.read()
    finally:
        connection.close()


def test_server_without_a_browser_model_says_so_and_serves_only_the_runtimes_files():
    from serving.app import create_app
    from serving.server import BackgroundServer
    with BackgroundServer(create_app(stub_detector())) as server:
        status, _, body = http_get(server, "/model/model.json")
        assert status == 404 and "no model for the page's in-browser mode" in json.loads(body)["error"]
        assert http_get(server, "/model/model.onnx")[0] == 404
        assert json.loads(http_get(server, "/health")[2])["browser_model"] is False
        for path in ("/ort/..%2Fpackage.json", "/ort/ort.min.js", "/ort/%2E%2E"):
            assert http_get(server, path)[0] == 404, path
        if not ort_missing():
            status, content_type, _ = http_get(server, "/ort/ort.wasm.min.mjs")
            assert status == 200 and content_type.startswith("text/javascript")
            status, content_type, _ = http_get(server, "/ort/ort-wasm-simd-threaded.wasm")
            assert status == 200 and content_type == "application/wasm"


def test_not_a_decoded_onnx_is_refused_naming_the_file(tmp_path):
    from serving.web_model import WebModelError, onnx_input_size
    path = tmp_path / "notes.onnx"
    path.write_text("not a model\n")
    with pytest.raises(WebModelError, match=re.escape(str(path)) + ": not a loadable ONNX model"):
        onnx_input_size(str(path))


@pytest.mark.parametrize("flags, message", [
    (["--browser_model", "none"], "--static needs a browser model: drop --browser_model none"),
    (["--browser_model", "missing_decoded.onnx"], "--browser_model: missing_decoded.onnx: no such file"),
])
def test_static_export_refusals_are_one_line(tmp_path, capsys, flags, message):
    if ort_missing():
        pytest.skip(ort_missing())
    from cli.serve import main
    assert main(["--static", str(tmp_path / "web"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {message}"
    assert not (tmp_path / "web").exists()


# ---- in Chromium ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_and_detector(tmp_path_factory):
    """(BrowserModel exported from the shipped model, its Detector)."""
    if ort_missing():
        pytest.skip(ort_missing())
    from components.config import DEFAULT_SETTINGS
    from serving.server import load_detector
    from serving.web_model import browser_model
    detector = load_detector(os.path.join(REPO_ROOT, "checkpoints", "mask_detector.keras"), DEFAULT_SETTINGS)
    model = browser_model(detector.model_path, detector.settings, cache_dir=str(tmp_path_factory.mktemp("web_model")),
                          log=lambda _line: None)
    return model, detector


@pytest.fixture(scope="module")
def served(model_and_detector):
    from serving.app import create_app
    from serving.server import BackgroundServer
    model, detector = model_and_detector
    with BackgroundServer(create_app(detector, browser_model=model)) as server:
        yield server


@pytest.fixture(scope="module")
def clip(tmp_path_factory, served):
    """(path of a .y4m clip of the two samples, the API's answer for each sample as the webcam shows it, sent as
    PNG: the server sees the very pixels the page reads from the video)."""
    return webcam_clip(tmp_path_factory.mktemp("clip"), served, ".png")


@pytest.fixture(scope="module")
def browser(tmp_path_factory, clip):
    """A Chromium context whose fake webcam plays the clip (``chromium_context``: ``browser.requests`` records every
    request the pages make)."""
    yield from chromium_context(tmp_path_factory.mktemp("chromium-profile"), clip[0], SCREENSHOT_VIEWPORT)


def wait_for_update(page, source, after, timeout_s=60):
    page.wait_for_function(
        "([source, after]) => { const d = document.getElementById('counts').dataset;"
        " return d.source === source && Number(d.updates) > after; }", arg=[source, after],
        timeout=timeout_s * 1000)
    return page_state(page)


def open_in_browser_mode(browser, url):
    """A page at ``url`` switched to in-browser mode (by its radio button) with the model loaded."""
    page = browser.new_page()
    page.goto(url)
    page.wait_for_function("() => document.getElementById('model').textContent !== 'connecting…'", timeout=30000)
    if not page.is_checked("input[name=mode][value=browser]"):
        page.check("input[name=mode][value=browser]")
    page.wait_for_function("() => document.getElementById('model').textContent.includes('in this browser')"
                           " && document.getElementById('message').textContent === ''", timeout=60000)
    return page


def save_small_png(png_bytes, path):
    """A screenshot (PNG bytes) written to ``path`` as a 256-colour PNG (a third of the size, for assets/)."""
    import io

    from PIL import Image
    with Image.open(io.BytesIO(png_bytes)) as image:
        image.convert("RGB").quantize(256).save(path, "PNG", optimize=True)


def assert_no_image_was_sent(requests, origin):
    """Only GETs without a body, to ``origin`` (or the page's own blob: / data: URLs), none to /detect."""
    assert requests
    for method, url, body_bytes in requests:
        assert method == "GET" and body_bytes <= MAX_BODY_BYTES, (method, url, body_bytes)
        assert url.startswith((origin + "/", "blob:", "data:")), url
        assert "/detect" not in url, url


def assert_frame_time_shown(state):
    assert re.fullmatch(r"\d+ ms", state["frameTime"]), state["frameTime"]
    assert float(state["counts"]["frameMs"]) > 0 and float(state["counts"]["modelMs"]) > 0


@pytest.mark.slow
@needs_chromium
def test_letterbox_in_javascript_matches_preprocess_images(served, browser):
    """letterboxInput (browser_model.js) on raw pixels against runtime.preprocessing.preprocess_images."""
    from runtime.preprocessing import preprocess_images
    page = browser.new_page()
    page.goto(served.url + "/")
    rng = np.random.default_rng(3)
    for height, width in ((37, 91), (300, 200), (240, 320), (301, 403)):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        rgba = np.concatenate([image, np.full((height, width, 1), 255, np.uint8)], axis=-1)
        got = page.evaluate("""async ([text, width, height, size]) => {   // base64 in and out: fast to pass
            const { letterboxInput } = await import("/static/browser_model.js");
            const rgba = Uint8ClampedArray.from(atob(text), (char) => char.charCodeAt(0));
            const bytes = new Uint8Array(letterboxInput(rgba, width, height, size).data.buffer);
            let binary = "";
            for (let start = 0; start < bytes.length; start += 8192) {
                binary += String.fromCharCode(...bytes.subarray(start, start + 8192));
            }
            return btoa(binary); }""", [base64.b64encode(rgba.tobytes()).decode(), width, height, [240, 320]])
        expected = preprocess_images([image], (240, 320))[0].transpose(2, 0, 1)
        got = np.frombuffer(base64.b64decode(got), np.float32).reshape(expected.shape)
        assert np.abs(got - expected).max() < 1e-4, (height, width)
    page.close()


@pytest.mark.slow
@needs_chromium
def test_in_browser_boxes_match_the_servers_and_no_image_is_sent(served, browser, tmp_path):
    from PIL import Image
    rotated = str(tmp_path / "exif_rotated.jpg")   # Exif orientation 6: the server takes the pixels as stored
    with Image.open(SAMPLES[1]) as image:
        exif = Image.Exif()
        exif[0x0112] = 6
        image.save(rotated, exif=exif, quality=92)
    page = open_in_browser_mode(browser, served.url + "/?mode=browser")
    browser.requests.clear()   # from here on: what the page asks for while it detects
    updates = int(page_state(page)["counts"]["updates"])
    for sample in [*SAMPLES, rotated]:
        page.set_input_files("#file-input", sample)
        state = wait_for_update(page, "image", updates)
        updates = int(state["counts"]["updates"])
        with open(sample, "rb") as handle:
            expected = post_detect(served, handle.read(), "image/jpeg")
        assert state["counts"]["mode"] == "browser"
        assert (int(state["counts"]["width"]), int(state["counts"]["height"])) == (
            expected["image"]["width"], expected["image"]["height"])
        assert_same_faces(state["faces"], face_boxes(expected), MIN_IOU)
        assert_frame_time_shown(state)
    assert_no_image_was_sent(browser.requests, served.url)
    # the switch back: the same image goes to the server
    page.check("input[name=mode][value=server]")
    state = wait_for_update(page, "image", updates)
    assert state["counts"]["mode"] == "server"
    assert state["faces"] == [[label, box] for label, box in face_boxes(expected)]
    assert ("POST", served.url + "/detect") in [(method, url) for method, url, _ in browser.requests]
    page.close()


@pytest.mark.slow
@needs_chromium
def test_in_browser_camera_shows_the_faces_of_each_clip_frame(served, clip, browser, tmp_path):
    _, expected = clip
    expected_counts = [(int(result["counts"]["mask"]), int(result["counts"]["unmask"])) for result in expected]
    assert expected_counts[0] != expected_counts[1], "the two samples must differ to tell the frames apart"
    page = open_in_browser_mode(browser, served.url + "/")
    browser.requests.clear()
    page.click("#start-camera")
    screenshot = str(tmp_path / "serve_browser_mode.png")
    seen, state, deadline = {}, None, time.monotonic() + CAMERA_TIMEOUT_S
    while len(seen) < 2 and time.monotonic() < deadline:
        state = wait_for_update(page, "camera", int(state["counts"]["updates"]) if state else 0)
        counts = (int(state["counts"]["mask"]), int(state["counts"]["unmask"]))
        assert counts in expected_counts, f"page shows {counts}, the clip's frames give {expected_counts}"
        seen.setdefault(counts, state)
        if counts == expected_counts[1] and not os.path.exists(screenshot):
            save_small_png(page.screenshot(), screenshot)
    assert set(seen) == set(expected_counts), f"within {CAMERA_TIMEOUT_S} s the page showed only {list(seen)}"
    for counts, result in zip(expected_counts, expected):
        assert seen[counts]["counts"]["mode"] == "browser"
        assert_same_faces(seen[counts]["faces"], face_boxes(result), MIN_IOU)
        assert_frame_time_shown(seen[counts])
    assert float(page_state(page)["fps"]) > 0
    page.click("#stop-camera")
    page.close()
    assert [request for request in browser.requests if not request[1].startswith("blob:")] == []
    assert 0 < os.path.getsize(screenshot) < SCREENSHOT_MAX_BYTES
    if os.environ.get("UPDATE_ASSETS") == "1":
        shutil.copyfile(screenshot, SCREENSHOT + ".tmp")
        os.replace(SCREENSHOT + ".tmp", SCREENSHOT)


@pytest.fixture
def static_site(tmp_path, model_and_detector):
    """(URL, folder) of ``serve.py --static`` output served by ``python -m http.server``."""
    from cli.serve import main
    model, _ = model_and_detector
    folder = tmp_path / "web"
    assert main(["--static", str(folder), "--browser_model", model.onnx_path]) == 0
    process = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                                "--directory", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    try:
        line = process.stdout.readline()   # "Serving HTTP on 127.0.0.1 port N (http://127.0.0.1:N/) ..."
        port = int(re.search(r"port (\d+)", line).group(1))
        yield f"http://127.0.0.1:{port}", folder
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.slow
@needs_chromium
def test_static_export_runs_under_python_http_server(static_site, served, browser):
    url, folder = static_site
    assert sorted(os.listdir(folder)) == ["index.html", "model", "ort", "static"]
    assert json.loads((folder / "model" / "model.json").read_text())["server"] is False
    browser.requests.clear()
    page = open_in_browser_mode(browser, url + "/")
    assert page.is_disabled("input[name=mode][value=server]")
    page.set_input_files("#file-input", SAMPLES[1])
    state = wait_for_update(page, "image", 0)
    with open(SAMPLES[1], "rb") as handle:
        expected = post_detect(served, handle.read(), "image/jpeg")
    assert_same_faces(state["faces"], face_boxes(expected), MIN_IOU)
    assert_frame_time_shown(state)
    page.close()
    assert_no_image_was_sent(browser.requests, url)
