"""Adapter for the AIZOOTech FaceMaskDetection reference model, for benchmarks and side-by-side evaluation only
(the project never ships it or trains from it; see ../shared/reference/README.md).

The model takes an RGB image stretched to 260x260 with values in [0, 1] and gives SSD offsets [1, 5972, 4]
(variances 0.1 / 0.2, centre form) and sigmoid class scores [1, 5972, 2] (index 0 mask, 1 no mask) against the
anchors of :func:`reference_priors`. :class:`AizooReference` turns them into the project's ``Detections`` (class
ids of ``labels_list`` = background, mask, unmask) with the project's box decoding and a class-agnostic NMS, as
the reference is published, so ``mAP/detect.py``'s writers and ``mAP/compute_mAP.py`` score it exactly as ours.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import cv2
import numpy as np

from components.box_utils import class_agnostic_nms, decode_boxes
from components.config import DEFAULT_SETTINGS
from runtime.adapters import ModelLoadError, tflite_interpreter
from runtime.postprocessing import Detections

if TYPE_CHECKING:
    from collections.abc import Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_REFERENCE = os.path.join(os.path.dirname(REPO_ROOT), "shared", "reference", "aizoo_face_mask_detection.tflite")
INPUT_SIZE = (260, 260)
FEATURE_MAPS = (33, 17, 9, 5, 3)
ANCHOR_SIZES = ((0.04, 0.056), (0.08, 0.11), (0.16, 0.22), (0.32, 0.45), (0.64, 0.72))
ASPECT_RATIOS = (1.0, 0.62, 0.42)
VARIANCES = (0.1, 0.2)
NMS_IOU = 0.4
OUR_CLASS_OF_OUTPUT = np.array([1, 2])   # output index 0 (mask) -> our class 1, index 1 (no mask) -> 2


def reference_priors() -> np.ndarray:
    """The reference's 5972 anchors [P, 4], normalised centre form, in the order of its outputs: per map, cells
    row-major (centres at (i + 0.5) / n); per cell each size at ratio 1, then the first size at 0.62 and 0.42."""
    priors: list[tuple[float, float, float, float]] = []
    for size_count, sizes in zip(FEATURE_MAPS, ANCHOR_SIZES):
        shapes = [(size, size) for size in sizes]
        shapes += [(sizes[0] * np.sqrt(ratio), sizes[0] / np.sqrt(ratio)) for ratio in ASPECT_RATIOS[1:]]
        for row in range(size_count):
            for col in range(size_count):
                centre = ((col + 0.5) / size_count, (row + 0.5) / size_count)
                priors.extend((*centre, width, height) for width, height in shapes)
    return np.array(priors, np.float32)


class AizooReference:
    """The reference TFLite model behind the interface ``mAP/detect.py`` and the benchmark use
    (``settings``, ``flip_test``, ``preprocess``, ``predict_raw``, ``detect_batch``)."""

    format = "reference"
    flip_test = False

    def __init__(self, path: str = DEFAULT_REFERENCE, num_threads: int = 2) -> None:
        if not os.path.isfile(path):
            raise ModelLoadError(f"{path}: reference model not found (see ../shared/reference/README.md)")
        self.path = path
        self.interpreter = tflite_interpreter(path, num_threads=num_threads)
        self._input = self.interpreter.get_input_details()[0]["index"]
        outputs = {detail["shape"][-1]: detail["index"] for detail in self.interpreter.get_output_details()}
        self._offsets, self._scores = outputs[4], outputs[2]
        self.priors = reference_priors()
        self.settings = DEFAULT_SETTINGS.replace(input_size=INPUT_SIZE, keep_aspect=False, flip_test=False)

    def preprocess(self, images_rgb: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 RGB images [H, W, 3] -> float32 [B, 260, 260, 3] in [0, 1] (stretched, as published)."""
        return np.stack([cv2.resize(image, INPUT_SIZE[::-1], interpolation=cv2.INTER_LINEAR).astype(np.float32)
                         / 255.0 for image in images_rgb])

    def predict_raw(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[B, 260, 260, 3] -> (offsets [B, 5972, 4], sigmoid scores [B, 5972, 2]), one invocation an image."""
        offsets, scores = [], []
        for image in batch:
            self.interpreter.set_tensor(self._input, image[None])
            self.interpreter.invoke()
            offsets.append(self.interpreter.get_tensor(self._offsets)[0])
            scores.append(self.interpreter.get_tensor(self._scores)[0])
        return np.stack(offsets), np.stack(scores)

    def detect(self, image_rgb: np.ndarray, score_threshold: float | None = None) -> Detections:
        """Detections of one uint8 RGB image, boxes in its pixels (corner form)."""
        threshold = self.settings.detect.score_threshold if score_threshold is None else score_threshold
        offsets, scores = (value[0] for value in self.predict_raw(self.preprocess([image_rgb])))
        boxes = decode_boxes(offsets, self.priors, VARIANCES)
        boxes, kept_scores, classes = (value.numpy() for value in class_agnostic_nms(
            boxes, scores, threshold, NMS_IOU, self.settings.detect.max_number_keep))
        height, width = image_rgb.shape[:2]
        pixels = np.clip(boxes * [width, height, width, height], 0, [width, height, width, height])
        return Detections(pixels.astype(np.float32), kept_scores, OUR_CLASS_OF_OUTPUT[classes],
                          list(self.settings.model.labels_list))

    def detect_batch(self, images_rgb: Sequence[np.ndarray], score_threshold: float | None = None) -> list[Detections]:
        """One Detections per image of a list of uint8 RGB images."""
        return [self.detect(image, score_threshold) for image in images_rgb]
