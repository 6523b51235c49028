"""``--input_size`` at inference: a Keras model runs at the size asked for, an export refuses another size."""
import os

import numpy as np
import pytest

from components.detector import Detector
from components.runtimes import ModelLoadError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO_ROOT, "assets", "test_00002330.jpg")


def test_keras_model_runs_at_the_requested_size_and_still_finds_the_faces():
    import cv2
    image = cv2.cvtColor(cv2.imread(SAMPLE), cv2.COLOR_BGR2RGB)
    trained = Detector.from_path(os.path.join(REPO_ROOT, "checkpoints", "mask_detector.keras"))
    larger = Detector.from_path(os.path.join(REPO_ROOT, "checkpoints", "mask_detector.keras"), input_size=(480, 640))
    assert larger.input_size == (480, 640) and trained.input_size != larger.input_size
    assert larger.preprocess([image]).shape == (1, 480, 640, 3)
    assert len(larger.priors) > 3 * len(trained.priors)
    found, reference = larger.detect(image), trained.detect(image)
    assert len(found) >= 1
    # every face found at the trained size is found at the larger size too (IoU >= 0.5)
    from components.box_utils import iou_matrix
    overlaps = iou_matrix(reference.boxes, found.boxes).numpy()
    assert np.all(overlaps.max(axis=1) >= 0.5)


def test_an_export_refuses_a_size_it_was_not_exported_at(tiny_model, tmp_path):
    from deploy.export import export_model_file
    output = str(tmp_path / "tiny.tflite")
    export_model_file(tiny_model, "tflite", output, log=lambda message: None)
    with pytest.raises(ModelLoadError, match="--input_size"):
        Detector.from_path(output, input_size=(96, 128))


def test_export_at_another_size_runs_there(tiny_model, tmp_path):
    from deploy.export import export_model_file
    output = str(tmp_path / "tiny_96x128.tflite")
    export_model_file(tiny_model, "tflite", output, log=lambda message: None, input_size=(96, 128))
    detector = Detector.from_path(output)
    assert detector.input_size == (96, 128)
    assert detector.predict_raw(np.zeros((1, 96, 128, 3), np.float32)).shape[1] == len(detector.priors)


def test_input_size_benchmark_prints_a_row_per_size(tiny_model, voc_mini_tfrecords, capsys):
    from cli.benchmark_input_size import main
    assert main(["--model_path", tiny_model, "--sizes", "120x160,96x128", "--val_tfrecord",
                 voc_mini_tfrecords["val"], "--runs", "2"]) == 0
    table = capsys.readouterr().out
    assert "| 120x160 |" in table and "| 96x128 |" in table and "mAP val_mask" in table


def test_input_size_benchmark_refuses_a_bad_size(capsys):
    from cli.benchmark_input_size import main
    assert main(["--sizes", "480by640"]) == 2
    assert "--sizes" in capsys.readouterr().err
