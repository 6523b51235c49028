"""``Detector``: a saved model of any format with its settings; images in, detections in pixels out.

The model runs through the adapters of ``runtime/adapters.py`` (picked by file type), images are
letterboxed by ``runtime/preprocessing.py``, and ``runtime/postprocessing.py`` decodes, merges the flip
test and suppresses; ``runtime/model_files.py`` finds the model file and reads its spec.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from components.prior_box import aligned_input_size, mirror_index, priors_from_config
from runtime.adapters import KerasRuntime, ModelLoadError, Runtime, load_runtime
from runtime.model_files import load_model_config, resolve_model_path
from runtime.postprocessing import (
    large_detections,
    merge_detections,
    merge_mirrored_predictions,
    nonempty_detections,
    postprocess,
    small_detections,
    unbatch_detections,
)
from runtime.preprocessing import boxes_to_pixels, image_pixels_per_input_pixel, pad_to_size, preprocess_images

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from components.config import Settings
    from runtime.postprocessing import Detections


class Detector:
    """A trained model (any runtime of ``runtime/adapters.py``) with its settings: image in, detections in
    pixels out."""

    def __init__(self, model: Any, settings: Settings, trained_size: Sequence[int] | None = None) -> None:
        """``model``: a runtime adapter (a ``runtime.adapters.Runtime``) or a Keras model; ``settings``: its model
        spec (``settings.model``) and how to detect (``settings.detect``). ``trained_size``: the (h, w) the model
        was trained at (default ``settings.model.input_size``). A Keras model runs on a canvas of
        ``network_size`` (``aligned_input_size``: the image letterboxed to ``input_size`` at its top left) so
        that its maps sit on the image as in training; an export runs at the size it was exported at."""
        self.settings = settings
        detect = settings.detect
        self.input_size = tuple(settings.model.input_size)
        self.trained_size = tuple(trained_size or self.input_size)
        self.keep_aspect = bool(detect.keep_aspect)
        is_keras = isinstance(model, KerasRuntime) or not isinstance(model, Runtime)
        self.network_size = (aligned_input_size(self.input_size, self.trained_size, settings.model.steps) if is_keras
                             else self.input_size)
        if not isinstance(model, Runtime):
            model = KerasRuntime(model, self.network_size)
        elif isinstance(model, KerasRuntime) and model.input_size != self.network_size:   # a Keras model's runtime
            model = KerasRuntime(model.model, self.network_size, model.path)
        self.runtime = model
        self.model_path = self.runtime.path   # the model file or folder, when loaded from one
        self.priors = tf.constant(priors_from_config(settings.model, self.network_size))
        # the flip test needs every prior's mirror image to be a prior too (each step divides the network
        # width, as at 240x320); on other grids it is off: ``flip_test`` says what detection does
        self.mirror = None
        if detect.flip_test:
            try:
                self.mirror = mirror_index(self.priors.numpy())
            except ValueError:
                pass
        self.flip_test = self.mirror is not None
        # the multi-scale test: a Detector per other scale, on the same Keras model (exports run one size)
        self.rescaled = [self._at_scale(scale) for scale in detect.test_scales[1:]
                         if isinstance(self.runtime, KerasRuntime)]
        self.test_scales = [1] + [scale for scale, _ in self.rescaled]
        # settings asked for that this model cannot honour, each a one-line note for the scripts to print
        self.notes = []
        if detect.flip_test and not self.flip_test:
            self.notes.append(f"note: flip test off: the priors at {self.network_size[0]}x{self.network_size[1]} "
                              "are not mirror images of each other (a step does not divide the width)")
        if len(detect.test_scales) > len(self.test_scales):
            self.notes.append(f"note: test_scales {list(detect.test_scales)} -> [1]: {self.model_path or 'this model'}"
                              " is an export, which runs one input size (the .keras model runs every scale)")

    def _at_scale(self, scale):
        """(scale, Detector of the same Keras model at ``scale`` times this input size, one scale)."""
        size = (round(self.input_size[0] * scale), round(self.input_size[1] * scale))
        one_scale = self.settings.replace(input_size=size, test_scales=(1,))
        return scale, Detector(self.runtime, one_scale, self.trained_size)

    @property
    def format(self) -> str:
        """'keras', 'saved_model', 'tflite' or 'onnx'."""
        return self.runtime.format

    @classmethod
    def from_path(cls, model_path: str, base: Settings | None = None,
                  input_size: Sequence[int] | None = None, **runtime_options: Any) -> Detector:
        """Load a model file (runtime picked by its type), or a folder's default model (``resolve_model_path``),
        with its model spec over ``base`` (default: the defaults; its inference settings are kept).
        ``input_size`` (h, w) runs the model at another size than it was trained at (a Keras model runs at any
        size; an export only at the size it was exported at). ``runtime_options``: ``num_threads``, ``xnnpack``
        (see ``load_runtime``)."""
        model_file = resolve_model_path(model_path)
        settings = load_model_config(model_file, base)
        trained_size = tuple(settings.model.input_size)
        if input_size is not None:
            settings = settings.replace(input_size=tuple(input_size))
        network_size = aligned_input_size(settings.model.input_size, trained_size, settings.model.steps)
        runtime = load_runtime(model_file, network_size, **runtime_options)
        runtime_size = runtime.input_size
        if (not isinstance(runtime, KerasRuntime) and runtime_size is not None
                and tuple(runtime_size) != tuple(settings.model.input_size)):
            wanted = "--input_size" if input_size is not None else "its config says input_size"
            raise ModelLoadError(f"{model_file}: the model takes {runtime_size[0]}x{runtime_size[1]} images but "
                                 f"{wanted} {tuple(settings.model.input_size)} (export the model at that size: "
                                 "export.py --input_size, or run the .keras model)")
        return cls(runtime, settings, trained_size)

    def preprocess(self, images_rgb: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 RGB images of any sizes -> network input [B, H, W, 3] float32 (``network_size``; the image in
        its top-left ``input_size``)."""
        return pad_to_size(preprocess_images(images_rgb, self.input_size, self.keep_aspect), self.network_size)

    def to_pixels(self, boxes: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
        """Boxes [K, 4] normalised to ``input_size`` -> pixels of an image of ``image_shape``."""
        return boxes_to_pixels(boxes, image_shape, self.input_size, self.keep_aspect)

    def predict_raw(self, images: np.ndarray) -> np.ndarray:
        """Predictions [B, P, 4 + C] (numpy float32) for preprocessed images [B, h, w, 3] (``input_size``, then
        padded to ``network_size``, or already that size): offsets, then class logits; with ``flip_test`` the
        images and their mirror images go through the model as one batch and the predictions are averaged, the
        class columns then being probabilities (``merge_mirrored_predictions``; :meth:`postprocess` knows
        which)."""
        images = pad_to_size(images, self.network_size)
        if not self.flip_test:
            return self.runtime.predict_raw(images)
        both = self.runtime.predict_raw(np.concatenate([images, images[:, :, ::-1]]))
        return merge_mirrored_predictions(both[:len(images)], both[len(images):], self.mirror)  # type: ignore[arg-type]

    def postprocess(self, predictions: np.ndarray,
                    score_threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``runtime.postprocessing.postprocess`` of :meth:`predict_raw`'s output with this model's priors
        and settings, as numpy: (boxes [B, K, 4] normalised to the input, scores, class ids, valid [B])."""
        threshold = self.settings.detect.score_threshold if score_threshold is None else score_threshold
        boxes, *rest = (value.numpy() for value in
                        postprocess(predictions, self.priors, self.settings, threshold, probabilities=self.flip_test))
        return (boxes * self._network_per_input, *rest)

    @property
    def _network_per_input(self):
        """(x, y, x, y) factors from boxes normalised to ``network_size`` to boxes normalised to ``input_size``."""
        (net_h, net_w), (in_h, in_w) = self.network_size, self.input_size
        return np.array([net_w / in_w, net_h / in_h, net_w / in_w, net_h / in_h], np.float32)

    def detections(self, predictions: np.ndarray, image_shapes: Sequence[Sequence[int]] | None = None,
                   score_threshold: float | None = None) -> list[Detections]:
        """One ``Detections`` per row of ``predictions``: boxes in pixels of each image of ``image_shapes``
        (those wholly in the letterbox padding dropped), or without them normalised to the network input
        (corner form)."""
        outputs = self.postprocess(predictions, score_threshold)
        if image_shapes is None:
            return unbatch_detections(outputs, self.settings.model.labels_list)
        found = unbatch_detections(outputs, self.settings.model.labels_list,
                                   lambda boxes, index: self.to_pixels(boxes, image_shapes[index]))
        return [nonempty_detections(detections) for detections in found]

    def detect_inputs(self, inputs: np.ndarray, score_threshold: float | None = None) -> list[Detections]:
        """Detections of preprocessed network inputs [B, h, w, 3] (letterboxed to ``input_size``, in [-1, 1]);
        boxes normalised to the input; one scale. What ``mAP.evaluation.evaluate`` runs."""
        return self.detections(self.predict_raw(inputs), None, score_threshold)

    def detect(self, image_rgb: np.ndarray, score_threshold: float | None = None) -> Detections:
        """Detect faces in one uint8 RGB image [H, W, 3]; returns Detections in that image's pixels."""
        return self.detect_batch([image_rgb], score_threshold)[0]

    def detect_batch(self, images_rgb: Sequence[np.ndarray], score_threshold: float | None = None) -> list[Detections]:
        """Detect faces in a list of uint8 RGB images of any sizes; one Detections per image. With the
        multi-scale test (``test_scales``), the faces smaller than ``test_small_face`` pixels at this input size
        found at each larger scale, and those of at least ``test_large_face`` pixels found at each smaller scale,
        join those of this one (class-wise NMS)."""
        shapes = [np.shape(image) for image in images_rgb]
        found = self.detections(self.predict_raw(self.preprocess(images_rgb)), shapes, score_threshold)
        detect = self.settings.detect
        for scale, detector in self.rescaled:
            other = detector.detect_batch(images_rgb, score_threshold)
            found = [merge_detections([mine, self._faces_for_scale(theirs, scale, shape)],
                                      detect.nms_threshold, detect.max_number_keep,
                                      detect.box_voting, detect.soft_nms_sigma)
                     for mine, theirs, shape in zip(found, other, shapes)]
        return found

    def _faces_for_scale(self, detections, scale, image_shape):
        """What a pass at ``scale`` adds: small faces from a larger scale, large faces from a smaller one."""
        if scale > 1:
            return small_detections(detections, self.small_face_pixels(image_shape))
        return large_detections(detections, self.large_face_pixels(image_shape))

    def small_face_pixels(self, image_shape: Sequence[int]) -> float:
        """``test_small_face`` (pixels at this input size) in pixels of an image of ``image_shape``."""
        return self._in_image_pixels(self.settings.detect.test_small_face, image_shape)

    def large_face_pixels(self, image_shape: Sequence[int]) -> float:
        """``test_large_face`` (pixels at this input size) in pixels of an image of ``image_shape``."""
        return self._in_image_pixels(self.settings.detect.test_large_face, image_shape)

    def _in_image_pixels(self, length, image_shape):
        """``length`` (pixels at this input size) in pixels of an image of ``image_shape``."""
        return length * image_pixels_per_input_pixel(image_shape, self.input_size, self.keep_aspect)
