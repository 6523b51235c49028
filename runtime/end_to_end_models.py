"""Running end-to-end model files: preprocessing, network, flip test, box decoding and NMS inside the file,
detections out (written by ``export.py --end_to_end``, graphs in ``deploy/end_to_end.py``).

The file layout (what an app sees, README "End-to-end models"):

* SavedModel folder and ``.onnx`` file: uint8 RGB images [B, H, W, 3] of any size in (``input_tensor``; ONNX
  batch 1), letterboxed inside the graph; outputs in the TF Object Detection API convention
  (:data:`OUTPUT_KEYS`): ``detection_boxes`` [B, N, 4] normalised (ymin, xmin, ymax, xmax) of the original
  image, ``detection_scores`` [B, N], ``detection_classes`` [B, N] (1..C-1 as float, 0 in padding rows),
  ``num_detections`` [B] (float). The SavedModel also has :data:`ENCODED_SIGNATURE` (JPEG / PNG bytes [B]).
* ``.tflite`` file: the network input [1, h, w, 3] float32 in [-1, 1] (the letterbox is the app's), the four
  outputs of the ``TFLite_Detection_PostProcess`` op: boxes [1, N, 4] (ymin, xmin, ymax, xmax) normalised to
  the network input, classes [1, N] (0..C-2: background is not a class), scores [1, N], count [1].
* decoded ``.onnx`` file (``export.py --format onnx_decoded``, for OpenCV DNN and the browser): the network
  input :data:`DECODED_INPUT` [1, 3, h, w] float32 NCHW in [-1, 1] (the letterbox is the app's), outputs
  :data:`DECODED_OUTPUTS`: ``boxes`` [1, P, 4] (x1, y1, x2, y2) normalised to the network input, ``scores``
  [1, P, C-1] class probabilities without background, one row per prior; NMS is the app's
  (:class:`DecodedOnnx`: ``cv2.dnn.NMSBoxesBatched``).

The adapters return ``runtime.postprocessing.Detections``: in pixels from ``detect_batch`` (original
images), normalised to the network input and clipped to it from ``detect_inputs`` (what
``mAP.evaluation.evaluate`` runs), so an export can be compared with ``runtime.detector.Detector`` and
evaluated like it.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from runtime.adapters import DEFAULT_NUM_THREADS, ModelLoadError, first_line, onnx_session, tflite_interpreter
from runtime.postprocessing import Detections, nonempty_detections
from runtime.preprocessing import boxes_to_pixels, preprocess_images

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from components.config import Settings

OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
TFLITE_POSTPROCESS_OP = "TFLite_Detection_PostProcess"
IMAGE_SIGNATURE = "serving_default"          # uint8 images [B, H, W, 3]
ENCODED_SIGNATURE = "serving_encoded_images"  # JPEG / PNG bytes [B]
IMAGE_INPUT = "input_tensor"
ENCODED_INPUT = "encoded_images"
DECODED_INPUT = "input"                  # the decoded ONNX: network input [1, 3, h, w]
DECODED_OUTPUTS = ("boxes", "scores")
YX_ORDER = [1, 0, 3, 2]   # (x, y, x, y) <-> (y, x, y, x): our box coding vs the TF OD API / TFLite op order


def network_input_to_uint8(network_input: np.ndarray) -> np.ndarray:
    """A network input [h, w, 3] in [-1, 1] back to the uint8 RGB image it was made of (rounded)."""
    return np.clip(np.rint((np.asarray(network_input, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


class EndToEndModel:
    """Common part of the adapters: ``settings`` (the model's spec and detection settings), ``detect_batch``
    and ``detect_inputs``.

    A subclass gives ``image_detections(image_rgb)`` (boxes in pixels) and ``input_detections(network_input)``
    (boxes normalised to the input), each -> (boxes [K, 4] corner form, scores [K], class ids [K] 1..C-1).
    """

    format: str | None = None

    if TYPE_CHECKING:   # what a subclass gives (declared for the type checker only)
        def image_detections(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

        def input_detections(self, network_input: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def __init__(self, path: str, settings: Settings) -> None:
        self.path, self.settings = path, settings
        self.input_size = tuple(settings.model.input_size)
        self.class_names = list(settings.model.labels_list)

    def kept(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
             score_threshold: float | None) -> Detections:
        """Detections of those scoring at least ``score_threshold`` (default ``settings.detect.score_threshold``; the
        file itself keeps nothing below its export threshold) whose clipped box is not empty, as ``Detector``'s."""
        threshold = self.settings.detect.score_threshold if score_threshold is None else score_threshold
        found = Detections(np.asarray(boxes, np.float32), np.asarray(scores, np.float32),
                           np.asarray(classes).astype(np.int64), self.class_names)
        return nonempty_detections(found.select(found.scores >= threshold))

    def detect(self, image_rgb: np.ndarray, score_threshold: float | None = None) -> Detections:
        """Detections (pixels) of one uint8 RGB image of any size."""
        return self.kept(*self.image_detections(image_rgb), score_threshold)

    def detect_batch(self, images_rgb: Sequence[np.ndarray], score_threshold: float | None = None) -> list[Detections]:
        """uint8 RGB images of any sizes -> one ``Detections`` (pixels) per image."""
        return [self.detect(image, score_threshold) for image in images_rgb]

    def detect_inputs(self, inputs: np.ndarray, score_threshold: float | None = None) -> list[Detections]:
        """Network inputs [B, h, w, 3] (letterboxed, in [-1, 1]) -> one ``Detections`` per input, boxes
        normalised to it."""
        return [self.kept(*self.input_detections(network_input), score_threshold) for network_input in inputs]


class Uint8ImageModel(EndToEndModel):
    """An end-to-end file that takes uint8 images of any size and returns the TF OD API outputs; a subclass
    gives ``outputs(images uint8 [1, H, W, 3])`` -> the :data:`OUTPUT_KEYS` arrays of that image."""

    if TYPE_CHECKING:   # what a subclass gives (declared for the type checker only)
        def outputs(self, images: np.ndarray) -> list[Any]: ...

    def image_detections(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes, scores, classes, count = self.outputs(np.asarray(image_rgb, np.uint8)[None])
        count = int(count)
        height, width = np.shape(image_rgb)[:2]
        pixels = np.asarray(boxes[:count], np.float32)[:, YX_ORDER] * np.array([width, height, width, height],
                                                                               np.float32)
        return pixels, scores[:count], classes[:count]

    def input_detections(self, network_input: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The input goes back to uint8 (rounded, what an app would feed), and is not letterboxed again: it
        has the network's aspect ratio and size already."""
        boxes, scores, classes = self.image_detections(network_input_to_uint8(network_input))
        height, width = self.input_size
        return boxes / np.array([width, height, width, height], np.float32), scores, classes


class EndToEndSavedModel(Uint8ImageModel):
    """An end-to-end SavedModel folder, run through its ``serving_default`` signature (uint8 images)."""

    format = "saved_model"

    def __init__(self, path: str, settings: Settings) -> None:
        super().__init__(path, settings)
        import tensorflow as tf
        try:
            self.loaded = tf.saved_model.load(path)
            self.signature = self.loaded.signatures[IMAGE_SIGNATURE]
        except Exception as error:  # noqa: BLE001  (TensorFlow raises many types for a bad folder)
            raise ModelLoadError(f"{path}: not a loadable end-to-end SavedModel ({first_line(error)})") from None

    def outputs(self, images: np.ndarray) -> list[np.ndarray]:
        import tensorflow as tf
        values = self.signature(**{IMAGE_INPUT: tf.constant(images)})
        return [values[key].numpy()[0] for key in OUTPUT_KEYS]


class EndToEndOnnx(Uint8ImageModel):
    """An end-to-end ``.onnx`` file (uint8 image [1, H, W, 3] in, TF OD API outputs) run by onnxruntime."""

    format = "onnx"

    def __init__(self, path: str, settings: Settings,
                 num_threads: int = DEFAULT_NUM_THREADS) -> None:
        super().__init__(path, settings)
        self.session = onnx_session(path, num_threads=num_threads)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [output.name for output in self.session.get_outputs()]
        if sorted(self.output_names) != sorted(OUTPUT_KEYS):
            raise ModelLoadError(f"{path}: not an end-to-end ONNX model (outputs {self.output_names}, expected "
                                 f"{list(OUTPUT_KEYS)})")

    def outputs(self, images: np.ndarray) -> list[np.ndarray]:
        values = dict(zip(self.output_names, self.session.run(None, {self.input_name: images})))
        return [values[key][0] for key in OUTPUT_KEYS]


class EndToEndTFLite(EndToEndModel):
    """An end-to-end ``.tflite`` file run by LiteRT: the app's letterbox (``preprocess_images``) in, the four
    outputs of ``TFLite_Detection_PostProcess`` out."""

    format = "tflite"

    def __init__(self, path: str, settings: Settings,
                 num_threads: int = DEFAULT_NUM_THREADS) -> None:
        super().__init__(path, settings)
        self.interpreter = tflite_interpreter(path, num_threads=num_threads)
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_indices = [detail["index"] for detail in self.interpreter.get_output_details()]
        if len(self.output_indices) != 4:
            raise ModelLoadError(f"{path}: expected the 4 outputs of {TFLITE_POSTPROCESS_OP}, got "
                                 f"{len(self.output_indices)}")

    def input_detections(self, network_input: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.interpreter.set_tensor(self.input_index, np.asarray(network_input, np.float32)[None])
        self.interpreter.invoke()
        boxes, classes, scores, count = (self.interpreter.get_tensor(index)[0] for index in self.output_indices)
        count = int(count)
        # clipped to the input, as the uint8-input graphs clip theirs to the image
        return np.clip(boxes[:count, YX_ORDER], 0.0, 1.0), scores[:count], classes[:count].astype(np.int64) + 1

    def image_detections(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes, scores, classes = self.input_detections(preprocess_images([image_rgb], self.input_size)[0])
        return boxes_to_pixels(boxes, np.shape(image_rgb), self.input_size), scores, classes


class DecodedOnnx(EndToEndModel):
    """A decoded ``.onnx`` file (see the module docstring) run by OpenCV DNN (``cv2.dnn.readNet``), then
    class-wise NMS by ``cv2.dnn.NMSBoxesBatched`` at ``settings.detect.nms_threshold`` over every (prior,
    class) scoring at least ``settings.export.export_score_threshold``, at most ``settings.detect.max_number_keep``
    detections: the
    detections of ``runtime.postprocessing.postprocess``, with NMS done as an app does it."""

    format = "onnx_decoded"

    def __init__(self, path: str, settings: Settings) -> None:
        super().__init__(path, settings)
        import cv2
        try:
            self.net = cv2.dnn.readNet(path)
        except cv2.error as error:
            raise ModelLoadError(f"{path}: OpenCV DNN cannot load it ({first_line(error)})") from None
        names = tuple(self.net.getUnconnectedOutLayersNames())
        if names != DECODED_OUTPUTS:
            raise ModelLoadError(f"{path}: not a decoded ONNX model (outputs {list(names)}, expected "
                                 f"{list(DECODED_OUTPUTS)})")

    def outputs(self, network_input: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Network input [h, w, 3] in [-1, 1] -> (boxes [P, 4] normalised corner form, scores [P, C-1])."""
        blob = np.ascontiguousarray(np.asarray(network_input, np.float32).transpose(2, 0, 1)[None])
        self.net.setInput(blob, DECODED_INPUT)
        boxes, scores = self.net.forward(list(DECODED_OUTPUTS))
        return boxes[0], scores[0]

    def input_detections(self, network_input: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import cv2
        boxes, scores = self.outputs(network_input)
        height, width = self.input_size
        pixels = boxes * np.array([width, height, width, height], np.float32)   # NMS in input pixels
        detect = self.settings.detect
        prior, column = np.nonzero(scores >= float(self.settings.export.export_score_threshold))
        candidate_scores = scores[prior, column]
        rects = np.concatenate([pixels[prior, :2], pixels[prior, 2:] - pixels[prior, :2]], axis=1)
        keep = np.ravel(cv2.dnn.NMSBoxesBatched(rects.astype(np.float64), candidate_scores, column.astype(np.int32),  # type: ignore[arg-type]
                                                0.0, float(detect.nms_threshold))).astype(np.int64)
        keep = keep[np.argsort(-candidate_scores[keep], kind="stable")][:int(detect.max_number_keep)]
        return boxes[prior[keep]], candidate_scores[keep], column[keep].astype(np.int64) + 1

    def image_detections(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes, scores, classes = self.input_detections(preprocess_images([image_rgb], self.input_size)[0])
        return boxes_to_pixels(boxes, np.shape(image_rgb), self.input_size), scores, classes


def is_decoded_onnx(path: str) -> bool:
    """Whether the ``.onnx`` file at ``path`` is a decoded export (outputs :data:`DECODED_OUTPUTS`)."""
    return tuple(output.name for output in onnx_session(path).get_outputs()) == DECODED_OUTPUTS


def load_end_to_end(path: str, settings: Settings | None = None) -> EndToEndModel:
    """The adapter for an end-to-end export (by file type) with its ``settings`` (default: the spec the file
    carries over the defaults, ``runtime.model_files.load_model_config``); raises ModelLoadError naming the path."""
    if not os.path.exists(path):
        raise ModelLoadError(f"{path}: model not found")
    if settings is None:
        from runtime.model_files import load_model_config
        settings = load_model_config(path)
    if os.path.isdir(path):
        return EndToEndSavedModel(path, settings)
    if path.endswith(".tflite"):
        return EndToEndTFLite(path, settings)
    if path.endswith(".onnx"):
        return DecodedOnnx(path, settings) if is_decoded_onnx(path) else EndToEndOnnx(path, settings)
    raise ModelLoadError(f"{path}: not an end-to-end model (SavedModel folder, .tflite or .onnx)")
