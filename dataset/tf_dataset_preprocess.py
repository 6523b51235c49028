"""tf.data input pipeline: TFRecord -> augmented image + encoded SSD targets.

Training images go through: random crop that keeps whole faces, padding to the input aspect ratio
("bin"), resize, horizontal flip, photometric distortion, normalisation, then target encoding against the
priors. Validation images are only letterboxed (``components.letterbox.letterbox``, TensorFlow backend: the
letterbox of inference and of the end-to-end graphs), resized and normalised, as inference sees them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

from components.box_utils import encode_targets
from components.letterbox import PAD_VALUE, TensorFlowBackend, letterbox, normalize, padded_shape
from components.prior_box import priors_from_config

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from components.config import Settings

FEATURES = {
    "image/filename": tf.io.FixedLenFeature([], tf.string),
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/ymin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/xmax": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/ymax": tf.io.VarLenFeature(tf.float32),
    "image/object/class/label": tf.io.VarLenFeature(tf.int64),
    "image/object/difficult": tf.io.VarLenFeature(tf.int64),
}

CROP_CANDIDATES = 32
CROP_MIN_SCALE = 0.3
WHOLE_FACE_TOLERANCE = 0.1  # a kept face may lose this fraction of its width / height at a crop edge


def parse_example(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Decode one record into (uint8 image [H, W, 3], boxes [N, 4] normalised corner form, labels [N] int32,
    difficult [N] bool). A record without difficult flags (or with a wrong count) has none difficult."""
    features = tf.io.parse_single_example(serialized, FEATURES)
    image = tf.io.decode_jpeg(features["image/encoded"], channels=3)
    dense = {key: tf.sparse.to_dense(features[f"image/object/bbox/{key}"]) for key in ("xmin", "ymin", "xmax", "ymax")}
    boxes = tf.stack([dense["xmin"], dense["ymin"], dense["xmax"], dense["ymax"]], axis=-1)
    labels = tf.cast(tf.sparse.to_dense(features["image/object/class/label"]), tf.int32)
    difficult = tf.cast(tf.sparse.to_dense(features["image/object/difficult"]), tf.bool)
    difficult = tf.cond(tf.size(difficult) == tf.size(labels), lambda: difficult,
                        lambda: tf.zeros_like(labels, tf.bool))
    return image, tf.reshape(boxes, [-1, 4]), labels, difficult


def _seeds(seed, count):
    """``count`` independent stateless seeds [count, 2] derived from one seed [2] (or a fresh random one)."""
    if seed is None:
        seed = tf.random.uniform([2], maxval=2 ** 31 - 1, dtype=tf.int64)
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=count)


def random_crop_whole_faces(image: tf.Tensor, boxes: tf.Tensor, labels: tf.Tensor, target_aspect: float | tf.Tensor,
                            seed: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Random crop in which every kept face is whole.

    ``CROP_CANDIDATES`` crops are drawn at once (side between ``CROP_MIN_SCALE`` and 1 of the image,
    aspect ratio around ``target_aspect`` = w / h); a candidate is valid when it contains the centre of at
    least one face and every face whose centre it contains lies inside it (up to ``WHOLE_FACE_TOLERANCE`` of
    its size, so that faces cut by the image border do not forbid every crop). Faces whose centre falls
    outside are dropped. The first valid candidate is used, or the whole image when none is valid.
    Boxes are normalised corner form before and after. ``seed`` [2] makes the crop repeatable.
    """
    seeds = _seeds(seed, 4)
    shape = tf.cast(tf.shape(image), tf.float32)
    height, width = shape[0], shape[1]
    scale = tf.random.stateless_uniform([CROP_CANDIDATES], seeds[0], CROP_MIN_SCALE, 1.0)
    aspect = target_aspect * tf.exp(tf.random.stateless_uniform([CROP_CANDIDATES], seeds[1], -0.3, 0.3))  # w / h
    crop_h = scale * tf.minimum(height, width / aspect)
    crop_w = crop_h * aspect
    left = tf.random.stateless_uniform([CROP_CANDIDATES], seeds[2]) * (width - crop_w)
    top = tf.random.stateless_uniform([CROP_CANDIDATES], seeds[3]) * (height - crop_h)
    crops = tf.stack([left / width, top / height, (left + crop_w) / width, (top + crop_h) / height], axis=-1)

    centres = (boxes[:, :2] + boxes[:, 2:]) / 2                                       # [N, 2]
    centre_in = tf.reduce_all(tf.logical_and(centres[None] >= crops[:, None, :2],
                                             centres[None] <= crops[:, None, 2:]), axis=-1)   # [K, N]
    slack = WHOLE_FACE_TOLERANCE * (boxes[None, :, 2:] - boxes[None, :, :2]) + 1e-6   # [1, N, 2]
    fully_in = tf.logical_and(tf.reduce_all(boxes[None, :, :2] >= crops[:, None, :2] - slack, axis=-1),
                              tf.reduce_all(boxes[None, :, 2:] <= crops[:, None, 2:] + slack, axis=-1))
    valid = tf.logical_and(tf.reduce_any(centre_in, axis=1),
                           tf.reduce_all(tf.logical_or(tf.logical_not(centre_in), fully_in), axis=1))
    valid = tf.logical_or(valid, tf.equal(tf.shape(boxes)[0], 0))
    full_image = tf.constant([[0.0, 0.0, 1.0, 1.0]])
    crops = tf.concat([crops, full_image], axis=0)
    valid = tf.concat([valid, [True]], axis=0)
    choice = tf.argmax(tf.cast(valid, tf.int32), output_type=tf.int32)
    crop = crops[choice]
    keep = tf.concat([centre_in, tf.ones_like(centre_in[:1])], axis=0)[choice]

    pixel_box = tf.cast(tf.round(crop * tf.stack([width, height, width, height])), tf.int32)
    crop_width = tf.maximum(pixel_box[2] - pixel_box[0], 1)
    crop_height = tf.maximum(pixel_box[3] - pixel_box[1], 1)
    image = tf.image.crop_to_bounding_box(image, pixel_box[1], pixel_box[0], crop_height, crop_width)
    origin = tf.cast(tf.stack([pixel_box[0], pixel_box[1]] * 2), tf.float32) / tf.stack([width, height] * 2)
    size = tf.cast(tf.stack([crop_width, crop_height] * 2), tf.float32) / tf.stack([width, height] * 2)
    boxes = tf.clip_by_value((tf.boolean_mask(boxes, keep) - origin) / size, 0.0, 1.0)
    return image, boxes, tf.boolean_mask(labels, keep)


def place_on_canvas(image: tf.Tensor, boxes: tf.Tensor, new_height: int | tf.Tensor, new_width: int | tf.Tensor,
                    offset_x: int | tf.Tensor, offset_y: int | tf.Tensor,
                    fill_value: int = PAD_VALUE) -> tuple[tf.Tensor, tf.Tensor]:
    """Put ``image`` [h, w, 3] on a ``new_height`` x ``new_width`` canvas of ``fill_value`` with its top-left
    corner at (``offset_x``, ``offset_y``) pixels; boxes (normalised corner form) follow their faces."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    padded = tf.pad(tf.cast(image, tf.int32) - fill_value,
                    [[offset_y, new_height - height - offset_y], [offset_x, new_width - width - offset_x], [0, 0]])
    image = tf.cast(padded + fill_value, tf.uint8)
    scale = tf.cast(tf.stack([width, height] * 2), tf.float32)
    offset = tf.cast(tf.stack([offset_x, offset_y] * 2), tf.float32)
    new_size = tf.cast(tf.stack([new_width, new_height] * 2), tf.float32)
    return image, (boxes * scale + offset) / new_size


def _random_offsets(extra_width, extra_height, seed):
    seeds = _seeds(seed, 2)
    return (tf.random.stateless_uniform([], seeds[0], 0, extra_width + 1, dtype=tf.int32),
            tf.random.stateless_uniform([], seeds[1], 0, extra_height + 1, dtype=tf.int32))


def pad_to_aspect(image: tf.Tensor, boxes: tf.Tensor, target_aspect: float, fill_value: int = PAD_VALUE,
                  seed: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Pad with ``fill_value`` so that width / height == ``target_aspect`` (the frame of the letterbox,
    ``components.letterbox.padded_shape``), the image placed at a random offset in it (the letterbox of
    inference places it at the top left); boxes (normalised corner form) stay on their faces."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    new_height, new_width = padded_shape(height, width, target_aspect)
    offset_x, offset_y = _random_offsets(new_width - width, new_height - height, seed)
    return place_on_canvas(image, boxes, new_height, new_width, offset_x, offset_y, fill_value)


def random_expand(image: tf.Tensor, boxes: tf.Tensor, max_ratio: float, fill_value: int = PAD_VALUE,
                  seed: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Zoom out: place the image at a random spot of a grey canvas ``r`` times its height and width, ``r``
    uniform in [1, ``max_ratio``] (SSD's expand, SCRFD's zoom-out), so its faces become small. Boxes are
    normalised corner form before and after."""
    seeds = _seeds(seed, 2)
    ratio = tf.random.stateless_uniform([], seeds[0], 1.0, max_ratio)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    new_height = tf.cast(tf.math.ceil(tf.cast(height, tf.float32) * ratio), tf.int32)
    new_width = tf.cast(tf.math.ceil(tf.cast(width, tf.float32) * ratio), tf.int32)
    offset_x, offset_y = _random_offsets(new_width - width, new_height - height, seeds[1])
    return place_on_canvas(image, boxes, new_height, new_width, offset_x, offset_y, fill_value)


def random_flip(image: tf.Tensor, boxes: tf.Tensor, seed: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Mirror left-right with probability 0.5."""
    flip = tf.random.stateless_uniform([], _seeds(seed, 1)[0]) < 0.5
    image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
    boxes = tf.cond(flip, lambda: tf.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], axis=-1),
                    lambda: boxes)
    return image, boxes


def random_distort(image: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
    """Photometric distortion of a float image in [0, 255]: brightness, contrast, saturation, hue."""
    seeds = _seeds(seed, 4)
    image = image / 255.0
    image = tf.image.stateless_random_brightness(image, 0.125, seeds[0])
    image = tf.image.stateless_random_contrast(image, 0.6, 1.4, seeds[1])
    image = tf.image.stateless_random_saturation(image, 0.6, 1.4, seeds[2])
    image = tf.image.stateless_random_hue(image, 0.05, seeds[3])
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def normalize_image(image: tf.Tensor | np.ndarray) -> tf.Tensor:
    """Map pixel values [0, 255] to [-1, 1] (what the network expects; ``components.letterbox.normalize``)."""
    return normalize(tf.cast(image, tf.float32))


def resize_image(image: tf.Tensor | np.ndarray, input_size: Sequence[int]) -> tf.Tensor:
    """Resize any uint8 or float image to ``input_size`` = (h, w) as the letterbox does (bilinear); returns
    float32 in [0, 255]."""
    return TensorFlowBackend.resize(image, input_size)


def prepare_for_evaluation(image_rgb: tf.Tensor | np.ndarray, boxes: tf.Tensor | np.ndarray, input_size: Sequence[int],
                           keep_aspect: bool = True) -> tuple[tf.Tensor, tf.Tensor]:
    """One un-augmented example as inference sees it: uint8 RGB [H, W, 3] and boxes [N, 4] (normalised corner
    form) -> (normalised float32 network input at ``input_size``, boxes normalised to that input), through
    ``components.letterbox.letterbox`` (padded at the bottom / right when ``keep_aspect``, else stretched).
    Used by validation and, image-only, by ``preprocess_for_inference``."""
    image_rgb = tf.convert_to_tensor(image_rgb)
    inputs, (frame_h, frame_w) = letterbox(image_rgb, input_size, keep_aspect, backend="tensorflow")
    if keep_aspect:
        shape = tf.shape(image_rgb)
        boxes = (tf.cast(boxes, tf.float32) * tf.cast(tf.stack([shape[1], shape[0]] * 2), tf.float32)
                 / tf.cast(tf.stack([frame_w, frame_h] * 2), tf.float32))
    return inputs, boxes


def preprocess_for_inference(image_rgb: tf.Tensor | np.ndarray, input_size: Sequence[int],
                             keep_aspect: bool = True) -> tf.Tensor:
    """uint8 RGB [H, W, 3] -> normalised float32 network input at ``input_size``, letterboxed when
    ``keep_aspect`` (the TensorFlow twin of ``runtime.preprocessing.preprocess_images``)."""
    return prepare_for_evaluation(image_rgb, tf.zeros([0, 4]), input_size, keep_aspect)[0]


def encode_example_targets(boxes: tf.Tensor, labels: tf.Tensor, priors: tf.Tensor | np.ndarray,
                           settings: Settings) -> tf.Tensor:
    """Training targets [P, 5] of one example (boxes [N, 4] normalised corner form, labels [N]) against
    ``priors`` [P, 4] (centre form), with ``settings.match`` and the box coding of ``settings.model``."""
    match = settings.match
    return encode_targets(boxes, labels, priors, match.match_thresh, settings.model.variances,
                          match.min_positives, match.min_positive_iou)


def augment(image: tf.Tensor, boxes: tf.Tensor, labels: tf.Tensor, settings: Settings,
            seed: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Training augmentation of one decoded example (``settings.augment`` at ``settings.model.input_size``);
    ``seed`` [2] (int64) makes it repeatable.

    Returns (float image [h, w, 3] normalised, boxes [N, 4] normalised corner form, labels [N]).
    """
    seeds = _seeds(seed, 8)
    options = settings.augment
    height, width = settings.model.input_size
    aspect = width / height
    # a share expand_prob of the images is zoomed out; of the rest, crop_prob is cropped (zoomed in) and the
    # others stay whole, at the scale inference sees them
    expand = tf.constant(False)   # zoom-out off (expand_prob 0 or expand_max_ratio 1): every image may be cropped
    if options.expand_prob > 0 and options.expand_max_ratio > 1:
        expand = tf.random.stateless_uniform([], seeds[6]) < options.expand_prob
        image, boxes = tf.cond(expand, lambda: random_expand(image, boxes, options.expand_max_ratio, seed=seeds[7]),
                               lambda: (image, boxes))
    if options.using_crop:
        crop = tf.logical_and(tf.logical_not(expand), tf.random.stateless_uniform([], seeds[5]) < options.crop_prob)
        image, boxes, labels = tf.cond(
            crop, lambda: random_crop_whole_faces(image, boxes, labels, aspect, seeds[0]),
            lambda: (image, boxes, labels))
    if options.using_bin:
        pad = tf.random.stateless_uniform([], seeds[1]) < 0.5
        image, boxes = tf.cond(pad, lambda: pad_to_aspect(image, boxes, aspect, seed=seeds[2]),
                               lambda: (image, boxes))
    image = resize_image(image, (height, width))
    if options.using_flip:
        image, boxes = random_flip(image, boxes, seeds[3])
    if options.using_distort:
        image = random_distort(image, seeds[4])
    image = normalize_image(image)   # always: inference feeds the network [-1, 1] inputs
    image.set_shape([height, width, 3])
    return image, boxes, labels


def load_dataset(tfrecord_path: str | Sequence[str], settings: Settings, training: bool, batch_size: int | None = None,
                 shuffle: bool | None = None, repeat: bool = False, cache: bool = False, seed: int | None = None,
                 shard: tuple[int, int] | None = None, shuffle_buffer: int = 1024) -> tf.data.Dataset:
    """Batched (images [B, h, w, 3] float32, targets [B, P, 5]) dataset for ``tfrecord_path`` (one path or a
    list: several sources are read as one set; a path listed twice is read twice an epoch), prepared with
    ``settings`` (augmentation, model spec, matching; ``batch_size`` default ``settings.train.batch_size``).

    Args:
        training: apply augmentation (and shuffle, unless ``shuffle`` says otherwise).
        cache: keep the decoded records in memory after the first epoch (about 1 MB per image).
        seed: makes shuffling and augmentation repeatable (the same batches for the same seed).
        shard: (number of shards, index) to read only every n-th record, for multi-worker training.
        shuffle_buffer: records shuffled at once; as many as the records mixes several sources evenly.
    """
    priors = tf.constant(priors_from_config(settings.model))
    batch_size = batch_size or settings.train.batch_size
    shuffle = training if shuffle is None else shuffle

    def to_training_pair(element_seed, image, boxes, labels, _difficult):
        if training:
            image, boxes, labels = augment(image, boxes, labels, settings, element_seed)
        else:
            image, boxes = prepare_for_evaluation(image, boxes, settings.model.input_size, settings.detect.keep_aspect)
        return image, encode_example_targets(boxes, labels, priors, settings)

    dataset = tf.data.TFRecordDataset(tfrecord_path)
    if shard:
        dataset = dataset.shard(*shard)
    dataset = dataset.map(parse_example, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    # one stateless seed pair per element: augmentation does not depend on thread timing
    element_seeds = tf.data.Dataset.random(seed=seed).batch(2)
    dataset = tf.data.Dataset.zip((element_seeds, dataset)).map(
        lambda element_seed, example: to_training_pair(element_seed, *example),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=seed is not None or not training)
    return dataset.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)
