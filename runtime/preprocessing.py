"""Images in, network input out, and back: the letterbox of inference (``components.letterbox.letterbox`` on
its OpenCV backend) and its inverse for boxes.

``preprocess_images`` matches ``dataset.tf_dataset_preprocess.preprocess_for_inference`` (the same letterbox on
the TensorFlow backend) to within 1e-4: only the two backends' bilinear resizes round differently.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from components.letterbox import NORMALIZED_PAD_VALUE, PAD_VALUE, letterbox, letterbox_shape

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["PAD_VALUE", "boxes_to_pixels", "image_pixels_per_input_pixel", "letterbox_shape", "pad_to_size",
           "preprocess_images"]


def image_pixels_per_input_pixel(image_shape: Sequence[int], input_size: Sequence[int],
                                 keep_aspect: bool = True) -> float:
    """How many pixels of an image of ``image_shape`` (H, W, ...) one pixel of the network input (h, w) spans: the
    letterbox frame's height over h with ``keep_aspect`` (as ``preprocess_images`` pads it), else the geometric
    mean of the two stretch factors."""
    height, width = image_shape[:2]
    if keep_aspect:
        return letterbox_shape(height, width, input_size)[0] / input_size[0]
    return math.sqrt(height * width / (input_size[0] * input_size[1]))


def preprocess_images(images_rgb: Sequence[np.ndarray], input_size: Sequence[int],
                      keep_aspect: bool = True) -> np.ndarray:
    """uint8 RGB images [H, W, 3] of any sizes -> network input float32 [B, h, w, 3] in [-1, 1]: each through
    ``components.letterbox.letterbox`` (OpenCV backend): padded with 127 at the bottom / right to the input
    aspect ratio with ``keep_aspect`` (see ``letterbox_shape``), so faces are not stretched; then bilinear
    resize with half-pixel centres, no antialiasing, and x / 127.5 - 1.
    """
    height, width = input_size
    batch = np.empty((len(images_rgb), height, width, 3), np.float32)
    for index, image in enumerate(images_rgb):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
        batch[index] = letterbox(image, input_size, keep_aspect, backend="opencv")[0]
    return batch


def pad_to_size(batch: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Network inputs [B, h, w, 3] (in [-1, 1]) padded at the bottom / right with the letterbox grey to ``size``
    = (H, W) >= (h, w): the canvas of ``components.prior_box.aligned_input_size``."""
    batch = np.asarray(batch, np.float32)
    if tuple(batch.shape[1:3]) == tuple(size):
        return batch
    canvas = np.full((len(batch), size[0], size[1], batch.shape[3]), NORMALIZED_PAD_VALUE, np.float32)
    canvas[:, :batch.shape[1], :batch.shape[2]] = batch
    return canvas


def boxes_to_pixels(boxes: np.ndarray, image_shape: Sequence[int], input_size: Sequence[int],
                    keep_aspect: bool = True) -> np.ndarray:
    """Boxes [K, 4] normalised to the network input (corner form) -> pixels of the original image
    (``image_shape`` = (H, W, ...)), clipped to it; undoes the letterbox of ``preprocess_images``."""
    height, width = image_shape[:2]
    frame_h, frame_w = letterbox_shape(height, width, input_size) if keep_aspect else (height, width)
    pixels = np.asarray(boxes, np.float32) * np.array([frame_w, frame_h, frame_w, frame_h], np.float32)
    return np.clip(pixels, 0, np.array([width, height, width, height], np.float32))
