"""``--input_size`` at inference: a Keras model runs at the size asked for, an export refuses another size."""
import os

import numpy as np
import pytest
from conftest import REPO_ROOT
from conftest import SAMPLE_IMAGE as SAMPLE

from runtime.adapters import ModelLoadError
from runtime.detector import Detector


@pytest.mark.slow
def test_keras_model_runs_at_the_requested_size_and_still_finds_the_faces():
    import cv2
    image = cv2.cvtColor(cv2.imread(SAMPLE), cv2.COLOR_BGR2RGB)
    trained = Detector.from_path(os.path.join(REPO_ROOT, "checkpoints", "mask_detector.keras"))
    size = (2 * trained.input_size[0], 2 * trained.input_size[1])   # 480x640 for a model trained at 240x320
    larger = Detector.from_path(os.path.join(REPO_ROOT, "checkpoints", "mask_detector.keras"), input_size=size)
    assert larger.input_size == size and trained.input_size != larger.input_size
    # the image letterboxed to twice the trained size at the top left of a canvas whose maps pad as at the
    # trained size (for 240x320: 496x640)
    from components.prior_box import aligned_input_size
    canvas = aligned_input_size(size, trained.input_size, trained.settings.model.steps)
    assert larger.network_size == canvas and trained.network_size == trained.input_size
    assert canvas[0] >= size[0] and canvas[1] >= size[1] and larger.preprocess([image]).shape == (1, *canvas, 3)
    assert len(larger.priors) > 3 * len(trained.priors)
    found, reference = larger.detect(image), trained.detect(image)
    assert len(found) >= 1
    # every face found at the trained size is found at the larger size too (IoU >= 0.5)
    from components.box_utils import iou_matrix
    overlaps = iou_matrix(reference.boxes, found.boxes).numpy()
    assert np.all(overlaps.max(axis=1) >= 0.5)


@pytest.mark.slow
def test_an_export_refuses_a_size_it_was_not_exported_at(tiny_model, tmp_path):
    from deploy.export import export_model_file
    output = str(tmp_path / "tiny.tflite")
    export_model_file(tiny_model, "tflite", output, log=lambda message: None)
    with pytest.raises(ModelLoadError, match="--input_size"):
        Detector.from_path(output, input_size=(96, 128))


@pytest.mark.slow
def test_export_at_another_size_runs_there(tiny_model, tmp_path):
    from deploy.export import export_model_file
    output = str(tmp_path / "tiny_248x352.tflite")   # twice the tiny model's 120x160, rounded up to align
    export_model_file(tiny_model, "tflite", output, log=lambda message: None, input_size=(248, 352))
    detector = Detector.from_path(output)
    assert detector.input_size == detector.network_size == (248, 352)
    assert detector.predict_raw(np.zeros((1, 248, 352, 3), np.float32)).shape[1] == len(detector.priors)


@pytest.mark.slow
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


def sample_faces(detector, image, min_score=0.5):
    found = detector.detect(image)
    return found.select(found.scores >= min_score)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["test_00002330.jpg", "1_Handshaking_Handshaking_1_71.jpg"])
def test_a_size_the_model_was_not_trained_at_runs_on_an_aligned_canvas(name):
    """At 1.5 times its trained size the maps of a model pad otherwise (for 240x320: at 360x480 45 and 23 rows
    are odd, 30 and 15 at 240x320 are not both), so run as is its boxes shift off the faces; on the aligned
    canvas (368x512 for 240x320) they land where the trained size puts them."""
    import cv2

    from components.box_utils import iou_matrix
    from components.prior_box import aligned_input_size
    from runtime.adapters import KerasRuntime
    image = cv2.cvtColor(cv2.imread(os.path.join(REPO_ROOT, "assets", name)), cv2.COLOR_BGR2RGB)
    model_file = os.path.join(REPO_ROOT, "checkpoints", "mask_detector.keras")
    trained = Detector.from_path(model_file)
    single = trained.settings.replace(test_scales=[1])
    reference = sample_faces(Detector(trained.runtime, single), image)
    size = (round(1.5 * trained.input_size[0]), round(1.5 * trained.input_size[1]))
    aligned = Detector.from_path(model_file, single, input_size=size)
    canvas = aligned_input_size(size, trained.input_size, trained.settings.model.steps)
    assert aligned.network_size == canvas != size
    # the control: the same model at 1.5x as if it had been trained there (no canvas)
    unaligned = Detector(KerasRuntime(trained.runtime.model, size), single.replace(input_size=size), trained_size=size)
    assert unaligned.network_size == size
    assert len(reference) >= 4

    def best_overlaps(detector):
        found = detector.detect(image)
        return iou_matrix(reference.boxes, found.boxes).numpy().max(axis=1)

    on_canvas, as_is = best_overlaps(aligned), best_overlaps(unaligned)
    # every face found again on the canvas; at 1.5x the 432x576 model (648x864) sees the people photo's faces
    # past its largest anchors (256 px), so its boxes there overlap less (min 0.62, mean 0.73 on 2026-12-07;
    # the 368x512 model gave at least 0.7 and 0.8)
    assert on_canvas.min() >= 0.6 and on_canvas.mean() >= 0.7
    # the shift costs the 240x320 model more than 0.05 of mean IoU on both samples, the 368x512 one 0.04 and the
    # 432x576 one 0.03 on the people photo (fewer of their stride-2 layers pad otherwise at 1.5x)
    assert on_canvas.mean() >= as_is.mean() + 0.02


def test_detect_inputs_takes_inputs_of_the_input_size_and_boxes_come_back_normalised_to_it():
    import cv2

    from components.config import DEFAULT_SETTINGS
    from runtime.preprocessing import boxes_to_pixels, preprocess_images
    image = cv2.cvtColor(cv2.imread(SAMPLE), cv2.COLOR_BGR2RGB)
    model_file = os.path.join(REPO_ROOT, "checkpoints", "mask_detector.keras")
    detector = Detector.from_path(model_file, DEFAULT_SETTINGS.replace(test_scales=[1]), input_size=(360, 480))
    inputs = preprocess_images([image], (360, 480))
    normalised = detector.detect_inputs(inputs)[0]
    in_pixels = detector.detect_batch([image])[0]
    assert len(normalised) == len(in_pixels) >= 1
    # normalised to the 360x480 letterbox, not to the 368x512 canvas the network ran on
    order, pixel_order = np.argsort(-normalised.scores, kind="stable"), np.argsort(-in_pixels.scores, kind="stable")
    np.testing.assert_allclose(boxes_to_pixels(normalised.boxes, image.shape, (360, 480))[order],
                               in_pixels.boxes[pixel_order], atol=0.5)


@pytest.mark.slow
def test_export_at_an_unaligned_size_exports_at_the_aligned_one(tiny_model, tmp_path):
    from components.prior_box import aligned_input_size
    from deploy.export import export_model_file
    output = str(tmp_path / "tiny_100x128.tflite")
    messages = []
    export_model_file(tiny_model, "tflite", output, log=messages.append, input_size=(100, 128))
    expected = aligned_input_size((100, 128), (120, 160), [8, 16, 32, 64])
    assert expected != (100, 128)
    assert Detector.from_path(output).input_size == expected
    assert any(f"exporting at {expected[0]}x{expected[1]}" in message for message in messages)


def test_pad_to_size_keeps_the_input_at_the_top_left_and_pads_with_the_letterbox_grey():
    from runtime.preprocessing import PAD_VALUE, pad_to_size
    batch = np.random.default_rng(0).uniform(-1, 1, (2, 6, 8, 3)).astype(np.float32)
    padded = pad_to_size(batch, (9, 16))
    assert padded.shape == (2, 9, 16, 3)
    np.testing.assert_array_equal(padded[:, :6, :8], batch)
    np.testing.assert_allclose(padded[:, 6:], PAD_VALUE / 127.5 - 1.0)
    np.testing.assert_allclose(padded[:, :, 8:], PAD_VALUE / 127.5 - 1.0)
    assert pad_to_size(batch, (6, 8)) is batch or np.array_equal(pad_to_size(batch, (6, 8)), batch)
