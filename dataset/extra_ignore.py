"""Extra ``ignore`` boxes for training: faces an annotation leaves out, found by a model.

A data set whose annotators skipped some faces (a crowd behind the subject, a face printed on a card) teaches
the detector that those faces are background. ``mAP/unlabelled_faces.py`` lists the confident detections that
overlap no annotated box in a file of this format; ``dataset/voc_to_tfrecord.py --extra_ignore FILE`` adds them
to the records as ``ignore`` boxes, so the priors on them are neither positive nor negative in training (and
count as difficult if such a record is evaluated). The VOC files are not touched.

The file is JSON: ``{"images": {"<image name>": [[left, top, right, bottom, score], ...], ...}, ...}``, boxes in
pixels of the image file (corner form), the score of the detection that found each; other keys (how the boxes
were mined) are kept for the record and not read.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from components.atomic_io import write_text_atomically
from components.config import IGNORE_LABEL
from dataset.voc import VOCError, clip_to_image

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from dataset.voc import Annotation

IMAGES_KEY = "images"


def write_extra_ignore(path: str, found: Mapping[str, tuple[np.ndarray, np.ndarray]],
                       details: dict[str, Any] | None = None) -> None:
    """Write ``found`` ({image name: (boxes [K, 4] pixels, corner form; scores [K])}) to ``path`` atomically,
    with ``details`` (a dict, e.g. the mining thresholds) beside the boxes."""
    images = {name: [[round(float(value), 1) for value in box] + [round(float(score), 4)]
                     for box, score in zip(boxes, scores)]
              for name, (boxes, scores) in sorted(found.items()) if len(boxes)}
    write_text_atomically(path, json.dumps({**(details or {}), IMAGES_KEY: images}, indent=1) + "\n")


def read_extra_ignore(path: str) -> dict[str, np.ndarray]:
    """{image name: boxes [K, 4] float32, pixels, corner form} of an extra-ignore file.

    Raises VOCError naming the file when it is missing, not JSON, or a box is not four finite numbers (a fifth,
    the score, is allowed) with right > left and bottom > top."""
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except FileNotFoundError:
        raise VOCError(f"{path}: extra-ignore file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VOCError(f"{path}: not a readable JSON file ({error})") from None
    images = content.get(IMAGES_KEY) if isinstance(content, dict) else None
    if not isinstance(images, dict):
        raise VOCError(f'{path}: expected an object with "{IMAGES_KEY}": {{image name: [[left, top, right, '
                       'bottom, score], ...]}}')
    return {name: _boxes(path, name, rows) for name, rows in images.items()}


def _boxes(path, name, rows):
    """[K, 4] float32 of one image's rows; raises VOCError naming the file and image when a row is bad."""
    try:
        boxes = np.array([row[:4] for row in rows if len(row) in (4, 5)], np.float32).reshape(-1, 4)
    except (TypeError, ValueError):
        boxes = None
    if boxes is None or len(boxes) != len(rows) or not np.isfinite(boxes).all() \
            or (boxes[:, 2] <= boxes[:, 0]).any() or (boxes[:, 3] <= boxes[:, 1]).any():
        raise VOCError(f"{path}: image {name!r}: expected boxes [left, top, right, bottom(, score)] in pixels "
                       f"with right > left and bottom > top, got {rows!r}")
    return boxes


def add_ignore_boxes(annotation: Annotation, boxes: np.ndarray) -> int:
    """Append ``boxes`` [K, 4] (pixels of the annotation's image, corner form) to ``annotation`` as ``ignore``
    boxes, clipped to its ``width`` x ``height``; those left with no area are dropped. Returns how many were
    added."""
    boxes, keep = clip_to_image(boxes, annotation.width, annotation.height)  # type: ignore[arg-type]
    boxes = boxes[keep]
    annotation.boxes = np.concatenate([annotation.boxes, boxes]).astype(np.float32)
    annotation.labels = list(annotation.labels) + [IGNORE_LABEL] * len(boxes)
    annotation.difficult = np.concatenate([annotation.difficult, np.zeros(len(boxes), bool)])
    return len(boxes)
