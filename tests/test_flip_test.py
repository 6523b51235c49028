"""Tests of the flip test: prior mirror indices and averaging of an image's predictions with its mirror image's."""

import cv2
import numpy as np
import pytest
from conftest import SAMPLE_IMAGE, SHIPPED_MODEL

from components.config import DEFAULT_SETTINGS
from components.prior_box import mirror_index, prior_box, priors_from_config


def test_mirror_index_maps_each_prior_to_its_mirror_image():
    priors = priors_from_config(DEFAULT_SETTINGS.model)
    mirror = mirror_index(priors)
    np.testing.assert_allclose(priors[mirror, 0], 1.0 - priors[:, 0], atol=1e-6)
    np.testing.assert_array_equal(priors[mirror, 1:], priors[:, 1:])
    np.testing.assert_array_equal(mirror[mirror], np.arange(len(priors)))   # an involution
    assert (mirror != np.arange(len(priors))).sum() > 0.9 * len(priors)     # few priors sit on the centre line


def test_mirror_index_refuses_priors_that_do_not_tile_the_width():
    spec = DEFAULT_SETTINGS.model
    with pytest.raises(ValueError, match="no horizontal mirror image"):
        mirror_index(prior_box((120, 160), spec.min_sizes, spec.steps))   # 160 / 64 is not whole


def test_merging_a_prediction_with_its_exact_mirror_changes_nothing():
    from runtime.postprocessing import merge_mirrored_predictions
    priors = priors_from_config(DEFAULT_SETTINGS.model)
    mirror = mirror_index(priors)
    rng = np.random.default_rng(0)
    predictions = rng.normal(size=(2, len(priors), 7)).astype(np.float32)
    mirrored = predictions[:, mirror].copy()        # what the network would say on the mirror image
    mirrored[..., 0] *= -1
    merged = merge_mirrored_predictions(predictions, mirrored, mirror)
    np.testing.assert_allclose(merged[..., :4], predictions[..., :4], atol=1e-6)

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    np.testing.assert_allclose(merged[..., 4:], softmax(predictions[..., 4:]), atol=1e-6)   # probabilities


def test_merge_averages_class_probabilities_and_unmirrors_offsets():
    from runtime.postprocessing import merge_mirrored_predictions
    mirror = np.array([1, 0])                       # two priors, each the other's mirror image
    a = np.array([[[0.2, 0.1, 0.0, 0.0, 0.0, np.log(3.0), 0.0],
                   [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]], np.float32)
    b = np.array([[[0.4, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                   [0.6, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0]]], np.float32)
    merged = merge_mirrored_predictions(a, b, mirror)
    np.testing.assert_allclose(merged[0, 0, :2], [(0.2 - 0.6) / 2, (0.1 + 0.3) / 2], atol=1e-6)
    probabilities = merged[0, 0, 4:]
    np.testing.assert_allclose(probabilities, [(0.2 + 1 / 3) / 2, (0.6 + 1 / 3) / 2, (0.2 + 1 / 3) / 2], atol=1e-6)


def test_flip_test_merge_gives_the_same_inside_a_graph():
    import tensorflow as tf

    from runtime.postprocessing import merge_mirrored_predictions
    generator = np.random.default_rng(0)
    a, b = (generator.normal(size=(2, 6, 7)).astype(np.float32) for _ in range(2))
    mirror = np.array([5, 4, 3, 2, 1, 0])
    in_graph = tf.function(lambda x, y: merge_mirrored_predictions(x, y, mirror))(tf.constant(a), tf.constant(b))
    eager = merge_mirrored_predictions(a, b, mirror)
    assert isinstance(eager, np.ndarray)
    np.testing.assert_allclose(in_graph.numpy(), eager, atol=1e-6)




def test_detector_with_flip_test_is_mirror_equivariant():
    """With the flip test the shipped model sees an image and its mirror image alike: the prediction on the
    mirror image is the mirror of the prediction on the image (a single pass has no such symmetry)."""
    from components.config import DEFAULT_SETTINGS
    from runtime.detector import Detector
    detector = Detector.from_path(SHIPPED_MODEL, DEFAULT_SETTINGS.replace(flip_test=True))
    single = Detector(detector.runtime, detector.settings.replace(flip_test=False))
    assert detector.flip_test and not single.flip_test
    images = detector.preprocess([cv2.cvtColor(cv2.imread(SAMPLE_IMAGE), cv2.COLOR_BGR2RGB)])
    flipped = images[:, :, ::-1].copy()

    def mirrored(raw):
        raw = raw[:, detector.mirror].copy()
        raw[..., 0] *= -1
        return raw
    np.testing.assert_allclose(detector.predict_raw(flipped), mirrored(detector.predict_raw(images)), atol=1e-3)
    assert np.abs(single.predict_raw(flipped) - mirrored(single.predict_raw(images))).max() > 0.1
    # and it still finds the faces a single pass finds (the people photo: 5 faces at the inference threshold)
    assert len(detector.detect_batch([cv2.cvtColor(cv2.imread(SAMPLE_IMAGE), cv2.COLOR_BGR2RGB)])[0]) == 5


def test_detector_turns_the_flip_test_off_where_priors_are_not_symmetric(tiny_model):
    from components.config import DEFAULT_SETTINGS
    from runtime.detector import Detector
    detector = Detector.from_path(tiny_model, DEFAULT_SETTINGS.replace(flip_test=True))   # 120x160: 64 px step, 160 wide
    assert detector.settings.detect.flip_test and not detector.flip_test and detector.mirror is None
    assert detector.notes == ["note: flip test off: the priors at 120x160 are not mirror images of each other "
                              "(a step does not divide the width)"]


def test_an_export_asked_for_several_scales_says_it_runs_one():
    from components.config import DEFAULT_SETTINGS
    from runtime.detector import Detector

    class FakeExport:   # a runtime adapter that is not Keras (an export runs one input size)
        format, input_size, path = "onnx", (240, 320), "m.onnx"

        def predict_raw(self, images):
            raise AssertionError("not called")
    detector = Detector(FakeExport(), DEFAULT_SETTINGS.replace(test_scales=[1, 2, 0.5]))
    assert detector.test_scales == [1]
    assert detector.notes == ["note: test_scales [1, 2, 0.5] -> [1]: m.onnx is an export, which runs one input "
                              "size (the .keras model runs every scale)"]
    assert Detector(FakeExport(), DEFAULT_SETTINGS).notes == []
