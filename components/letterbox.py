"""The letterbox: how an image of any size becomes the network input, written once for every backend.

An image [H, W, 3] is padded at its bottom / right with :data:`PAD_VALUE` to the aspect ratio of the input
size (:func:`letterbox_shape`, each side rounded up), resized bilinearly to ``input_size`` (half-pixel centres,
no antialiasing) and mapped to [-1, 1] (:func:`normalize`). Without ``keep_aspect`` it is only resized
(stretched) and normalised.

:func:`letterbox` runs on two backends, with the same geometry, padding and normalisation:

* ``"opencv"``: one NumPy image, resized by ``cv2.resize`` (several times faster per frame): what
  ``runtime.detector.Detector`` and the apps' side of TFLite / decoded-ONNX exports run
  (``runtime.preprocessing.preprocess_images``);
* ``"tensorflow"``: a tensor, one image [H, W, 3] or a batch of one size [B, H, W, 3], resized by
  ``tf.image.resize``: the tf.data pipeline (``dataset.tf_dataset_preprocess``) and the end-to-end graphs
  (``deploy.end_to_end``).

The resize is the only step each backend does its own way: OpenCV and TensorFlow compute the same bilinear
weights but round differently (up to about 1e-4 after normalisation), and replacing ``cv2.resize`` by the
TensorFlow op would change the shipped model's detections, so each backend keeps its one resize call.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

PAD_VALUE = 127                            # grey of the letterbox padding (uint8 pixel value)
NORMALIZE_SCALE = np.float32(1 / 127.5)    # pixel [0, 255] -> x * scale - 1 in [-1, 1]
# the padding grey of an already normalised input (``runtime.preprocessing.pad_to_size``'s canvas), computed
# in float64 as it always was: one float32 step from normalize(PAD_VALUE), kept so detections do not change
NORMALIZED_PAD_VALUE = np.float32(PAD_VALUE / 127.5 - 1.0)


def normalize(images: Any) -> Any:
    """float32 pixel values [0, 255] (array or tensor) -> [-1, 1]: ``x * (1 / 127.5) - 1`` in float32."""
    return images * NORMALIZE_SCALE - np.float32(1.0)


class OpenCVBackend:
    """One NumPy image [H, W, C]; sizes as Python ints."""

    @staticmethod
    def size(image: np.ndarray) -> tuple[int, int]:
        return image.shape[0], image.shape[1]

    float64 = float
    maximum = max

    @staticmethod
    def ceil(value: float) -> int:
        return math.ceil(value)

    @staticmethod
    def pad(image: np.ndarray, bottom: int, right: int) -> np.ndarray:
        import cv2
        return cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)

    @staticmethod
    def resize(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
        import cv2
        image = image.astype(np.float32)
        if image.shape[:2] == tuple(size):
            return image
        return cv2.resize(image, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)


class TensorFlowBackend:
    """A tensor [H, W, C] or [B, H, W, C] (a graph's dynamic sizes); sizes as int32 scalar tensors."""

    @staticmethod
    def size(images: Any) -> tuple[Any, Any]:
        import tensorflow as tf
        shape = tf.shape(images)
        return shape[-3], shape[-2]

    @staticmethod
    def float64(value: Any) -> Any:
        import tensorflow as tf
        return tf.cast(value, tf.float64)

    @staticmethod
    def maximum(first: Any, second: Any) -> Any:
        import tensorflow as tf
        return tf.maximum(first, second)

    @staticmethod
    def ceil(value: Any) -> Any:
        import tensorflow as tf
        return tf.cast(tf.math.ceil(value), tf.int32)

    @staticmethod
    def pad(images: Any, bottom: Any, right: Any) -> Any:
        import tensorflow as tf
        # padded as float: tf2onnx gives a uint8 Pad a float pad value, which onnxruntime refuses
        images = tf.cast(images, tf.float32)
        batch = [[0, 0]] * (images.shape.rank - 3)
        return tf.pad(images, [*batch, [0, bottom], [0, right], [0, 0]], constant_values=float(PAD_VALUE))

    @staticmethod
    def resize(images: Any, size: Sequence[int]) -> Any:
        import tensorflow as tf
        return tf.image.resize(tf.cast(images, tf.float32), [int(side) for side in size], method="bilinear")


BACKENDS = {"opencv": OpenCVBackend, "tensorflow": TensorFlowBackend}


def padded_shape(height: Any, width: Any, aspect: float) -> tuple[Any, Any]:
    """(h, w) of the smallest frame of width / height ``aspect`` holding a ``height`` x ``width`` image at its
    top left, each side rounded up to a pixel (float64 arithmetic). Python ints in -> ints out; int32 scalar
    tensors in -> int32 tensors out."""
    ops: Any = OpenCVBackend if isinstance(height, (int, np.integer)) else TensorFlowBackend
    new_width = ops.maximum(width, ops.ceil(ops.float64(height) * aspect))
    return ops.maximum(height, ops.ceil(ops.float64(new_width) / aspect)), new_width


def letterbox_shape(height: Any, width: Any, input_size: Sequence[int]) -> tuple[Any, Any]:
    """(h, w) in pixels of an image of ``height`` x ``width`` padded at the bottom / right to the aspect ratio
    of ``input_size`` (h, w), each side rounded up (:func:`padded_shape`)."""
    return padded_shape(height, width, input_size[1] / input_size[0])


def letterbox(images: Any, input_size: Sequence[int], keep_aspect: bool = True,
              backend: str = "tensorflow") -> tuple[Any, tuple[Any, Any]]:
    """uint8 RGB image(s) -> (network input float32 [..., h, w, 3] in [-1, 1], (frame h, frame w)).

    ``backend`` ``"opencv"``: one NumPy image [H, W, 3]; ``"tensorflow"``: a tensor [H, W, 3] or [B, H, W, 3]
    (one size). With ``keep_aspect`` the image is padded with :data:`PAD_VALUE` at the bottom / right to
    :func:`letterbox_shape` (the frame), else stretched (the frame is the image). Then bilinear resize to
    ``input_size`` (h, w) and :func:`normalize`. Boxes normalised to the frame are normalised to the input.
    """
    ops: Any = BACKENDS[backend]
    height, width = ops.size(images)
    frame = (height, width)
    if keep_aspect:
        frame = letterbox_shape(height, width, input_size)
        images = ops.pad(images, frame[0] - height, frame[1] - width)
    return normalize(ops.resize(images, input_size)), frame
