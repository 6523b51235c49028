"""Tests of inference.py and components/drawing.py with a tiny randomly initialised model on the sample images."""
import argparse
import os
import re

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, SAMPLE_IMAGE, TINY_INPUT_SIZE, run_python_script

import cli.inference as inference
from components.config import DEFAULT_SETTINGS
from components.drawing import CLASS_COLORS_BGR, draw_detections
from runtime import media

SCRIPT = os.path.join(REPO_ROOT, "inference.py")
DETECTION_LINE = re.compile(r"^(mask|unmask) (\d\.\d{3}) (-?\d+) (-?\d+) (-?\d+) (-?\d+)$")
SUMMARY_LINE = re.compile(r"^(\d+) faces?: (\d+) mask, (\d+) unmask; model \d+\.\d ms( \(\+ [^)]+\))*$")


def run_script(*args, cwd):
    """inference.py with ``args`` in ``cwd`` (conftest's subprocess runner)."""
    return run_python_script([SCRIPT, *map(str, args)], cwd=cwd)


def assert_one_line_error(run, path):
    """Exit code 2, no traceback, and the last stderr line is ``error: <path>: ...``."""
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    last_line = run.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: {path}: "), run.stderr


class FakeDetections:
    def __init__(self, boxes, scores, labels):
        self.boxes, self.scores, self._labels = np.array(boxes, np.float32), np.array(scores, np.float32), labels

    def labels(self):
        return self._labels


# --- drawing and small helpers (no model) ------------------------------------------------------------

def test_draw_detections_colours_boxes_by_class_and_keeps_the_input():
    image = np.full((200, 300, 3), 128, np.uint8)
    detections = FakeDetections([[20, 60, 100, 150], [150, 60, 250, 150]], [0.93, 0.5], ["mask", "unmask"])
    annotated = draw_detections(image, detections, fps=12.3)
    assert annotated.shape == image.shape and annotated.dtype == np.uint8
    assert (image == 128).all()                                  # the input is not drawn on
    assert tuple(annotated[120, 20]) == CLASS_COLORS_BGR["mask"]     # left edges, below the labels
    assert tuple(annotated[120, 150]) == CLASS_COLORS_BGR["unmask"]
    assert (annotated[5:25, 5:60] != 128).any()                  # FPS text in the top-left corner
    plain = draw_detections(image, FakeDetections(np.zeros((0, 4)), [], []))
    assert (plain == image).all()


def test_the_fps_counter_covers_no_face_label():
    """A face at the top-left corner (where the counter used to go): the counter moves to a free corner."""
    from components.drawing import corner_rectangle, label_rectangles
    image = np.full((240, 320, 3), 128, np.uint8)
    detections = FakeDetections([[2, 2, 60, 70], [250, 10, 318, 90]], [0.9, 0.8], ["unmask", "mask"])
    texts = ["unmask 0.90", "mask 0.80"]
    labels = label_rectangles(detections.boxes, texts, image.shape)
    avoid = labels + [tuple(int(v) for v in box) for box in detections.boxes]
    rect = corner_rectangle("FPS 12.3", image.shape, avoid)
    assert rect[1] > 120 and rect[0] < 160                       # bottom-left: the top corners hold faces
    assert not any(rect[0] < o[2] and o[0] < rect[2] and rect[1] < o[3] and o[1] < rect[3] for o in avoid)
    annotated = draw_detections(image, detections, fps=12.3)
    without = draw_detections(image, detections)
    changed = np.argwhere((annotated != without).any(axis=2))
    assert len(changed) and changed[:, 0].min() >= rect[1] and changed[:, 1].max() <= rect[2]


def test_camera_flag_accepts_an_index_or_a_literal_true():
    assert inference.camera_source("True") == 0
    assert inference.camera_source("2") == 2
    assert inference.camera_source(" rtsp://camera.local/live ") == "rtsp://camera.local/live"
    with pytest.raises(argparse.ArgumentTypeError):
        inference.camera_source("front")


def test_detection_and_summary_lines_are_in_the_documented_format():
    detections = FakeDetections([[10.4, 20.6, 50.0, 80.49]], [0.9349], ["mask"])
    assert media.detection_lines(detections) == ["mask 0.935 10 21 50 80"]
    assert media.summary_line(detections, ["mask", "unmask"], 12.34) == "1 face: 1 mask, 0 unmask; model 12.3 ms"
    assert media.summary_line(detections, ["mask", "unmask"], 12.34, True, [1, 2]) == \
        "1 face: 1 mask, 0 unmask; model 12.3 ms (+ flip test) (+ 2x scale)"


def test_unsupported_output_extension_is_a_usage_error(tmp_path):
    with pytest.raises(media.UsageError, match="out.xyz"):
        media.write_image_atomically(str(tmp_path / "out.xyz"), np.zeros((4, 4, 3), np.uint8))
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_the_models_saved_config_wins_for_model_keys(tiny_model):
    from runtime.detector import Detector
    base = DEFAULT_SETTINGS.replace(input_size=(480, 640), score_threshold=0.7)
    detector = Detector.from_path(os.path.dirname(tiny_model), base)
    assert detector.input_size == TINY_INPUT_SIZE
    assert detector.settings.detect.score_threshold == 0.7


# --- the command line ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_image_mode_writes_an_annotated_image_and_prints_detections(tiny_model, tmp_path):
    output = tmp_path / "annotated.jpg"
    run = run_script("--model_path", tiny_model, "--img_path", SAMPLE_IMAGE, "--output", output,
                     "--score_threshold", "0.01", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    source = cv2.imread(SAMPLE_IMAGE)
    written = cv2.imread(str(output))
    assert written is not None and written.shape == source.shape
    assert not [name for name in os.listdir(tmp_path) if ".tmp-" in name]
    lines = run.stdout.strip().splitlines()
    assert lines[-1] == f"annotated image written to {output}"
    summary = SUMMARY_LINE.match(lines[-2])
    assert summary, lines[-2]
    detection_lines = lines[:-2]
    assert len(detection_lines) == int(summary.group(1)) > 0     # a random model passes a 0.01 threshold
    height, width = source.shape[:2]
    labels = []
    for line in detection_lines:
        match = DETECTION_LINE.match(line)
        assert match, line
        left, top, right, bottom = map(int, match.groups()[2:])
        assert 0 <= left <= right <= width and 0 <= top <= bottom <= height
        labels.append(match.group(1))
    assert labels.count("mask") == int(summary.group(2)) and labels.count("unmask") == int(summary.group(3))


@pytest.mark.slow
def test_video_mode_writes_every_frame(tiny_model, tmp_path):
    frame = cv2.resize(cv2.imread(SAMPLE_IMAGE), (320, 192))
    source = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(source, cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 192))
    for _ in range(10):
        writer.write(frame)
    writer.release()
    output = tmp_path / "annotated.mp4"
    run = run_script("--model_path", tiny_model, "--video", source, "--output", output, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].startswith("10 frames processed, mean ")
    capture = cv2.VideoCapture(str(output))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    assert len(frames) == 10
    assert frames[0].shape == (192, 320, 3)


def test_missing_image_is_one_line_error(tmp_path):
    missing = tmp_path / "missing.jpg"
    run = run_script("--model_path", tmp_path, "--img_path", missing, cwd=tmp_path)
    assert_one_line_error(run, missing)
    assert run.stderr.strip().count("\n") == 0        # caught before TensorFlow is even imported


def test_zero_byte_image_is_one_line_error(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    run = run_script("--model_path", tmp_path, "--img_path", empty, cwd=tmp_path)
    assert_one_line_error(run, empty)
    assert run.stderr.strip().count("\n") == 0


def test_corrupt_image_is_one_line_error(tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff not really a jpeg")
    assert_one_line_error(run_script("--img_path", corrupt, cwd=tmp_path), corrupt)


def test_missing_model_is_one_line_error(tmp_path):
    missing = tmp_path / "no_such_model.keras"
    run = run_script("--model_path", missing, "--img_path", SAMPLE_IMAGE, cwd=tmp_path)
    assert_one_line_error(run, missing)
    assert run.stderr.strip().count("\n") == 0


@pytest.mark.slow
def test_non_model_file_is_one_line_error(tmp_path):
    not_a_model = tmp_path / "notes.keras"
    not_a_model.write_text("not a model\n")
    run = run_script("--model_path", not_a_model, "--img_path", SAMPLE_IMAGE, cwd=tmp_path)
    assert_one_line_error(run, not_a_model)


def test_unreadable_video_is_one_line_error(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video")
    run = run_script("--model_path", tmp_path, "--video", broken, "--output", tmp_path / "out.mp4", cwd=tmp_path)
    assert_one_line_error(run, broken)
    assert not (tmp_path / "out.mp4").exists()


def test_image_and_video_flags_are_exclusive(tmp_path):
    run = run_script("--img_path", SAMPLE_IMAGE, "--video", "clip.mp4", cwd=tmp_path)
    assert run.returncode == 2 and "not allowed with" in run.stderr
