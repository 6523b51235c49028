"""Images in, network input out, and back: the letterbox of inference and its inverse for boxes.

``preprocess_images`` matches ``dataset.tf_dataset_preprocess.preprocess_for_inference`` (the training-side
reference) to within 1e-4, done with OpenCV because it is several times faster per frame.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

PAD_VALUE = 127   # grey of the letterbox padding (as the training pipeline pads)


def letterbox_shape(height: int, width: int, input_size: Sequence[int]) -> tuple[int, int]:
    """(h, w) in pixels of an image of ``height`` x ``width`` padded at the bottom / right to the aspect ratio of
    ``input_size`` (h, w), each side rounded up (as ``dataset.tf_dataset_preprocess.pad_to_aspect``)."""
    aspect = input_size[1] / input_size[0]
    new_width = max(width, math.ceil(height * aspect))
    return max(height, math.ceil(new_width / aspect)), new_width


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
    """uint8 RGB images [H, W, 3] of any sizes -> network input float32 [B, h, w, 3] in [-1, 1].

    With ``keep_aspect`` each image is first padded (value 127) at the bottom / right to the input aspect ratio
    (see ``letterbox_shape``), so faces are not stretched; then bilinear resize with half-pixel centres, no
    antialiasing, and (x - 127.5) / 127.5.
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
                                       cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
        image = image.astype(np.float32)
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        np.multiply(image, 1.0 / 127.5, out=batch[index])
    batch -= 1.0
    return batch


def pad_to_size(batch: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Network inputs [B, h, w, 3] (in [-1, 1]) padded at the bottom / right with the letterbox grey to ``size``
    = (H, W) >= (h, w): the canvas of ``components.prior_box.aligned_input_size``."""
    batch = np.asarray(batch, np.float32)
    if tuple(batch.shape[1:3]) == tuple(size):
        return batch
    canvas = np.full((len(batch), size[0], size[1], batch.shape[3]), PAD_VALUE / 127.5 - 1.0, np.float32)
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
