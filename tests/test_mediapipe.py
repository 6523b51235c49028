"""MediaPipe Tasks' ObjectDetector runs our end-to-end TFLite exports (float and int8) unmodified: the TFLite Model
Metadata that export.py writes (runtime/tflite_metadata.py) is what it needs, and it finds the faces of both
sample images with Detector's labels and boxes (one pass; IoU >= 0.7: MediaPipe stretches the image to the
model input where Detector letterboxes it).

MediaPipe (PyPI ``mediapipe``, with its opencv-contrib-python) lives in its own environment ``.venv-mediapipe``,
which ``.ci/run`` builds; tests/mediapipe_runner.py runs in it as a subprocess. Without it the test is skipped.
"""
import json
import os
import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, SAMPLE_IMAGES, SHIPPED_MODEL

MEDIAPIPE_PYTHON = os.path.join(REPO_ROOT, ".venv-mediapipe", "bin", "python")
RUNNER = os.path.join(REPO_ROOT, "tests", "mediapipe_runner.py")
SAMPLES = SAMPLE_IMAGES
MIN_IOU = 0.7

pytestmark = pytest.mark.skipif(not os.path.isfile(MEDIAPIPE_PYTHON),
                                reason=".venv-mediapipe not built (.ci/run builds it: python3.11 -m venv "
                                       ".venv-mediapipe && .venv-mediapipe/bin/pip install mediapipe==1.2.2)")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{format: path} of the shipped model's end-to-end TFLite exports (one pass; int8 calibrated on the set
    the repository ships), exported once."""
    from deploy.end_to_end import export_end_to_end_file
    folder = tmp_path_factory.mktemp("mediapipe")
    return {fmt: export_end_to_end_file(SHIPPED_MODEL, fmt, str(folder / f"mask_detector_e2e_{fmt}.tflite"),
                                        num_calibration=20, calibration_images_dir=os.path.join(
                                            REPO_ROOT, "assets", "calibration"), log=lambda message: None).path
            for fmt in ("tflite", "tflite_int8")}


@pytest.fixture(scope="module")
def reference():
    """Detector's detections of the sample images: the shipped model, one pass."""
    from components.config import DEFAULT_SETTINGS
    from runtime.detector import Detector
    detector = Detector.from_path(SHIPPED_MODEL, DEFAULT_SETTINGS.replace(flip_test=False, test_scales=[1]))
    return [detector.detect(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)) for path in SAMPLES]


def mediapipe_detections(model, score_threshold):
    """MediaPipe ObjectDetector's detections of the sample images (one dict per image, boxes in pixels)."""
    run = subprocess.run([MEDIAPIPE_PYTHON, RUNNER, model, str(score_threshold), *SAMPLES], capture_output=True,
                         text=True, timeout=120, env={key: value for key, value in os.environ.items()
                                                      if key != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr[-3000:]
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "tflite_int8"])
def test_mediapipe_object_detector_finds_the_faces_of_the_samples(fmt, exports, reference):
    from components.box_utils import iou_matrix
    from components.config import DEFAULT_SETTINGS
    found = mediapipe_detections(exports[fmt], DEFAULT_SETTINGS.detect.score_threshold)
    assert [result["image"] for result in found] == SAMPLES
    for expected, result in zip(reference, found):
        detections = result["detections"]
        assert len(detections) == len(expected) >= 4, (result, expected)
        boxes = np.array([detection["box"] for detection in detections], np.float32)
        overlaps = iou_matrix(expected.boxes, boxes).numpy()
        for row, label in enumerate(expected.labels()):
            column = int(np.argmax(overlaps[row]))
            assert overlaps[row, column] >= MIN_IOU, (fmt, result["image"], overlaps[row])
            assert detections[column]["label"] == label
        assert sorted(np.argmax(overlaps, axis=1).tolist()) == list(range(len(detections)))   # one to one


def readme_snippet():
    """The python block under '### MediaPipe Tasks' of the README."""
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    part = text.split("\n### MediaPipe Tasks", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", part, re.S)
    return block


@pytest.mark.slow
def test_the_readme_snippet_runs_in_mediapipe_alone(exports, reference, tmp_path):
    """The snippet as written, in a folder where its paths lead to the float export and the first sample."""
    from components.box_utils import iou_matrix
    (tmp_path / "runs" / "export").mkdir(parents=True)
    (tmp_path / "assets").mkdir()
    shutil.copy(exports["tflite"], tmp_path / "runs" / "export" / "mask_detector_e2e.tflite")
    shutil.copy(SAMPLES[0], tmp_path / "assets")
    (tmp_path / "snippet.py").write_text(readme_snippet())
    run = subprocess.run([MEDIAPIPE_PYTHON, "-I", "snippet.py"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line.split() for line in run.stdout.splitlines() if line.strip()]
    assert rows and all(len(row) == 6 for row in rows), run.stdout
    boxes = np.array([[float(value) for value in row[2:]] for row in rows], np.float32)
    overlaps = iou_matrix(reference[0].boxes, boxes).numpy()
    assert len(rows) == len(reference[0])
    for row, label in enumerate(reference[0].labels()):
        column = int(np.argmax(overlaps[row]))
        assert overlaps[row, column] >= MIN_IOU and rows[column][0] == label
