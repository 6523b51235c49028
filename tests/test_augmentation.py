"""Tests of the training pipeline in dataset/tf_dataset_preprocess.py and of dataset/check_dataset.py."""
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from components.prior_box import priors_from_config
from dataset.tf_dataset_preprocess import (
    WHOLE_FACE_TOLERANCE,
    augment,
    load_dataset,
    pad_to_aspect,
    parse_example,
    random_crop_whole_faces,
    random_flip,
)

CROWDED = "1_Handshaking_Handshaking_1_420"     # 640 x 184, 14 small faces
LARGE_FACE = "web_31vsIjDJ-XL__SY445_"          # 297 x 445, one large face
MINUS_ONE = "test_00004716"                     # box touching the top border (ymin -1 in the xml)


@pytest.fixture(scope="module")
def examples(voc_mini_tfrecords):
    """name -> (uint8 image, boxes, labels) of the training fixture records."""
    result = {}
    for serialized in tf.data.TFRecordDataset(voc_mini_tfrecords["train"]):
        name = tf.io.parse_single_example(
            serialized, {"image/filename": tf.io.FixedLenFeature([], tf.string)})["image/filename"]
        result[name.numpy().decode()] = parse_example(serialized)[:3]
    return result


@pytest.mark.parametrize("name", [CROWDED, LARGE_FACE, MINUS_ONE])
def test_augment_output_is_well_formed(examples, tiny_cfg, name):
    image, boxes, labels = examples[name]
    height, width = tiny_cfg.model.input_size
    for seed in range(25):
        tf.random.set_seed(seed)
        out_image, out_boxes, out_labels = augment(image, boxes, labels, tiny_cfg)
        out_image, out_boxes, out_labels = out_image.numpy(), out_boxes.numpy(), out_labels.numpy()
        assert out_image.shape == (height, width, 3) and out_image.dtype == np.float32
        assert out_image.min() >= -1.0 - 1e-6 and out_image.max() <= 1.0 + 1e-6
        assert len(out_boxes) == len(out_labels) >= 1, f"seed {seed}: every face dropped"
        assert out_boxes.min() >= 0.0 and out_boxes.max() <= 1.0, seed
        assert np.all(out_boxes[:, 2] > out_boxes[:, 0]) and np.all(out_boxes[:, 3] > out_boxes[:, 1]), seed
        assert set(out_labels.tolist()) <= set(labels.numpy().tolist())


def test_augment_without_switches_only_resizes(examples, tiny_cfg):
    image, boxes, labels = examples[LARGE_FACE]
    settings = tiny_cfg.replace(using_crop=False, using_bin=False, using_flip=False, using_distort=False)
    out_image, out_boxes, out_labels = augment(image, boxes, labels, settings)
    np.testing.assert_allclose(out_boxes.numpy(), boxes.numpy(), atol=1e-6)
    np.testing.assert_array_equal(out_labels.numpy(), labels.numpy())
    expected = cv2.resize(image.numpy(), (settings.model.input_size[1], settings.model.input_size[0]),
                          interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1
    assert np.abs(out_image.numpy() - expected).mean() < 0.05


def test_zoom_out_switched_off_by_its_ratio_leaves_every_image_to_the_crop(examples, tiny_cfg):
    # expand_max_ratio 1 turns zoom-out off: expand_prob must then not keep a share of the images from the crop
    image, boxes, labels = examples[CROWDED]
    settings = tiny_cfg.replace(using_crop=True, crop_prob=1.0, expand_prob=1.0, expand_max_ratio=1.0,
               using_bin=False, using_flip=False, using_distort=False)
    whole = augment(image, boxes, labels, settings.replace(using_crop=False))[1].numpy()
    cropped = [augment(image, boxes, labels, settings, seed=tf.constant([seed, 1], tf.int64))[1].numpy()
               for seed in range(6)]
    assert any(out.shape != whole.shape or not np.allclose(out, whole, atol=1e-4) for out in cropped)


def crop_origin(image, crop):
    """(left, top) of ``crop`` inside ``image``: where the crop matches the image exactly."""
    scores = cv2.matchTemplate(image.astype(np.float32), crop.astype(np.float32), cv2.TM_SQDIFF)
    return cv2.minMaxLoc(scores)[2]


@pytest.mark.slow
@pytest.mark.parametrize("name", [CROWDED, LARGE_FACE, MINUS_ONE])
def test_crop_keeps_every_kept_face_whole(examples, name):
    image, boxes, _ = examples[name]
    image_np = image.numpy()
    height, width = image_np.shape[:2]
    scale = np.array([width, height, width, height], np.float32)
    original_px = boxes.numpy() * scale
    ids = tf.range(tf.shape(boxes)[0])            # labels = box index, to know which faces were kept
    cropped_somewhere = False
    for seed in range(30):
        tf.random.set_seed(seed)
        crop, kept_boxes, kept_ids = random_crop_whole_faces(image, boxes, ids, target_aspect=4 / 3)
        crop, kept_ids = crop.numpy(), kept_ids.numpy()
        crop_h, crop_w = crop.shape[:2]
        kept_px = kept_boxes.numpy() * np.array([crop_w, crop_h, crop_w, crop_h], np.float32)
        assert len(kept_ids) >= 1, seed
        assert np.all(np.diff(kept_ids) > 0)
        # a kept face is its original box shifted by the crop origin, clipped by at most
        # WHOLE_FACE_TOLERANCE of its size on each side
        left, top = crop_origin(image_np, crop)
        expected = np.clip(original_px[kept_ids] - [left, top, left, top], 0, [crop_w, crop_h, crop_w, crop_h])
        np.testing.assert_allclose(kept_px, expected, atol=1.01, err_msg=f"seed {seed}")
        size = original_px[kept_ids, 2:] - original_px[kept_ids, :2]
        lost = size - (kept_px[:, 2:] - kept_px[:, :2])
        assert np.all(lost <= 2 * WHOLE_FACE_TOLERANCE * size + 1.01), seed
        # the crop really is that window of the image
        assert 0 <= left and 0 <= top and left + crop_w <= width and top + crop_h <= height, seed
        np.testing.assert_array_equal(crop, image_np[top:top + crop_h, left:left + crop_w])
        # faces left out have their centre outside the crop
        dropped = np.setdiff1d(np.arange(len(original_px)), kept_ids)
        centres = (original_px[dropped, :2] + original_px[dropped, 2:]) / 2
        inside = ((centres >= [left + 1, top + 1]) & (centres <= [left + crop_w - 1, top + crop_h - 1])).all(1)
        assert not inside.any(), seed
        cropped_somewhere |= (crop_h, crop_w) != (height, width)
    assert cropped_somewhere, "no seed produced a real crop"


def test_crop_of_an_image_without_faces(examples):
    image = examples[CROWDED][0]
    tf.random.set_seed(0)
    crop, boxes, labels = random_crop_whole_faces(image, tf.zeros([0, 4]), tf.zeros([0], tf.int32), 4 / 3)
    assert crop.shape[0] > 0 and crop.shape[1] > 0 and crop.shape[2] == 3
    assert boxes.shape == (0, 4) and labels.shape == (0,)


def test_flip_mirrors_boxes(examples):
    image, boxes, _ = examples[CROWDED]
    image_f, boxes_np = tf.cast(image, tf.float32), boxes.numpy()
    seen = set()
    for seed in range(12):
        tf.random.set_seed(seed)
        out_image, out_boxes = [t.numpy() for t in random_flip(image_f, boxes)]
        flipped = not np.array_equal(out_image, image_f.numpy())
        if flipped:
            np.testing.assert_array_equal(out_image, image_f.numpy()[:, ::-1])
            expected = np.stack([1 - boxes_np[:, 2], boxes_np[:, 1], 1 - boxes_np[:, 0], boxes_np[:, 3]], -1)
            np.testing.assert_allclose(out_boxes, expected, atol=1e-6)
        else:
            np.testing.assert_allclose(out_boxes, boxes_np)
        seen.add(flipped)
    assert seen == {True, False}


@pytest.mark.parametrize("name", [CROWDED, LARGE_FACE, MINUS_ONE])
@pytest.mark.parametrize("aspect", [4 / 3, 1.0, 0.5])
def test_pad_to_aspect(examples, name, aspect):
    image, boxes, _ = examples[name]
    image_np, boxes_np = image.numpy(), boxes.numpy()
    height, width = image_np.shape[:2]
    tf.random.set_seed(3)
    padded, new_boxes = [t.numpy() for t in pad_to_aspect(image, boxes, aspect)]
    new_h, new_w = padded.shape[:2]
    assert padded.dtype == np.uint8
    assert new_h >= height and new_w >= width
    # the target aspect, to a pixel (both sides are rounded up), with no more padding than needed
    assert abs(new_w - aspect * new_h) <= max(1.0, aspect) + 1e-6, (new_w, new_h)
    assert new_w <= max(width, np.ceil(height * aspect)) + 1 and new_h <= max(height, np.ceil(width / aspect)) + 1
    # the original is inside, unchanged, and the boxes moved with it
    offset_px = new_boxes * [new_w, new_h, new_w, new_h] - boxes_np * [width, height, width, height]
    left, top = np.round(offset_px[0, :2]).astype(int)
    np.testing.assert_allclose(offset_px, np.tile([left, top], (len(boxes_np), 2)), atol=1e-3)
    np.testing.assert_array_equal(padded[top:top + height, left:left + width], image_np)
    outside = np.ones(padded.shape[:2], bool)
    outside[top:top + height, left:left + width] = False
    assert np.all(padded[outside] == 127)


def test_load_dataset_batches(voc_mini_tfrecords, tiny_cfg):
    num_priors = len(priors_from_config(tiny_cfg.model))
    height, width = tiny_cfg.model.input_size
    tf.random.set_seed(0)
    for training in (True, False):
        batches = list(load_dataset(voc_mini_tfrecords["train"], tiny_cfg, training=training))
        assert len(batches) == 3        # 6 records, batch 2
        for images, targets in batches:
            assert images.shape == (2, height, width, 3) and images.dtype == tf.float32
            assert targets.shape == (2, num_priors, 5)
            positives = tf.reduce_sum(tf.cast(targets[..., 4] > 0, tf.int32), axis=1).numpy()
            assert np.all(positives >= 1), positives        # every fixture training image has faces
            assert set(np.unique(targets[..., 4].numpy())) <= {0.0, 1.0, 2.0}
            assert float(tf.reduce_min(images)) >= -1 and float(tf.reduce_max(images)) <= 1


def test_check_dataset_draws_a_png(voc_mini_tfrecords, tiny_cfg, tmp_path):
    from dataset.dataset_report import draw_grid
    output = str(tmp_path / "grid" / "check.png")
    # 8 asked for, 6 records in the file: the grid shows the 6 it has
    assert draw_grid(voc_mini_tfrecords["train"], tiny_cfg, 8, output) == output
    with open(output, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    picture = cv2.imread(output)
    assert picture is not None and picture.shape[0] > 100 and picture.shape[1] > 100
    assert os.listdir(tmp_path / "grid") == ["check.png"]


def test_matching_stats_counts_every_face_and_compensation_raises_small_faces(voc_mini_tfrecords):
    from components.config import DEFAULT_SETTINGS
    from dataset.dataset_report import format_matching_stats, matching_stats
    plain = matching_stats(voc_mini_tfrecords["train"], DEFAULT_SETTINGS.replace(min_positives=0))
    compensated = matching_stats(voc_mini_tfrecords["train"], DEFAULT_SETTINGS.replace(min_positives=4))
    assert list(plain) == list(compensated) and len(plain) >= 2
    assert sum(faces for faces, _, _ in plain.values()) == sum(faces for faces, _, _ in compensated.values())
    for name in plain:
        assert plain[name][1] >= 1.0                       # every face claims at least its best prior
        assert compensated[name][1] >= plain[name][1]      # compensation only adds positives
        assert compensated[name][2] <= plain[name][2]
    assert any(compensated[name][1] > plain[name][1] for name in plain)
    table = format_matching_stats(compensated)
    assert table.splitlines()[0].split()[:3] == ["face", "side", "(px)"] and len(table.splitlines()) == len(plain) + 1
