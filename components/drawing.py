"""Drawing detections on images with OpenCV (no TensorFlow needed)."""
import cv2
import numpy as np

CLASS_COLORS_BGR = {"mask": (0, 200, 0), "unmask": (0, 0, 255)}
OTHER_CLASS_COLOR_BGR = (0, 200, 255)
TEXT_COLOR_BGR = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
ANNOTATED_PREFIX = "out_"   # annotated copy of <name>: out_<name> (inference.py writes it beside the samples)


def _text_scale(image_shape):
    """(font scale, line thickness in pixels) that stay legible from small to large images."""
    shortest_side = min(image_shape[:2])
    scale = float(np.clip(shortest_side / 700.0, 0.4, 1.5))
    return scale, max(1, int(round(shortest_side / 350.0)))


def _put_label(image, text, left, top, color, scale, thickness, below=False):
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


def draw_detections(image_bgr, detections, fps=None):
    """An annotated copy of ``image_bgr``.

    Args:
        image_bgr: uint8 [H, W, 3] BGR image (left unchanged).
        detections: anything with ``boxes`` [K, 4] (left, top, right, bottom, pixels of this image),
            ``scores`` [K] and ``labels()`` -> K class names, e.g. ``components.detector.Detections``.
        fps: frames per second to print in the top-left corner, or None for no overlay.
    Returns:
        uint8 [H, W, 3] BGR image: a box per detection (green for mask, red for unmask, orange for any
        other class) with ``<class> <score>`` above it.
    """
    canvas = image_bgr.copy()
    scale, thickness = _text_scale(canvas.shape)
    for box, score, label in zip(np.asarray(detections.boxes), np.asarray(detections.scores), detections.labels()):
        color = CLASS_COLORS_BGR.get(label, OTHER_CLASS_COLOR_BGR)
        left, top, right, bottom = (int(round(value)) for value in box)
        cv2.rectangle(canvas, (left, top), (right, bottom), color, thickness + 1)
        # above the box, or just inside its top edge when the box touches the top of the image
        _put_label(canvas, f"{label} {score:.2f}", left, top, color, scale, thickness)
    if fps is not None:
        _put_label(canvas, f"FPS {fps:.1f}", 4, 4, (40, 40, 40), scale, thickness, below=True)
    return canvas
