"""Raw network output -> detections: the one decode + class-wise NMS path, and the flip-test merge.

``postprocess`` (decode + softmax + class-wise NMS, all vectorised in one compiled batched call) is used by
training-time validation, inference, benchmarks and mAP evaluation, whatever runtime produced the predictions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from components.box_utils import batched_nms, box_area, decode_boxes, soft_nms, vote_boxes

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from components.config import Settings

TINY_SCORE = float(np.finfo(np.float32).tiny)   # merge_detections: scores above it are detections


@dataclass
class Detections:
    """Detections of one image: boxes [K, 4] corner form in pixels, scores [K], class ids [K] (1..C-1)."""
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    class_names: list

    def __len__(self) -> int:
        return len(self.scores)

    def labels(self) -> list[str]:
        """Class name of each detection."""
        return [self.class_names[c] for c in self.classes]

    def select(self, keep: np.ndarray) -> Detections:
        """The detections where ``keep`` ([K] bool) is true, in their order (boxes as float32 [k, 4])."""
        return Detections(np.asarray(self.boxes, np.float32).reshape(-1, 4)[keep], np.asarray(self.scores)[keep],
                          np.asarray(self.classes)[keep], list(self.class_names))


@tf.function(reduce_retracing=True)
def _postprocess_graph(predictions, priors, variances, score_threshold, iou_threshold, max_detections,
                       probabilities, voting_iou, soft_sigma):
    """Compiled body of :func:`postprocess` (thresholds and sizes are tensors, so one trace serves all;
    ``voting_iou`` and ``soft_sigma`` are Python floats, one trace per value)."""
    classes = predictions[..., 4:]
    scores = tf.cond(probabilities, lambda: classes, lambda: tf.nn.softmax(classes, axis=-1))[..., 1:]  # [B, P, C-1]
    # Only priors whose best class score reaches the threshold can be kept by NMS: take the
    # smallest k that holds all of them in every image of the batch, in their original order (so
    # ties are broken exactly as on the full set), and decode and suppress only those.
    best = tf.reduce_max(scores, axis=-1)                                          # [B, P]
    above = tf.reduce_sum(tf.cast(best >= score_threshold, tf.int32), axis=-1)
    k = tf.maximum(tf.reduce_max(above), 1)
    candidates = tf.sort(tf.math.top_k(best, k=k, sorted=False).indices, axis=-1)  # [B, k]
    offsets = tf.gather(predictions[..., :4], candidates, batch_dims=1)
    boxes = decode_boxes(offsets, tf.gather(priors, candidates), variances)
    candidate_scores = tf.gather(scores, candidates, batch_dims=1)
    return _suppress(boxes, candidate_scores, score_threshold, iou_threshold, max_detections, voting_iou,
                     soft_sigma)


def _suppress(boxes, scores, score_threshold, iou_threshold, max_detections, voting_iou, soft_sigma):
    """``batched_nms`` (or ``soft_nms`` where ``soft_sigma`` > 0, which leaves ``iou_threshold`` unused), then
    box voting among the candidates (``vote_boxes``) where ``voting_iou`` is > 0 (both Python floats, so that
    a graph without them holds no trace of them)."""
    if soft_sigma > 0:
        kept_boxes, kept_scores, kept_classes, valid = soft_nms(boxes, scores, score_threshold, soft_sigma,
                                                                max_detections)
    else:
        kept_boxes, kept_scores, kept_classes, valid = batched_nms(boxes, scores, score_threshold,
                                                                   iou_threshold, max_detections)
    if voting_iou > 0:
        kept_boxes = vote_boxes(kept_boxes, kept_classes, boxes, scores, voting_iou)
    return kept_boxes, kept_scores, kept_classes, valid


def postprocess(predictions: tf.Tensor | np.ndarray, priors: tf.Tensor | np.ndarray, settings: Settings,
                score_threshold: float, nms_threshold: float | None = None, max_detections: int | None = None,
                probabilities: bool = False) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Decode a batch of raw predictions into detections.

    Class-wise NMS (``tf.image.combined_non_max_suppression``; Gaussian soft-NMS where
    ``settings.detect.soft_nms_sigma`` > 0) runs only on the priors whose best class score reaches
    ``score_threshold``; the others could never be kept, so the detections are those of NMS over all priors.

    Args:
        predictions: [B, P, 4 + C] network output (offsets, class logits incl. background), tensor or numpy;
            with ``probabilities`` the class columns are probabilities already (``merge_mirrored_predictions``).
        priors: [P, 4] centre form, normalised.
        settings: ``model.variances`` and ``detect``'s NMS settings (``nms_threshold``, ``max_number_keep``
            unless given here, ``box_voting``, ``soft_nms_sigma``).
    Returns:
        (boxes [B, K, 4] normalised corner form, scores [B, K], class ids [B, K] in 1..C-1, valid [B]).
    """
    detect = settings.detect
    predictions = tf.convert_to_tensor(predictions)
    if predictions.dtype != tf.float32:
        predictions = tf.cast(predictions, tf.float32)
    boxes, scores, classes, valid = _postprocess_graph(
        predictions, tf.convert_to_tensor(priors, tf.float32),
        tf.constant(settings.model.variances, tf.float32), tf.constant(score_threshold, tf.float32),
        tf.constant(detect.nms_threshold if nms_threshold is None else nms_threshold, tf.float32),
        tf.constant(detect.max_number_keep if max_detections is None else max_detections, tf.int32),
        tf.constant(bool(probabilities)), float(detect.box_voting), float(detect.soft_nms_sigma))
    return boxes, scores, classes + 1, valid


def merge_mirrored_predictions(predictions: tf.Tensor | np.ndarray, mirrored_predictions: tf.Tensor | np.ndarray,
                               mirror: np.ndarray) -> tf.Tensor | np.ndarray:
    """Average raw predictions of images with those of the same images flipped left-right (flip test).

    The one implementation for every path: numpy in eager code (``Detector``), tensors inside the end-to-end
    export graphs (``deploy/end_to_end.py``).

    Args:
        predictions, mirrored_predictions: [B, P, 4 + C] network outputs (offsets, class logits) of the
            images and of their mirror images: numpy arrays, or tensors (also inside a tf.function).
        mirror: [P] index of each prior's mirror image (``components.prior_box.mirror_index``).
    Returns:
        [B, P, 4 + C] float32, numpy for numpy inputs, else a tensor: offsets averaged once the mirrored ones
        are brought back (prior ``mirror[i]``, x offset negated), then the mean softmax *probability* of each
        class (pass ``probabilities=True`` to :func:`postprocess`).
    """
    as_numpy = not (tf.is_tensor(predictions) or tf.is_tensor(mirrored_predictions))
    predictions = tf.cast(predictions, tf.float32)
    back = tf.gather(tf.cast(mirrored_predictions, tf.float32), mirror, axis=1)
    offsets = (predictions[..., :4] + back[..., :4] * tf.constant([-1.0, 1.0, 1.0, 1.0])) / 2.0
    probabilities = (tf.nn.softmax(predictions[..., 4:], axis=-1) + tf.nn.softmax(back[..., 4:], axis=-1)) / 2.0
    merged = tf.concat([offsets, probabilities], axis=-1)
    return merged.numpy() if as_numpy else merged


def unbatch_detections(outputs: Sequence[Any], class_names: Sequence[str],
                       to_pixels: Callable[[np.ndarray, int], np.ndarray] | None = None) -> list[Detections]:
    """One :class:`Detections` per image from the batched ``postprocess`` ``outputs``, the first ``valid`` rows
    of each; ``to_pixels(boxes, index)`` maps image ``index``'s normalised boxes (default: kept normalised)."""
    boxes, scores, classes, valid = (np.asarray(value) for value in outputs)
    results = []
    for index, count in enumerate(valid.astype(int)):
        kept = boxes[index, :count]
        results.append(Detections(to_pixels(kept, index) if to_pixels else kept, scores[index, :count],
                                  classes[index, :count], list(class_names)))
    return results


def nonempty_detections(detections: Detections) -> Detections:
    """The detections of ``detections`` whose box has a positive width and height. Boxes are clipped to the
    image when they become pixels, so one that lay wholly outside it (in the letterbox padding) has none."""
    boxes = np.asarray(detections.boxes, np.float32).reshape(-1, 4)
    return detections.select((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))


def small_detections(detections: Detections, max_side: float) -> Detections:
    """The detections of ``detections`` whose side (square root of the box area, in its units) is below
    ``max_side``."""
    return detections.select(detection_sides(detections) < max_side)


def large_detections(detections: Detections, min_side: float) -> Detections:
    """The detections of ``detections`` whose side (square root of the box area, in its units) is at least
    ``min_side``."""
    return detections.select(detection_sides(detections) >= min_side)


def detection_sides(detections: Detections) -> np.ndarray:
    """The side of each box of ``detections`` (square root of its area, in the boxes' units), [K]."""
    boxes = np.asarray(detections.boxes, np.float32).reshape(-1, 4)
    return np.sqrt(box_area(boxes).numpy())


def merge_detections(parts: Sequence[Detections], iou_threshold: float, max_detections: int, voting_iou: float = 0.0,
                     soft_sigma: float = 0.0) -> Detections:
    """Class-wise NMS over the union of several :class:`Detections` of one image (same units, same classes):
    the multi-scale test's merge, with box voting among them where ``voting_iou`` > 0 (``vote_boxes``) and
    Gaussian soft-NMS instead of NMS where ``soft_sigma`` > 0 (``soft_nms``).
    Returns one Detections sorted by score, at most ``max_detections``."""
    boxes = np.concatenate([np.asarray(part.boxes, np.float32).reshape(-1, 4) for part in parts])
    scores = np.concatenate([np.asarray(part.scores, np.float32) for part in parts])
    classes = np.concatenate([np.asarray(part.classes, np.int64) for part in parts])
    class_names = list(parts[0].class_names)
    if not len(scores):
        return Detections(boxes, scores, classes.astype(np.int32), class_names)
    per_class = np.zeros((len(scores), len(class_names) - 1), np.float32)   # column c: class c + 1
    per_class[np.arange(len(scores)), classes - 1] = scores
    kept_boxes, kept_scores, kept_classes, valid = _suppress(
        tf.constant(boxes[None]), tf.constant(per_class[None]), TINY_SCORE, iou_threshold, max_detections,
        float(voting_iou), float(soft_sigma))
    count = int(valid[0])
    return Detections(kept_boxes[0, :count].numpy(), kept_scores[0, :count].numpy(),
                      kept_classes[0, :count].numpy() + 1, class_names)
