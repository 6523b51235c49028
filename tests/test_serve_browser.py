"""The demo page of serve.py in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright
with the system browser) whose fake webcam plays a .y4m clip made here from the two sample images.

The page must show, for the camera and for uploaded / dropped images, the faces and counts that the
server's ``POST /detect`` answers for the same picture; the page may load nothing but the server's own files.
The camera test takes a screenshot in its tmp_path; with UPDATE_ASSETS=1 in the environment it also refreshes
assets/serve_demo.png (shown in the README), which a plain run leaves alone.
"""
import http.client
import json
import os
import shutil
import time

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, SAMPLE_IMAGES

CHROMIUM = "/usr/bin/chromium"
SAMPLES = SAMPLE_IMAGES[::-1]   # the crowd first
CLIP_SIZE = (768, 1024)        # (height, width) of the fake webcam: each sample padded to it, not scaled
CLIP_FPS = 2
FRAMES_PER_SAMPLE = 4          # each sample stays 2 s on the fake webcam, then the clip loops
CAMERA_TIMEOUT_S = 60
SCREENSHOT = os.path.join(REPO_ROOT, "assets", "serve_demo.png")   # refreshed only with UPDATE_ASSETS=1
MIN_IOU = 0.7                  # page box against the API's box for the same frame (JPEG encoders differ)

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} not found: install Debian's chromium package "
                                       "(apt-get install -y chromium; .ci/run does)")


def write_y4m(path, frames_rgb, fps):
    """Write uint8 RGB frames [H, W, 3] (even H and W) as a YUV4MPEG2 clip with 4:2:0 (I420) planes."""
    height, width = frames_rgb[0].shape[:2]
    with open(path, "wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames_rgb:
            planes = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2YUV_I420)   # [H * 3 / 2, W]: Y, U, V
            handle.write(b"FRAME\n")
            handle.write(np.ascontiguousarray(planes, np.uint8).tobytes())


def clip_frame(path):
    """A sample image padded (grey, bottom / right) to CLIP_SIZE, as uint8 RGB."""
    image = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    height, width = image.shape[:2]
    return cv2.copyMakeBorder(image, 0, CLIP_SIZE[0] - height, 0, CLIP_SIZE[1] - width, cv2.BORDER_CONSTANT,
                              value=(127, 127, 127))


def as_seen_through_i420(frame_rgb):
    """The frame after the clip's 4:2:0 round trip, i.e. what the fake webcam shows."""
    return cv2.cvtColor(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2YUV_I420), cv2.COLOR_YUV2RGB_I420)


def post_detect(server, data, content_type):
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        connection.request("POST", "/detect", body=data, headers={"Content-Type": content_type})
        response = connection.getresponse()
        assert response.status == 200
        return json.loads(response.read())
    finally:
        connection.close()


def iou(a, b):
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def face_boxes(result):
    return [(face["label"], [face["box"][key] for key in ("left", "top", "right", "bottom")])
            for face in result["faces"]]


def assert_same_faces(page_faces, expected_faces, min_iou):
    """Each expected (label, box) has a page face of that label whose box overlaps it by ``min_iou``."""
    assert len(page_faces) == len(expected_faces)
    unmatched = list(page_faces)
    for label, box in expected_faces:
        best = max(unmatched, key=lambda face: iou(face[1], box) if face[0] == label else -1.0)
        assert best[0] == label and iou(best[1], box) >= min_iou, (label, box, page_faces)
        unmatched.remove(best)


@pytest.fixture(scope="module")
def served():
    from components.config import DEFAULT_SETTINGS
    from serving.app import create_app
    from serving.server import BackgroundServer, load_detector
    detector = load_detector(os.path.join(REPO_ROOT, "checkpoints", "mask_detector.keras"), DEFAULT_SETTINGS)
    with BackgroundServer(create_app(detector)) as server:
        yield server


def webcam_clip(folder, served, image_format=".jpg"):
    """(path of a .y4m clip of the samples in ``folder``, the API's answer for each sample as the webcam shows it,
    sent as ``image_format``: ".jpg" (quality 90, as the page's server mode sends) or ".png" (the very pixels the
    page reads from the video))."""
    frames = [clip_frame(path) for path in SAMPLES]
    path = str(folder / "webcam.y4m")
    write_y4m(path, [frame for frame in frames for _ in range(FRAMES_PER_SAMPLE)], CLIP_FPS)
    options = [cv2.IMWRITE_JPEG_QUALITY, 90] if image_format == ".jpg" else []
    content_type = "image/jpeg" if image_format == ".jpg" else "image/png"
    expected = []
    for frame in frames:
        encoded = cv2.imencode(image_format, cv2.cvtColor(as_seen_through_i420(frame), cv2.COLOR_RGB2BGR),
                               options)[1].tobytes()
        expected.append(post_detect(served, encoded, content_type))
    return path, expected


@pytest.fixture(scope="module")
def clip(tmp_path_factory, served):
    """(path of the .y4m clip, the API's answer for each sample as the webcam shows it)."""
    return webcam_clip(tmp_path_factory.mktemp("clip"), served)


def chromium_context(profile_dir, video_path, viewport):
    """A headless Chromium context (Debian's, through Playwright) whose fake webcam plays ``video_path``;
    ``context.requests`` records every request its pages make (method, URL, body size)."""
    from playwright.sync_api import sync_playwright
    args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={video_path}",
            "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync"]
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile_dir), executable_path=CHROMIUM, headless=True, args=args, viewport=viewport,
            permissions=["camera"])
        context.requests = []
        context.on("request", lambda request: context.requests.append(
            (request.method, request.url, len(request.post_data_buffer or b""))))
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory, clip):
    """A Chromium context whose fake webcam plays the clip (``chromium_context``)."""
    yield from chromium_context(tmp_path_factory.mktemp("chromium-profile"), clip[0], {"width": 1280, "height": 860})


def page_state(page):
    """What the page shows: counts (dataset of #counts), the face list (label, box) of its last result, the
    frame rate, the time per frame and the message line."""
    return page.evaluate("""() => ({
        counts: {...document.getElementById("counts").dataset},
        faces: [...document.querySelectorAll("#faces li")].map(li => [li.dataset.label, JSON.parse(li.dataset.box)]),
        fps: document.getElementById("fps").textContent,
        frameTime: document.getElementById("frame-time").textContent,
        message: document.getElementById("message").textContent,
    })""")


def counts_of(result):
    return int(result["counts"]["mask"]), int(result["counts"]["unmask"])


def wait_for_update(page, source, after, timeout_s=30, image_path=None):
    """The page state once #counts shows an update from ``source`` beyond number ``after`` (and, with
    ``image_path``, of an image of that file's size: a later result of the image shown before does not count)."""
    width, height = (0, 0) if image_path is None else cv2.imread(image_path).shape[1::-1]
    page.wait_for_function(
        "([source, after, width, height]) => { const d = document.getElementById('counts').dataset;"
        " return d.source === source && Number(d.updates) > after"
        " && (!width || (Number(d.width) === width && Number(d.height) === height)); }",
        arg=[source, after, width, height], timeout=timeout_s * 1000)
    return page_state(page)


def assert_only_the_server_was_asked(browser, served):
    """The page (offline by design) asked for nothing but the server's own URLs."""
    requested = [url for _, url, _ in browser.requests]
    assert requested
    outside = [url for url in requested if not url.startswith((served.url + "/", "blob:", "data:"))]
    assert outside == []


@pytest.mark.slow
def test_webcam_page_shows_the_faces_and_counts_of_each_clip_frame(served, clip, browser, tmp_path):
    _, expected = clip
    expected_counts = [counts_of(result) for result in expected]
    assert expected_counts[0] != expected_counts[1], "the two samples must differ to tell the frames apart"
    page = browser.new_page()
    page.goto(served.url + "/")
    page.click("#start-camera")
    screenshot = str(tmp_path / "serve_demo.png")
    seen, last_state, deadline = {}, None, time.monotonic() + CAMERA_TIMEOUT_S
    while len(seen) < 2 and time.monotonic() < deadline:
        after = int(last_state["counts"]["updates"]) if last_state else 0
        last_state = wait_for_update(page, "camera", after)
        counts = (int(last_state["counts"]["mask"]), int(last_state["counts"]["unmask"]))
        assert counts in expected_counts, f"page shows {counts}, the clip's frames give {expected_counts}"
        seen[counts] = last_state
        if counts == expected_counts[1] and not os.path.exists(screenshot):
            page.screenshot(path=screenshot)
    assert set(seen) == set(expected_counts), f"within {CAMERA_TIMEOUT_S} s the page showed only {list(seen)}"
    for counts, result in zip(expected_counts, expected):
        state = seen[counts]
        assert (int(state["counts"]["width"]), int(state["counts"]["height"])) == CLIP_SIZE[::-1]
        assert int(state["counts"]["faces"]) == len(result["faces"])
        assert_same_faces(state["faces"], face_boxes(result), MIN_IOU)
    assert float(page_state(page)["fps"]) > 0
    page.click("#stop-camera")
    page.close()
    assert_only_the_server_was_asked(browser, served)
    assert os.path.getsize(screenshot) > 0
    if os.environ.get("UPDATE_ASSETS") == "1":
        shutil.copyfile(screenshot, SCREENSHOT + ".tmp")
        os.replace(SCREENSHOT + ".tmp", SCREENSHOT)


def test_uploaded_and_dropped_images_show_what_the_api_answers(served, browser):
    page = browser.new_page()
    page.goto(served.url + "/")
    page.set_input_files("#file-input", SAMPLES[1])
    state = wait_for_update(page, "image", 0, image_path=SAMPLES[1])
    with open(SAMPLES[1], "rb") as handle:
        expected = post_detect(served, handle.read(), "image/jpeg")
    assert (int(state["counts"]["mask"]), int(state["counts"]["unmask"])) == counts_of(expected)
    assert state["faces"] == [[label, box] for label, box in face_boxes(expected)]   # the same bytes were sent

    with open(SAMPLES[0], "rb") as handle:
        data = handle.read()
    transfer = page.evaluate_handle("""(bytes) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([new Uint8Array(bytes)], "dropped.jpg", {type: "image/jpeg"}));
        return transfer; }""", list(data))
    page.dispatch_event("#stage", "drop", {"dataTransfer": transfer})
    state = wait_for_update(page, "image", int(state["counts"]["updates"]), image_path=SAMPLES[0])
    expected = post_detect(served, data, "image/jpeg")
    assert (int(state["counts"]["mask"]), int(state["counts"]["unmask"])) == counts_of(expected)
    assert state["faces"] == [[label, box] for label, box in face_boxes(expected)]
    page.close()
    assert_only_the_server_was_asked(browser, served)


def test_refused_file_shows_the_servers_reason(served, browser, tmp_path):
    page = browser.new_page()
    page.goto(served.url + "/")
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image\n")
    page.set_input_files("#file-input", str(text_file))
    page.wait_for_function("() => document.getElementById('message').textContent.length > 0", timeout=30000)
    message = page_state(page)["message"]
    assert message.startswith("notes.txt: unsupported Content-Type 'text/plain'"), message
    page.close()
    assert_only_the_server_was_asked(browser, served)

