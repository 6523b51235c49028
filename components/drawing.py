"""Drawing detections on images with OpenCV (no TensorFlow needed)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from components.config import DEFAULT_SETTINGS

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


# colour of class id 1, 2, 3, ... (background is 0): green, red (the default mask / unmask), then orange,
# blue, magenta, cyan, ...; repeats after the last
CLASS_PALETTE_BGR = ((0, 200, 0), (0, 0, 255), (0, 165, 255), (255, 120, 0), (200, 0, 200), (200, 200, 0),
                     (0, 100, 130), (130, 0, 75), (120, 120, 120), (0, 215, 215))
CLASS_COLORS_BGR = {"mask": CLASS_PALETTE_BGR[0], "unmask": CLASS_PALETTE_BGR[1]}   # the default classes' colours
TEXT_COLOR_BGR = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
ANNOTATED_PREFIX = "out_"   # annotated copy of <name>: out_<name> (inference.py writes it beside the samples)


def _text_scale(image_shape):
    """(font scale, line thickness in pixels) that stay legible from small to large images."""
    shortest_side = min(image_shape[:2])
    scale = float(np.clip(shortest_side / 700.0, 0.4, 1.5))
    return scale, max(1, int(round(shortest_side / 350.0)))


def class_color_bgr(class_id: int) -> tuple[int, int, int]:
    """Colour (B, G, R) of class id ``class_id`` (1 = the first class after background) from the palette."""
    return CLASS_PALETTE_BGR[(int(class_id) - 1) % len(CLASS_PALETTE_BGR)]


def class_color_rgb(class_id: int) -> tuple[float, float, float]:
    """The same colour as (r, g, b) floats in [0, 1], for matplotlib."""
    blue, green, red = class_color_bgr(class_id)
    return red / 255.0, green / 255.0, blue / 255.0


def _overlaps(rect, others):
    return any(rect[0] < o[2] and o[0] < rect[2] and rect[1] < o[3] and o[1] < rect[3] for o in others)


def label_rectangles(boxes: np.ndarray | Sequence[Sequence[float]], texts: Sequence[str], image_shape: Sequence[int],
                     scale: float | None = None, thickness: int | None = None) -> list[tuple[int, int, int, int]]:
    """Where the label of each box goes: [(left, top, right, bottom)] in pixels, none overlapping another.

    Each label is tried above its box, just inside its top edge, below it, then moved down a line at a time
    until it is clear of the labels placed before it (boxes in the order given); labels stay inside the image.
    """
    if scale is None:
        scale, thickness = _text_scale(image_shape)
    height, width = image_shape[:2]
    placed: list[tuple[int, int, int, int]] = []
    for box, text in zip(np.asarray(boxes, np.float32).reshape(-1, 4), texts):
        (text_w, text_h), baseline = cv2.getTextSize(text, FONT, scale, thickness)  # type: ignore[arg-type]
        label_w, label_h = text_w + 2, text_h + baseline + 2
        left = int(min(max(round(box[0]), 0), max(width - label_w, 0)))
        top, bottom = int(round(box[1])), int(round(box[3]))
        candidates = [top - label_h, top, bottom] + [bottom + step * label_h for step in range(1, 40)]
        for candidate in candidates:
            candidate = int(min(max(candidate, 0), max(height - label_h, 0)))
            rect = (left, candidate, left + label_w, candidate + label_h)
            if not _overlaps(rect, placed):
                break
        placed.append(rect)
    return placed


def _overlap_area(rect, other):
    """Pixels shared by two (left, top, right, bottom) rectangles."""
    width = min(rect[2], other[2]) - max(rect[0], other[0])
    height = min(rect[3], other[3]) - max(rect[1], other[1])
    return max(0, width) * max(0, height)


def corner_rectangle(text: str, image_shape: Sequence[int], avoid: Sequence[Sequence[int]], scale: float | None = None,
                     thickness: int | None = None, margin: int = 4) -> tuple[int, int, int, int]:
    """Where a corner label (the FPS counter) goes: (left, top, right, bottom) in pixels, in the first corner of
    top-left, top-right, bottom-left, bottom-right that covers none of the rectangles ``avoid`` (boxes and their
    labels), else in the corner that covers the least of them."""
    if scale is None:
        scale, thickness = _text_scale(image_shape)
    (text_w, text_h), baseline = cv2.getTextSize(text, FONT, scale, thickness)  # type: ignore[arg-type]
    label_w, label_h = text_w + 2, text_h + baseline + 2
    height, width = image_shape[:2]
    right_x, bottom_y = max(width - label_w - margin, 0), max(height - label_h - margin, 0)
    corners = [(margin, margin), (right_x, margin), (margin, bottom_y), (right_x, bottom_y)]
    rects = [(left, top, left + label_w, top + label_h) for left, top in corners]
    covered = [sum(_overlap_area(rect, other) for other in avoid) for rect in rects]
    return rects[covered.index(min(covered))]


def _put_label(image, text, left, top, color, scale, thickness, below: bool = False) -> None:
    """Write ``text`` on a filled ``color`` background with its bottom-left corner at (left, top)
    (or, when ``below``, its top-left corner at (left, top))."""
    (text_width, text_height), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    height, width = image.shape[:2]
    left = int(min(max(left, 0), max(width - text_width - 2, 0)))
    if below:
        top += text_height + baseline + 2
    top = int(min(max(top, text_height + baseline + 2), height))
    cv2.rectangle(image, (left, top - text_height - baseline - 2), (left + text_width + 2, top), color, cv2.FILLED)
    cv2.putText(image, text, (left + 1, top - baseline - 1), FONT, scale, TEXT_COLOR_BGR, thickness, cv2.LINE_AA)


def draw_detections(image_bgr: np.ndarray, detections: Any, fps: float | None = None) -> np.ndarray:
    """An annotated copy of ``image_bgr``.

    Args:
        image_bgr: uint8 [H, W, 3] BGR image (left unchanged).
        detections: anything with ``boxes`` [K, 4] (left, top, right, bottom, pixels of this image),
            ``scores`` [K] and ``labels()`` -> K class names, e.g. ``runtime.detector.Detections``.
        fps: frames per second to print in a corner clear of the boxes and labels (``corner_rectangle``), or
            None for no overlay.
    Returns:
        uint8 [H, W, 3] BGR image: a box per detection in its class's colour (``class_color_bgr`` of its
        class id: green for the first class, red for the second, ...) with ``<class> <score>`` above it, the
        labels placed so that none covers another (``label_rectangles``).
    """
    canvas = image_bgr.copy()
    scale, thickness = _text_scale(canvas.shape)
    boxes, scores, labels = np.asarray(detections.boxes), np.asarray(detections.scores), detections.labels()
    class_ids = getattr(detections, "classes", None)
    if class_ids is None:   # only names: their index in the class list (the default one if none is given)
        names = list(getattr(detections, "class_names", None) or DEFAULT_SETTINGS.model.labels_list)
        extra = sorted(set(labels) - set(names))
        class_ids = [names.index(label) if label in names else len(names) + extra.index(label) for label in labels]
    texts = [f"{label} {score:.2f}" for label, score in zip(labels, scores)]
    colors = [class_color_bgr(class_id) for class_id in class_ids]
    for box, color in zip(boxes, colors):
        left, top, right, bottom = (int(round(value)) for value in box)
        cv2.rectangle(canvas, (left, top), (right, bottom), color, thickness + 1)
    labels_placed = label_rectangles(boxes, texts, canvas.shape, scale, thickness)
    for text, color, rect in zip(texts, colors, labels_placed):
        _put_label(canvas, text, rect[0], rect[3], color, scale, thickness)
    if fps is not None:   # in a corner clear of every box and label
        text = f"FPS {fps:.1f}"
        avoid = labels_placed + [tuple(int(round(value)) for value in box) for box in boxes]
        rect = corner_rectangle(text, canvas.shape, avoid, scale, thickness)
        _put_label(canvas, text, rect[0], rect[3], (40, 40, 40), scale, thickness)
    return canvas
