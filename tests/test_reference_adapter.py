"""The benchmark's adapter of the AIZOOTech reference model, and the class-agnostic NMS it uses."""
import os

import cv2
import numpy as np
import pytest
from conftest import VOC_MINI

from benchmarks.reference import DEFAULT_REFERENCE, AizooReference, reference_priors
from components.box_utils import class_agnostic_nms


def test_reference_priors_follow_the_published_layout():
    priors = reference_priors()
    assert priors.shape == (5972, 4)
    first_cell = priors[:4]
    np.testing.assert_allclose(first_cell[:, :2], 0.5 / 33, rtol=1e-6)            # all centred on cell (0, 0)
    np.testing.assert_allclose(first_cell[:2, 2:], [[0.04, 0.04], [0.056, 0.056]], rtol=1e-6)
    np.testing.assert_allclose(first_cell[2, 2] / first_cell[2, 3], 0.62, rtol=1e-5)   # w / h of the ratio anchors
    np.testing.assert_allclose(first_cell[3, 2] * first_cell[3, 3], 0.04 ** 2, rtol=1e-5)
    np.testing.assert_allclose(priors[4, 0], 1.5 / 33, rtol=1e-6)                  # next cell, same row
    np.testing.assert_allclose(priors[-3, :3], [2.5 / 3, 2.5 / 3, 0.72], rtol=1e-6)      # last cell, second size


def test_class_agnostic_nms_keeps_one_box_per_face_whatever_its_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.05, 0.6]], np.float32)   # boxes 0 and 1 overlap, other classes
    kept_boxes, kept_scores, classes = (value.numpy() for value in class_agnostic_nms(boxes, scores, 0.3, 0.4, 10))
    np.testing.assert_allclose(kept_scores, [0.9, 0.6])
    np.testing.assert_array_equal(classes, [0, 1])
    np.testing.assert_allclose(kept_boxes, boxes[[0, 2]])


def test_reference_adapter_finds_faces_on_a_sample_image():
    if not os.path.isfile(DEFAULT_REFERENCE):
        pytest.skip(f"{DEFAULT_REFERENCE}: reference model not present (benchmark-only)")
    image = cv2.cvtColor(cv2.imread(os.path.join(os.path.dirname(__file__), "..", "assets", "test_00002330.jpg")),
                         cv2.COLOR_BGR2RGB)
    detections = AizooReference().detect(image, 0.5)
    assert len(detections) >= 1
    assert set(detections.labels()) <= {"mask", "unmask"}
    assert np.all(detections.boxes[:, 2:] <= [image.shape[1], image.shape[0]])




def test_detect_reference_writes_one_folder_per_set(tmp_path, capsys):
    if not os.path.isfile(DEFAULT_REFERENCE):
        pytest.skip(f"{DEFAULT_REFERENCE}: reference model not present (benchmark-only)")
    from cli import detect_reference
    assert detect_reference.main(["--dataset_path", f"{VOC_MINI},{VOC_MINI}", "--output_dir", str(tmp_path)]) == 0
    for name in ("voc_mini", "voc_mini_2"):
        for kind in ("detection-results", "ground-truth"):
            assert len(os.listdir(tmp_path / name / kind)) == 2   # the two images of val.txt
    assert "--set_dirs" in capsys.readouterr().out


def test_detect_reference_names_a_missing_dataset_folder(tmp_path, capsys):
    from cli import detect_reference
    assert detect_reference.main(["--dataset_path", f"{VOC_MINI},{tmp_path / 'nowhere'}",
                                  "--output_dir", str(tmp_path)]) == 2
    assert "nowhere" in capsys.readouterr().err
