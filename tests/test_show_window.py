"""The window of ``inference.py --video ... --show`` on a desktop, tried on a virtual screen (Debian's Xvfb): it
opens, shows the annotated frames of a video file, and the script ends normally; without a display, or with
an unreachable one, the script says what to do in one line (exit 2) instead of aborting.

``UPDATE_ASSETS=1`` also refreshes ``assets/show_window.jpg``, the screenshot the README shows.
"""
import os
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from conftest import INFERENCE, REPO_ROOT, SAMPLE_IMAGE

from components.drawing import CLASS_COLORS_BGR

ASSET = os.path.join(REPO_ROOT, "assets", "show_window.jpg")
WINDOW_NAME = "face mask detector"
TOOLS = ("Xvfb", "xdotool", "xwd")


def opencv_has_windows():
    return "GUI:" in cv2.getBuildInformation() and "GUI:                           NONE" not in \
        cv2.getBuildInformation()


def read_xwd(data):
    """A 24/32-bit ZPixmap XWD screenshot (``xwd`` output) as a BGR uint8 image."""
    header = np.frombuffer(data[:100], ">u4")
    header_size, width, height = int(header[0]), int(header[4]), int(header[5])
    bits_per_pixel, bytes_per_line, byte_order, ncolors = int(header[11]), int(header[12]), int(header[7]), \
        int(header[19])
    assert bits_per_pixel == 32, f"expected a 32-bit screenshot, got {bits_per_pixel} bits per pixel"
    start = header_size + 12 * ncolors
    pixels = np.frombuffer(data[start:start + height * bytes_per_line], np.uint8).reshape(height, bytes_per_line)
    pixels = pixels[:, :width * 4].reshape(height, width, 4)
    return np.ascontiguousarray(pixels[:, :, :3] if byte_order == 0 else pixels[:, :, 3:0:-1])


def make_clip(path, frames=300):
    """An mp4 of the sample photo, still, ``frames`` frames of 480x288 (long enough to catch the window)."""
    image = cv2.resize(cv2.imread(SAMPLE_IMAGE), (480, 288), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (480, 288))
    for _ in range(frames):
        writer.write(image)
    writer.release()


@pytest.fixture
def virtual_display():
    """``:N`` of a fresh Xvfb screen, stopped afterwards."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian: xvfb xdotool x11-apps; .ci/run installs them)")
    if not opencv_has_windows():
        pytest.skip("this OpenCV has no window support (opencv-python-headless); the base install brings opencv-python")
    read_end, write_end = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                              pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    with os.fdopen(read_end) as handle:
        number = handle.readline().strip()
    yield f":{number}"
    server.terminate()
    server.wait(timeout=10)


@pytest.mark.slow
def test_show_opens_a_window_with_the_annotated_frames(virtual_display, tmp_path):
    clip = str(tmp_path / "clip.mp4")
    make_clip(clip)
    env = dict(os.environ, DISPLAY=virtual_display, TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.Popen([sys.executable, INFERENCE, "--video", clip, "--show"], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        window, deadline = None, time.monotonic() + 240
        while window is None and run.poll() is None and time.monotonic() < deadline:
            found = subprocess.run(["xdotool", "search", "--name", WINDOW_NAME], env=env, capture_output=True,
                                   text=True)
            window = found.stdout.split()[0] if found.stdout.split() else None
            time.sleep(0.1)
        assert window is not None, f"no window named {WINDOW_NAME!r} appeared"
        screenshot = None   # the window opens before the model loads: wait for annotated frames in it
        next_nudge = time.monotonic() + 3
        while screenshot is None or not annotated(screenshot):
            if run.poll() is not None or time.monotonic() > deadline:
                break
            # every window of that name, searched again each time: the toolkit may make more than one (one
            # stays black), and which one xdotool lists first varies
            found = subprocess.run(["xdotool", "search", "--name", WINDOW_NAME], env=env, capture_output=True,
                                   text=True)
            for window in found.stdout.split():
                shot = subprocess.run(["xwd", "-id", window, "-silent"], env=env, capture_output=True)
                if shot.returncode == 0 and shot.stdout:
                    screenshot = read_xwd(shot.stdout)
                    if annotated(screenshot):
                        break
                    if screenshot.max() == 0 and time.monotonic() > next_nudge:
                        map_again(window, env)
                        next_nudge = time.monotonic() + 5
            time.sleep(0.3)
    finally:
        stdout, stderr = run.communicate(timeout=240)
    assert run.returncode == 0, stderr
    assert "frames processed" in stdout
    assert screenshot is not None, "no screenshot of the window"
    cv2.imwrite(str(tmp_path / "show_window.png"), screenshot)
    assert screenshot.shape[0] >= 100 and screenshot.shape[1] >= 100
    # the frame is there (not a blank window) and annotated: boxes in the two classes' colours
    for color in CLASS_COLORS_BGR.values():
        assert color_pixels(screenshot, color) >= 50, \
            f"fewer than 50 pixels of {color} in the window (mean level {screenshot.mean():.1f}); its stderr: {stderr}"
    if os.environ.get("UPDATE_ASSETS") == "1":
        cv2.imwrite(ASSET, screenshot, [cv2.IMWRITE_JPEG_QUALITY, 80])


def map_again(window, env):
    """Unmap and map ``window`` again, which sends it a new Expose event. Xvfb runs no window manager, and Qt
    now and then never paints a window whose first Expose it missed (4 of 5 full test-suite runs, 3 of 24 runs
    of this test alone, most beside training runs): the window stayed black, not even Qt's grey toolbar, from the
    first screenshot to the last. Mapped again, it showed the annotated frames as soon as they came."""
    for command in ("windowunmap", "windowmap"):
        subprocess.run(["xdotool", command, "--sync", window], env=env, capture_output=True, timeout=30)


def annotated(screenshot):
    """Whether a screenshot shows boxes in both classes' colours (at least 50 pixels of each)."""
    return all(color_pixels(screenshot, color) >= 50 for color in CLASS_COLORS_BGR.values())


def color_pixels(image, color_bgr):
    """How many pixels of ``image`` are within a sum of 60 levels of ``color_bgr``."""
    return int((np.abs(image.astype(int) - color_bgr).sum(axis=2) < 60).sum())


@pytest.mark.parametrize("display, message", [
    (None, "error: --show: no display to show a window on (DISPLAY is not set); record with --output"),
    (":93", "error: --show: cannot reach the display :93 (DISPLAY); record with --output"),
])
def test_show_without_a_display_says_what_to_do_in_one_line(display, message, tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
    if display:
        env["DISPLAY"] = display
    run = subprocess.run([sys.executable, INFERENCE, "--video", os.path.join(REPO_ROOT, "assets", "sample_video.mp4"),
                          "--show"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), run.stderr
