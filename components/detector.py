"""Turning raw network output into detections, and a Detector that runs a saved model on images.

``postprocess`` is the one post-processing path (decode + softmax + class-wise NMS, all vectorised) used
by training-time validation, inference and mAP evaluation, whatever runtime produced the predictions.
"""
import json
import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from components.box_utils import batched_nms, decode_boxes
from components.config import cfg as default_cfg
from components.prior_box import priors_from_config

MODEL_CONFIG_KEYS = ("input_size", "labels_list", "min_sizes", "steps", "variances", "clip", "network",
                     "base_channel")
SIDECAR_SUFFIX = ".json"
MODEL_EXTENSIONS = (".keras",)


class ModelLoadError(ValueError):
    """A model path that cannot be loaded; the message names the path and the problem."""


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


def postprocess(predictions, priors, cfg, score_threshold, nms_threshold=None, max_detections=None):
    """Decode a batch of raw predictions into detections.

    Args:
        predictions: [B, P, 4 + C] network output (offsets, class logits incl. background).
        priors: [P, 4] centre form, normalised.
    Returns:
        (boxes [B, K, 4] normalised corner form, scores [B, K], class ids [B, K] in 1..C-1, valid [B]).
    """
    predictions = tf.cast(predictions, tf.float32)
    boxes = decode_boxes(predictions[..., :4], priors, cfg["variances"])
    scores = tf.nn.softmax(predictions[..., 4:], axis=-1)[..., 1:]
    boxes, scores, classes, valid = batched_nms(
        boxes, scores, score_threshold,
        cfg["nms_threshold"] if nms_threshold is None else nms_threshold,
        cfg["max_number_keep"] if max_detections is None else max_detections)
    return boxes, scores, classes + 1, valid


def model_config_path(model_file):
    """Path of the JSON file that records the config a model file was trained with."""
    return os.path.splitext(model_file)[0] + SIDECAR_SUFFIX


def save_model_config(model_file, cfg):
    """Write the settings needed to use ``model_file`` (input size, labels, anchors) beside it, atomically."""
    path = model_config_path(model_file)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({key: cfg[key] for key in MODEL_CONFIG_KEYS}, handle, indent=2)
    os.replace(temporary, path)


def load_model_config(model_file, base_cfg=None):
    """``base_cfg`` (default: components/config.py) updated with the JSON saved beside ``model_file``, if any."""
    config = dict(base_cfg or default_cfg)
    path = model_config_path(model_file)
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as handle:
                saved = json.load(handle)
        except (OSError, json.JSONDecodeError) as error:
            raise ModelLoadError(f"{path}: unreadable model config ({error})") from None
        config.update({key: tuple(value) if key == "input_size" else value for key, value in saved.items()})
    return config


def resolve_model_path(model_path):
    """The model file for ``model_path``: the file itself, or for a folder the newest model file in it."""
    if os.path.isdir(model_path):
        candidates = [os.path.join(model_path, name) for name in os.listdir(model_path)
                      if name.endswith(MODEL_EXTENSIONS)]
        if not candidates:
            raise ModelLoadError(f"{model_path}: folder holds no model file ({', '.join(MODEL_EXTENSIONS)})")
        return max(candidates, key=os.path.getmtime)
    if not os.path.exists(model_path):
        raise ModelLoadError(f"{model_path}: model not found")
    return model_path



def load_keras_model(model_file):
    """Load a ``.keras`` file; raises ModelLoadError naming the file when it is not a loadable model."""
    try:
        return tf.keras.models.load_model(model_file, compile=False)
    except Exception as error:  # Keras raises many types for a bad file
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelLoadError(f"{model_file}: not a loadable Keras model ({message})") from None


class Detector:
    """A trained model with its config: image in, detections in pixels out."""

    def __init__(self, model, cfg):
        self.model = model
        self.cfg = cfg
        self.input_size = tuple(cfg["input_size"])
        self.priors = tf.constant(priors_from_config(cfg, self.input_size))
        self._predict = tf.function(lambda images: self.model(images, training=False), reduce_retracing=True)

    @classmethod
    def from_path(cls, model_path, base_cfg=None):
        """Load a model file, or the newest model file in a folder, with its saved config."""
        model_file = resolve_model_path(model_path)
        return cls(load_keras_model(model_file), load_model_config(model_file, base_cfg))

    def predict_raw(self, images):
        """Raw predictions [B, P, 4 + C] for preprocessed images [B, h, w, 3]."""
        return self._predict(tf.convert_to_tensor(images, tf.float32))

    def detect(self, image_rgb, score_threshold=None):
        """Detect faces in one uint8 RGB image [H, W, 3]; returns Detections in that image's pixels."""
        return self.detect_batch([image_rgb], score_threshold)[0]

    def detect_batch(self, images_rgb, score_threshold=None):
        """Detect faces in a list of uint8 RGB images of any sizes; one Detections per image."""
        from dataset.tf_dataset_preprocess import preprocess_for_inference
        batch = tf.stack([preprocess_for_inference(image, self.input_size) for image in images_rgb])
        threshold = self.cfg["score_threshold"] if score_threshold is None else score_threshold
        boxes, scores, classes, valid = postprocess(self.predict_raw(batch), self.priors, self.cfg, threshold)
        results = []
        for index, image in enumerate(images_rgb):
            count = int(valid[index])
            height, width = image.shape[:2]
            pixels = boxes[index, :count].numpy() * np.array([width, height, width, height], np.float32)
            pixels = np.clip(pixels, 0, [width, height, width, height])
            results.append(Detections(pixels, scores[index, :count].numpy(), classes[index, :count].numpy(),
                                      list(self.cfg["labels_list"])))
        return results
