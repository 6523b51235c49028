"""Turning raw network output into detections, and a Detector that runs a saved model on images.

``postprocess`` is the one post-processing path (decode + softmax + class-wise NMS, all vectorised in one
compiled batched call) used by training-time validation, inference, benchmarks and mAP evaluation, whatever
runtime produced the predictions. ``Detector`` runs any exported format (``.keras``, SavedModel folder,
``.tflite``, ``.onnx``) through the adapters of ``components/runtimes.py``, picked by file type.
"""
import json
import math
import os
from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow as tf

from components.atomic_io import write_text_atomically
from components.box_utils import batched_nms, decode_boxes
from components.config import cfg as default_cfg
from components.prior_box import mirror_index, priors_from_config
from components.runtimes import (ModelLoadError, is_saved_model_dir, load_keras_model,  # noqa: F401 (re-exported)
                                 load_runtime, KerasRuntime)

MODEL_CONFIG_KEYS = ("input_size", "labels_list", "min_sizes", "steps", "variances", "clip", "network",
                     "base_channel")
SIDECAR_SUFFIX = ".json"
INNER_CONFIG_NAME = "model_config.json"   # the copy of the config kept inside a SavedModel folder
MODEL_EXTENSIONS = (".keras",)            # what a folder passed as a model path is searched for


@dataclass
class Detections:
    """Detections of one image: boxes [K, 4] corner form in pixels, scores [K], class ids [K] (1..C-1)."""
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    class_names: list

    def __len__(self):
        return len(self.scores)

    def labels(self):
        """Class name of each detection."""
        return [self.class_names[c] for c in self.classes]


@tf.function(reduce_retracing=True)
def _postprocess_graph(predictions, priors, variances, score_threshold, iou_threshold, max_detections):
    """Compiled body of :func:`postprocess` (thresholds and sizes are tensors, so one trace serves all)."""
    scores = tf.nn.softmax(predictions[..., 4:], axis=-1)[..., 1:]               # [B, P, C-1]
    # Only priors whose best class score reaches the threshold can be kept by NMS: take the
    # smallest k that holds all of them in every image of the batch, in their original order (so
    # ties are broken exactly as on the full set), and decode and suppress only those.
    best = tf.reduce_max(scores, axis=-1)                                          # [B, P]
    above = tf.reduce_sum(tf.cast(best >= score_threshold, tf.int32), axis=-1)
    k = tf.maximum(tf.reduce_max(above), 1)
    candidates = tf.sort(tf.math.top_k(best, k=k, sorted=False).indices, axis=-1)  # [B, k]
    offsets = tf.gather(predictions[..., :4], candidates, batch_dims=1)
    boxes = decode_boxes(offsets, tf.gather(priors, candidates), variances)
    return batched_nms(boxes, tf.gather(scores, candidates, batch_dims=1), score_threshold, iou_threshold,
                       max_detections)


def postprocess(predictions, priors, cfg, score_threshold, nms_threshold=None, max_detections=None):
    """Decode a batch of raw predictions into detections.

    Class-wise NMS (``tf.image.combined_non_max_suppression``) runs only on the priors whose best class
    score reaches ``score_threshold``; the others could never be kept, so the detections are those of NMS
    over all priors.

    Args:
        predictions: [B, P, 4 + C] network output (offsets, class logits incl. background), tensor or numpy.
        priors: [P, 4] centre form, normalised.
    Returns:
        (boxes [B, K, 4] normalised corner form, scores [B, K], class ids [B, K] in 1..C-1, valid [B]).
    """
    predictions = tf.convert_to_tensor(predictions)
    if predictions.dtype != tf.float32:
        predictions = tf.cast(predictions, tf.float32)
    boxes, scores, classes, valid = _postprocess_graph(
        predictions, tf.convert_to_tensor(priors, tf.float32),
        tf.constant(cfg["variances"], tf.float32), tf.constant(score_threshold, tf.float32),
        tf.constant(cfg["nms_threshold"] if nms_threshold is None else nms_threshold, tf.float32),
        tf.constant(cfg["max_number_keep"] if max_detections is None else max_detections, tf.int32))
    return boxes, scores, classes + 1, valid


def merge_mirrored_predictions(predictions, mirrored_predictions, mirror):
    """Average raw predictions of images with those of the same images flipped left-right (flip test).

    Args:
        predictions, mirrored_predictions: [B, P, 4 + C] numpy network outputs (offsets, class logits) of the
            images and of their mirror images.
        mirror: [P] index of each prior's mirror image (``components.prior_box.mirror_index``).
    Returns:
        [B, P, 4 + C] float32 in the same coding: offsets averaged once the mirrored ones are brought back
        (prior ``mirror[i]``, x offset negated), class logits the log of the mean softmax probabilities (so
        ``postprocess`` sees the mean probability of each class).
    """
    back = np.asarray(mirrored_predictions, np.float32)[:, mirror].copy()
    back[..., 0] *= -1.0
    predictions = np.asarray(predictions, np.float32)
    merged = np.empty_like(predictions)
    merged[..., :4] = (predictions[..., :4] + back[..., :4]) / 2.0

    def softmax(logits):
        exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return exp / exp.sum(axis=-1, keepdims=True)

    probabilities = (softmax(predictions[..., 4:]) + softmax(back[..., 4:])) / 2.0
    merged[..., 4:] = np.log(np.maximum(probabilities, 1e-30))
    return merged


def letterbox_shape(height, width, input_size):
    """(h, w) in pixels of an image of ``height`` x ``width`` padded at the bottom / right to the aspect ratio of
    ``input_size`` (h, w), each side rounded up (as ``dataset.tf_dataset_preprocess.pad_to_aspect``)."""
    aspect = input_size[1] / input_size[0]
    new_width = max(width, math.ceil(height * aspect))
    return max(height, math.ceil(new_width / aspect)), new_width


def preprocess_images(images_rgb, input_size, keep_aspect=True):
    """uint8 RGB images [H, W, 3] of any sizes -> network input float32 [B, h, w, 3] in [-1, 1].

    With ``keep_aspect`` each image is first padded (value 127) at the bottom / right to the input aspect ratio
    (see ``letterbox_shape``), so faces are not stretched. The same as
    ``dataset.tf_dataset_preprocess.preprocess_for_inference`` (bilinear resize with half-pixel centres, no
    antialiasing, then (x - 127.5) / 127.5) to within 1e-4, done with OpenCV because it is several times
    faster per frame.
    """
    height, width = input_size
    batch = np.empty((len(images_rgb), height, width, 3), np.float32)
    for index, image in enumerate(images_rgb):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
        if keep_aspect:
            padded_h, padded_w = letterbox_shape(image.shape[0], image.shape[1], input_size)
            image = cv2.copyMakeBorder(image, 0, padded_h - image.shape[0], 0, padded_w - image.shape[1],
                                       cv2.BORDER_CONSTANT, value=(127, 127, 127))
        image = image.astype(np.float32)
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        np.multiply(image, 1.0 / 127.5, out=batch[index])
    batch -= 1.0
    return batch


def boxes_to_pixels(boxes, image_shape, input_size, keep_aspect=True):
    """Boxes [K, 4] normalised to the network input (corner form) -> pixels of the original image
    (``image_shape`` = (H, W, ...)), clipped to it; undoes the letterbox of ``preprocess_images``."""
    height, width = image_shape[:2]
    frame_h, frame_w = letterbox_shape(height, width, input_size) if keep_aspect else (height, width)
    pixels = np.asarray(boxes, np.float32) * np.array([frame_w, frame_h, frame_w, frame_h], np.float32)
    return np.clip(pixels, 0, np.array([width, height, width, height], np.float32))


def model_config_path(model_file):
    """Path of the JSON file that records the config a model was trained with: beside the file or folder."""
    return os.path.splitext(os.path.normpath(model_file))[0] + SIDECAR_SUFFIX


def save_model_config(model_file, cfg):
    """Write the settings needed to use ``model_file`` (input size, labels, anchors) beside it, atomically.

    For a SavedModel folder a copy also goes inside it (``model_config.json``), so the folder alone loads.
    """
    text = json.dumps({key: cfg[key] for key in MODEL_CONFIG_KEYS}, indent=2)
    write_text_atomically(model_config_path(model_file), text)
    if os.path.isdir(model_file):
        write_text_atomically(os.path.join(model_file, INNER_CONFIG_NAME), text)


def load_model_config(model_file, base_cfg=None):
    """``base_cfg`` (default: components/config.py) updated with the JSON saved beside ``model_file`` (or, for
    a SavedModel folder without one, inside it), if any."""
    config = dict(base_cfg or default_cfg)
    path = model_config_path(model_file)
    inner = os.path.join(model_file, INNER_CONFIG_NAME)
    if not os.path.isfile(path) and os.path.isdir(model_file) and os.path.isfile(inner):
        path = inner
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as handle:
                saved = json.load(handle)
            if not isinstance(saved, dict):
                raise ValueError("expected a JSON object")
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"{path}: unreadable model config ({error})") from None
        # only the model's own keys: inference settings (thresholds, keep_aspect) stay the caller's
        config.update({key: tuple(value) if key == "input_size" else value for key, value in saved.items()
                       if key in MODEL_CONFIG_KEYS})
    return config


def resolve_model_path(model_path):
    """The model for ``model_path``: the file itself, a SavedModel folder itself, or for any other folder
    the newest ``.keras`` file in it."""
    if os.path.isdir(model_path) and not is_saved_model_dir(model_path):
        candidates = [os.path.join(model_path, name) for name in os.listdir(model_path)
                      if name.endswith(MODEL_EXTENSIONS)]
        if not candidates:
            raise ModelLoadError(f"{model_path}: folder holds no model file ({', '.join(MODEL_EXTENSIONS)}) "
                                 "and is not a SavedModel folder")
        return max(candidates, key=os.path.getmtime)
    if not os.path.exists(model_path):
        raise ModelLoadError(f"{model_path}: model not found")
    return model_path


class Detector:
    """A trained model (any runtime of ``components/runtimes.py``) with its config: image in, detections in
    pixels out."""

    def __init__(self, model, cfg):
        """``model``: a runtime adapter (anything with ``predict_raw``) or a Keras model."""
        self.cfg = cfg
        self.input_size = tuple(cfg["input_size"])
        self.keep_aspect = bool(cfg["keep_aspect"])
        self.runtime = model if hasattr(model, "predict_raw") else KerasRuntime(model, self.input_size)
        self.model_path = getattr(self.runtime, "path", None)   # the model file or folder, when loaded from one
        self.priors = tf.constant(priors_from_config(cfg, self.input_size))
        # the flip test needs every prior's mirror image to be a prior too (each step divides the input
        # width, as at 240x320); on other grids it is off: ``flip_test`` says what detection does
        self.mirror = None
        if cfg.get("flip_test", False):
            try:
                self.mirror = mirror_index(self.priors.numpy())
            except ValueError:
                pass
        self.flip_test = self.mirror is not None

    @property
    def format(self):
        """'keras', 'saved_model', 'tflite' or 'onnx'."""
        return self.runtime.format

    @classmethod
    def from_path(cls, model_path, base_cfg=None, input_size=None, **runtime_options):
        """Load a model file (runtime picked by its type), or the newest ``.keras`` file in a folder, with its
        saved config; ``input_size`` (h, w) replaces the saved one (a .keras model is fully convolutional).
        ``runtime_options``: ``num_threads``, ``xnnpack`` (see ``load_runtime``)."""
        model_file = resolve_model_path(model_path)
        cfg = load_model_config(model_file, base_cfg)
        if input_size is not None:
            cfg["input_size"] = tuple(input_size)
        runtime = load_runtime(model_file, tuple(cfg["input_size"]), **runtime_options)
        runtime_size = getattr(runtime, "input_size", None)
        if runtime_size is not None and tuple(runtime_size) != tuple(cfg["input_size"]):
            raise ModelLoadError(f"{model_file}: the model takes {runtime_size[0]}x{runtime_size[1]} images but "
                                 f"its config says input_size {tuple(cfg['input_size'])}")
        return cls(runtime, cfg)

    def preprocess(self, images_rgb):
        """uint8 RGB images of any sizes -> network input [B, h, w, 3] float32."""
        return preprocess_images(images_rgb, self.input_size, self.keep_aspect)

    def to_pixels(self, boxes, image_shape):
        """Boxes [K, 4] normalised to the network input -> pixels of an image of ``image_shape``."""
        return boxes_to_pixels(boxes, image_shape, self.input_size, self.keep_aspect)

    def predict_raw(self, images):
        """Raw predictions [B, P, 4 + C] (numpy float32) for preprocessed images [B, h, w, 3]; with
        ``flip_test`` the images and their mirror images go through the model as one batch and their
        predictions are averaged (``merge_mirrored_predictions``)."""
        if not self.flip_test:
            return self.runtime.predict_raw(images)
        images = np.asarray(images, np.float32)
        both = self.runtime.predict_raw(np.concatenate([images, images[:, :, ::-1]]))
        return merge_mirrored_predictions(both[:len(images)], both[len(images):], self.mirror)

    def detect(self, image_rgb, score_threshold=None):
        """Detect faces in one uint8 RGB image [H, W, 3]; returns Detections in that image's pixels."""
        return self.detect_batch([image_rgb], score_threshold)[0]

    def detect_batch(self, images_rgb, score_threshold=None):
        """Detect faces in a list of uint8 RGB images of any sizes; one Detections per image."""
        threshold = self.cfg["score_threshold"] if score_threshold is None else score_threshold
        predictions = self.predict_raw(self.preprocess(images_rgb))
        boxes, scores, classes, valid = (value.numpy() for value in
                                         postprocess(predictions, self.priors, self.cfg, threshold))
        results = []
        for index, image in enumerate(images_rgb):
            count = int(valid[index])
            pixels = self.to_pixels(boxes[index, :count], image.shape)
            results.append(Detections(pixels, scores[index, :count], classes[index, :count],
                                      list(self.cfg["labels_list"])))
        return results


def read_validation_records(tfrecord_path, limit=None):
    """(uint8 RGB image, boxes [N, 4] normalised corner form, labels [N], difficult [N] bool) per record."""
    from dataset.tf_dataset_preprocess import FEATURES, parse_example
    if not os.path.isfile(tfrecord_path):
        raise FileNotFoundError(f"{tfrecord_path}: TFRecord not found")

    def parse(serialized):
        image, boxes, labels = parse_example(serialized)
        difficult = tf.io.parse_single_example(
            serialized, {"image/object/difficult": FEATURES["image/object/difficult"]})["image/object/difficult"]
        return image, boxes, labels, tf.cast(tf.sparse.to_dense(difficult), tf.bool)

    dataset = tf.data.TFRecordDataset(tfrecord_path).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    if limit:
        dataset = dataset.take(limit)
    for image, boxes, labels, difficult in dataset.prefetch(4).as_numpy_iterator():
        if len(difficult) != len(labels):
            difficult = np.zeros(len(labels), bool)
        yield image, boxes, labels, difficult


def evaluate_tfrecord(detector, tfrecord_path, score_threshold=0.01, batch_size=16, limit=None, progress=False):
    """VOC AP@0.5 of ``detector`` on a TFRecord (e.g. the validation split), through the shared
    preprocessing, ``postprocess`` and ``mAP.compute_mAP.evaluate_detections``, as training validation does.

    Returns mAP.compute_mAP.Evaluation (``mean_ap`` in [0, 1]). Raises ClassListError (a ValueError) when
    the TFRecord's stored class list is not the model's.
    """
    from tqdm import tqdm

    from components.class_list import check_tfrecord_classes
    check_tfrecord_classes(tfrecord_path, detector.cfg["labels_list"], detector.model_path or "the model")

    from mAP.compute_mAP import Detections as EvalDetections, GroundTruth, evaluate_detections
    names = list(detector.cfg["labels_list"])
    ground_truth, detections = {}, {}

    def flush(batch):
        predictions = detector.predict_raw(detector.preprocess([item[1] for item in batch]))
        boxes, scores, classes, valid = (value.numpy() for value in
                                         postprocess(predictions, detector.priors, detector.cfg, score_threshold))
        for row, (key, image, gt_boxes, gt_labels, difficult) in enumerate(batch):
            ground_truth[key] = GroundTruth.from_class_ids(gt_labels, gt_boxes, difficult, names)
            count = int(valid[row])
            height, width = image.shape[:2]
            normalised = detector.to_pixels(boxes[row, :count], image.shape) / [width, height, width, height]
            detections[key] = EvalDetections([names[label] for label in classes[row, :count]],
                                             scores[row, :count], normalised)

    batch = []
    records = read_validation_records(tfrecord_path, limit)
    for index, (image, gt_boxes, gt_labels, difficult) in enumerate(
            tqdm(records, desc="mAP", unit="img", leave=False, disable=not progress)):
        batch.append((str(index), image, gt_boxes, gt_labels, difficult))
        if len(batch) == batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    if not ground_truth:
        raise ValueError(f"{tfrecord_path}: no records")
    return evaluate_detections(ground_truth, detections, iou_threshold=0.5)
