"""Tests of components/prior_box.py and of its agreement with the network's output rows."""
import numpy as np
import pytest
import tensorflow as tf

from components.config import DEFAULT_SETTINGS
from components.prior_box import feature_map_sizes, prior_box, priors_from_config, priors_per_cell
from network.network import build_model

SPEC = DEFAULT_SETTINGS.model   # the default model spec

EXPECTED_240x320 = 30 * 40 * 3 + 15 * 20 * 2 + 8 * 10 * 2 + 4 * 5 * 3


def test_prior_count_for_default_input():
    assert EXPECTED_240x320 == 4420
    assert tuple(SPEC.input_size) == (240, 320)
    assert feature_map_sizes((240, 320), SPEC.steps) == [(30, 40), (15, 20), (8, 10), (4, 5)]
    assert priors_per_cell(SPEC.min_sizes) == [3, 2, 2, 3]
    priors = priors_from_config(SPEC)
    assert priors.shape == (EXPECTED_240x320, 4)
    assert priors.dtype == np.float32


@pytest.fixture(scope="module", params=["slim", "rfb"])
def any_size_model(request):
    config = DEFAULT_SETTINGS.replace(network=request.param)
    return build_model(config)


@pytest.mark.parametrize("input_size", [(240, 320), (480, 640), (120, 160), (100, 130)])
def test_priors_match_model_output_rows(any_size_model, input_size):
    """One prior per output row, for the training size and others (the network is fully convolutional)."""
    images = tf.zeros([1, *input_size, 3])
    output = any_size_model(images, training=False)
    assert output.shape[-1] == 4 + len(SPEC.labels_list)
    assert output.shape[1] == priors_from_config(SPEC, input_size).shape[0]


def test_model_built_for_a_fixed_size_matches_priors():
    model = build_model(DEFAULT_SETTINGS.replace(network="slim"), input_size=(240, 320))
    assert model.output_shape == (None, EXPECTED_240x320, 7)


def test_first_prior_and_layout():
    height, width = 240, 320
    priors = prior_box((height, width), SPEC.min_sizes, SPEC.steps)
    np.testing.assert_allclose(priors[0], [4 / 320, 4 / 240, 10 / 320, 10 / 240], rtol=1e-6)
    # order: head, then row, then column, then anchor
    offset = 0
    for (map_h, map_w), sizes, step in zip(feature_map_sizes((height, width), SPEC.steps), SPEC.min_sizes, SPEC.steps):
        level = priors[offset:offset + map_h * map_w * len(sizes)].reshape(map_h, map_w, len(sizes), 4)
        rows, cols = np.meshgrid(np.arange(map_h), np.arange(map_w), indexing="ij")
        for anchor, size in enumerate(sizes):
            np.testing.assert_allclose(level[:, :, anchor, 0], (cols + 0.5) * step / width, rtol=1e-6)
            np.testing.assert_allclose(level[:, :, anchor, 1], (rows + 0.5) * step / height, rtol=1e-6)
            np.testing.assert_allclose(level[:, :, anchor, 2], size / width, rtol=1e-6)
            np.testing.assert_allclose(level[:, :, anchor, 3], size / height, rtol=1e-6)
        offset += map_h * map_w * len(sizes)
    assert offset == len(priors)


def test_network_rows_follow_row_column_anchor_order():
    """The first head's output, read as [H, W, anchor, 4], is the first rows of the prediction tensor."""
    config = DEFAULT_SETTINGS.replace(network="slim")
    model = build_model(config)
    head = tf.keras.Model(model.input, [model.get_layer("loc_head0").output, model.output])
    images = tf.random.stateless_uniform([1, 48, 64, 3], seed=(1, 2), minval=-1, maxval=1)
    head_out, predictions = head(images, training=False)
    map_h, map_w = 6, 8
    anchors = len(SPEC.min_sizes[0])
    assert head_out.shape == (1, map_h, map_w, anchors * 4)
    expected = tf.reshape(head_out, [map_h * map_w * anchors, 4])
    np.testing.assert_allclose(predictions[0, :map_h * map_w * anchors, :4], expected, rtol=1e-5, atol=1e-6)


def test_width_height_pair_anchors():
    min_sizes = [[(10, 20), 16], [(32, 24)], [48], [(128, 96), 200]]
    priors = prior_box((240, 320), min_sizes, [8, 16, 32, 64])
    assert priors.shape == (30 * 40 * 2 + 15 * 20 + 8 * 10 + 4 * 5 * 2, 4)
    np.testing.assert_allclose(priors[0, 2:], [10 / 320, 20 / 240], rtol=1e-6)
    np.testing.assert_allclose(priors[1, 2:], [16 / 320, 16 / 240], rtol=1e-6)
    np.testing.assert_allclose(priors[0, :2], priors[1, :2])
    second_head = 30 * 40 * 2
    np.testing.assert_allclose(priors[second_head], [8 / 320, 8 / 240, 32 / 320, 24 / 240], rtol=1e-6)
    np.testing.assert_allclose(priors[-1], [(4 + 0.5) * 64 / 320, (3 + 0.5) * 64 / 240, 200 / 320, 200 / 240],
                               rtol=1e-6)
    np.testing.assert_allclose(priors[-2, 2:], [128 / 320, 96 / 240], rtol=1e-6)


def test_clip_keeps_priors_inside():
    priors = prior_box((240, 320), SPEC.min_sizes, SPEC.steps, clip=True)
    assert priors.min() >= 0.0 and priors.max() <= 1.0
    unclipped = prior_box((240, 320), SPEC.min_sizes, SPEC.steps)
    assert unclipped.max() > 1.0      # the 256 px anchors are wider than 240 px


@pytest.mark.parametrize("size, aligned", [((240, 320), (240, 320)), ((480, 640), (496, 640)),
                                           ((360, 480), (368, 512)), ((120, 160), (176, 192))])
def test_aligned_input_size_pads_every_map_as_at_the_trained_size(size, aligned):
    from components.prior_box import aligned_input_size, padding_pattern
    steps = SPEC.steps
    assert aligned_input_size(size, (240, 320), steps) == aligned
    assert all(a >= s for a, s in zip(aligned, size))
    assert padding_pattern(aligned[0], steps) == padding_pattern(240, steps)
    assert padding_pattern(aligned[1], steps) == padding_pattern(320, steps)
    assert aligned_input_size(aligned, (240, 320), steps) == aligned   # an aligned size stays as it is


def test_padding_pattern_marks_the_layers_that_see_an_odd_side():
    from components.prior_box import padding_pattern
    # 240 -> 120 -> 60 -> 30 -> 15 -> 8: only the layer from stride 16 to 32 sees an odd side (15)
    assert padding_pattern(240, [8, 16, 32, 64]) == (False, False, False, False, True, False)
    assert padding_pattern(360, [8, 16, 32, 64]) == (False, False, False, True, True, False)   # 45, 23
    assert len(padding_pattern(320, [8, 16, 32])) == 5
