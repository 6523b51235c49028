"""Box math used by training, inference and evaluation alike.

Conventions: *corner form* is (xmin, ymin, xmax, ymax); *centre form* is (cx, cy, w, h). Unless a function
says otherwise, coordinates are normalised to [0, 1] by the image width and height. Every function accepts
numpy arrays or tensors and returns tensors.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np


def center_to_corner(boxes: tf.Tensor | np.ndarray) -> tf.Tensor:
    """[..., 4] centre form -> [..., 4] corner form."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    return tf.concat([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], axis=-1)


def corner_to_center(boxes: tf.Tensor | np.ndarray) -> tf.Tensor:
    """[..., 4] corner form -> [..., 4] centre form."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    return tf.concat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], axis=-1)


def box_area(boxes: tf.Tensor | np.ndarray) -> tf.Tensor:
    """[..., 4] corner form -> [...] area (zero for inverted boxes)."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    return tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0) * tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)


def iou_matrix(boxes_a: tf.Tensor | np.ndarray, boxes_b: tf.Tensor | np.ndarray) -> tf.Tensor:
    """Intersection over union of every pair (of each batch item, with leading batch dimensions).

    Args:
        boxes_a: [..., N, 4] corner form.  boxes_b: [..., M, 4] corner form, same units as ``boxes_a``.
    Returns:
        [..., N, M] float32 IoU (0 where the union is empty).
    """
    boxes_a = tf.convert_to_tensor(boxes_a, tf.float32)
    boxes_b = tf.convert_to_tensor(boxes_b, tf.float32)
    top_left = tf.maximum(boxes_a[..., :, None, :2], boxes_b[..., None, :, :2])
    bottom_right = tf.minimum(boxes_a[..., :, None, 2:], boxes_b[..., None, :, 2:])
    inter_wh = tf.maximum(bottom_right - top_left, 0.0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = box_area(boxes_a)[..., :, None] + box_area(boxes_b)[..., None, :] - inter
    return tf.math.divide_no_nan(inter, union)


def paired_iou(boxes_a: tf.Tensor | np.ndarray, boxes_b: tf.Tensor | np.ndarray) -> tf.Tensor:
    """IoU of aligned pairs of boxes.

    Args:
        boxes_a, boxes_b: [..., 4] corner form, same shape and units.
    Returns:
        [...] float32 in [0, 1].
    """
    boxes_a = tf.convert_to_tensor(boxes_a, tf.float32)
    boxes_b = tf.convert_to_tensor(boxes_b, tf.float32)
    top_left = tf.maximum(boxes_a[..., :2], boxes_b[..., :2])
    inter_wh = tf.maximum(tf.minimum(boxes_a[..., 2:], boxes_b[..., 2:]) - top_left, 0.0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    return tf.math.divide_no_nan(inter, box_area(boxes_a) + box_area(boxes_b) - inter)


def paired_diou(boxes_a: tf.Tensor | np.ndarray, boxes_b: tf.Tensor | np.ndarray) -> tf.Tensor:
    """Distance-IoU (Zheng et al. 2020) of aligned pairs: IoU minus the squared distance of the two centres
    over the squared diagonal of the smallest box enclosing both.

    Args:
        boxes_a, boxes_b: [..., 4] corner form, same shape and units.
    Returns:
        [...] float32 in [-1, 1] (1 for identical boxes).
    """
    boxes_a = tf.convert_to_tensor(boxes_a, tf.float32)
    boxes_b = tf.convert_to_tensor(boxes_b, tf.float32)
    iou = paired_iou(boxes_a, boxes_b)
    enclosing_wh = tf.maximum(boxes_a[..., 2:], boxes_b[..., 2:]) - tf.minimum(boxes_a[..., :2], boxes_b[..., :2])
    centre_gap = (boxes_a[..., :2] + boxes_a[..., 2:] - boxes_b[..., :2] - boxes_b[..., 2:]) / 2
    diagonal = tf.reduce_sum(tf.square(enclosing_wh), axis=-1)
    return iou - tf.math.divide_no_nan(tf.reduce_sum(tf.square(centre_gap), axis=-1), diagonal)


def encode_boxes(boxes: tf.Tensor | np.ndarray, priors: tf.Tensor | np.ndarray,
                 variances: Sequence[float]) -> tf.Tensor:
    """SSD regression targets of ``boxes`` against ``priors``.

    Args:
        boxes: [P, 4] corner form, normalised.  priors: [P, 4] centre form, normalised.
        variances: (centre variance, size variance), e.g. (0.1, 0.2).
    Returns:
        [P, 4] offsets (dcx, dcy, dw, dh).
    """
    centre = corner_to_center(boxes)
    priors = tf.convert_to_tensor(priors, tf.float32)
    d_xy = (centre[..., :2] - priors[..., :2]) / (variances[0] * priors[..., 2:])
    d_wh = tf.math.log(tf.maximum(centre[..., 2:], 1e-8) / priors[..., 2:]) / variances[1]
    return tf.concat([d_xy, d_wh], axis=-1)


def decode_boxes(offsets: tf.Tensor | np.ndarray, priors: tf.Tensor | np.ndarray,
                 variances: Sequence[float]) -> tf.Tensor:
    """Inverse of :func:`encode_boxes`.

    Args:
        offsets: [..., P, 4] predicted (dcx, dcy, dw, dh).  priors: [P, 4] centre form, normalised.
    Returns:
        [..., P, 4] corner form, normalised.
    """
    offsets = tf.cast(tf.convert_to_tensor(offsets), tf.float32)
    priors = tf.convert_to_tensor(priors, tf.float32)
    centre_xy = priors[..., :2] + offsets[..., :2] * variances[0] * priors[..., 2:]
    size_wh = priors[..., 2:] * tf.exp(offsets[..., 2:] * variances[1])
    return center_to_corner(tf.concat([centre_xy, size_wh], axis=-1))


def match_priors(gt_boxes: tf.Tensor | np.ndarray, priors: tf.Tensor | np.ndarray, match_thresh: float,
                 min_positives: int = 0, min_positive_iou: float = 0.2) -> tuple[tf.Tensor, tf.Tensor]:
    """Match the ground-truth boxes of one image to priors (SSD matching with S3FD's scale compensation).

    Every prior takes the ground-truth box it overlaps most if that IoU is at least ``match_thresh``.
    Small faces overlap few priors that well, so (scale-compensated matching, as in S3FD) a face with fewer
    than ``min_positives`` such priors also takes its ``min_positives`` best-overlapping priors whose IoU is
    at least ``min_positive_iou`` and that no face matched above ``match_thresh`` (a prior claimed by several
    faces goes to the one it overlaps most). Finally every ground-truth box claims its best prior, so no face
    is left unmatched.

    Args:
        gt_boxes: [G, 4] corner form, normalised (G may be 0).  priors: [P, 4] centre form, normalised.
        min_positives: 0 turns the compensation off (plain SSD matching).
    Returns:
        (matched [P] int32: the index into ``gt_boxes`` of each prior's face (0 where G is 0),
        positive [P] bool: whether the prior is matched to that face, i.e. not background).
    """
    gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
    priors = tf.convert_to_tensor(priors, tf.float32)
    num_priors = tf.shape(priors)[0]

    def no_objects():
        return tf.zeros([num_priors], tf.int32), tf.zeros([num_priors], tf.bool)

    def with_objects():
        overlaps = iou_matrix(gt_boxes, center_to_corner(priors))          # [G, P]
        best_gt = tf.argmax(overlaps, axis=0, output_type=tf.int32)        # [P]
        best_gt_iou = tf.reduce_max(overlaps, axis=0)                       # [P]
        if min_positives > 0:
            best_gt, best_gt_iou = _compensate_small_faces(overlaps, best_gt, best_gt_iou, match_thresh,
                                                           min_positives, min_positive_iou)
        best_prior = tf.argmax(overlaps, axis=1, output_type=tf.int32)     # [G]
        # force each ground truth onto its best prior (later boxes win ties, as in the reference SSD)
        num_gt = tf.shape(gt_boxes)[0]
        best_gt = tf.tensor_scatter_nd_update(best_gt, best_prior[:, None], tf.range(num_gt))
        best_gt_iou = tf.tensor_scatter_nd_update(best_gt_iou, best_prior[:, None], tf.fill([num_gt], 2.0))
        return best_gt, best_gt_iou >= match_thresh

    return tf.cond(tf.shape(gt_boxes)[0] > 0, with_objects, no_objects)


def encode_targets(gt_boxes: tf.Tensor | np.ndarray, gt_labels: tf.Tensor | np.ndarray, priors: tf.Tensor | np.ndarray,
                   match_thresh: float, variances: Sequence[float], min_positives: int = 0,
                   min_positive_iou: float = 0.2) -> tf.Tensor:
    """Training targets of one image: :func:`match_priors`, then each prior's face encoded against it.

    Args:
        gt_boxes: [G, 4] corner form, normalised (G may be 0).  gt_labels: [G] int, 1.. num_classes-1.
        priors: [P, 4] centre form, normalised.
    Returns:
        [P, 5] float32: the 4 regression offsets and the class id (0 = background).
    """
    gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
    gt_labels = tf.cast(gt_labels, tf.int32)
    priors = tf.convert_to_tensor(priors, tf.float32)
    num_priors = tf.shape(priors)[0]

    def no_objects():
        return tf.zeros([num_priors, 5], tf.float32)

    def with_objects():
        matched, positive = match_priors(gt_boxes, priors, match_thresh, min_positives, min_positive_iou)
        labels = tf.where(positive, tf.gather(gt_labels, matched), 0)
        offsets = encode_boxes(tf.gather(gt_boxes, matched), priors, variances)
        return tf.concat([offsets, tf.cast(labels, tf.float32)[:, None]], axis=-1)

    return tf.cond(tf.shape(gt_boxes)[0] > 0, with_objects, no_objects)


def _compensate_small_faces(overlaps, best_gt, best_gt_iou, match_thresh, min_positives, min_positive_iou):
    """Second step of scale-compensated matching (see :func:`match_priors`).

    overlaps: [G, P] IoU; best_gt [P] / best_gt_iou [P]: each prior's best face and IoU. Returns the two
    updated: a prior claimed here gets its claiming face and an IoU of ``match_thresh`` (a positive)."""
    k = tf.minimum(min_positives, tf.shape(overlaps)[1])
    kth_best = tf.math.top_k(overlaps, k=k).values[:, -1:]                  # [G, 1]
    matched = tf.cast(overlaps >= match_thresh, tf.int32)
    short = tf.reduce_sum(matched, axis=1, keepdims=True) < min_positives   # [G, 1] faces with too few
    free = (best_gt_iou < match_thresh)[None, :]                            # [1, P] priors nobody matched
    claims = short & free & (overlaps >= kth_best) & (overlaps >= min_positive_iou)   # [G, P]
    claimed = tf.reduce_any(claims, axis=0)                                 # [P]
    claimant = tf.argmax(tf.where(claims, overlaps, -1.0), axis=0, output_type=tf.int32)
    return (tf.where(claimed, claimant, best_gt),
            tf.where(claimed, tf.cast(match_thresh, tf.float32), best_gt_iou))


def batched_nms(boxes: tf.Tensor | np.ndarray, scores: tf.Tensor | np.ndarray, score_threshold: float,
                iou_threshold: float, max_detections: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Class-wise non-maximum suppression for a batch, in one vectorised call.

    Args:
        boxes: [B, P, 4] corner form (any units).
        scores: [B, P, C] per-class scores *without* the background column.
    Returns:
        (boxes [B, K, 4], scores [B, K], classes [B, K] int32 in 0..C-1, valid [B] int32): the first
        ``valid[b]`` rows of image b are real detections sorted by score; K = ``max_detections``.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    nmsed_boxes, nmsed_scores, nmsed_classes, valid = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], scores,
        max_output_size_per_class=max_detections, max_total_size=max_detections,
        iou_threshold=iou_threshold, score_threshold=score_threshold, clip_boxes=False)
    return nmsed_boxes, nmsed_scores, tf.cast(nmsed_classes, tf.int32), valid


def soft_nms(boxes: tf.Tensor | np.ndarray, scores: tf.Tensor | np.ndarray, score_threshold: float, sigma: float,
             max_detections: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Class-wise Gaussian soft-NMS (Bodla et al. 2017) for a batch: instead of dropping a box that overlaps
    a kept one of its class, its score is multiplied by ``exp(-IoU**2 / sigma)``; boxes whose score falls
    below ``score_threshold`` go.

    Args and returns as :func:`batched_nms` (``sigma`` > 0 a Python float; the returned scores are the
    decayed ones).
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    max_detections = tf.convert_to_tensor(max_detections, tf.int32)
    num_classes = scores.shape[-1]

    def one_image(inputs):
        image_boxes, image_scores = inputs
        kept_boxes, kept_scores, kept_classes = [], [], []
        for class_index in range(num_classes):
            # TensorFlow weighs by exp(-IoU**2 / (2 * soft_nms_sigma)): half of Bodla's sigma
            keep, decayed = tf.image.non_max_suppression_with_scores(
                image_boxes, image_scores[:, class_index], max_detections, iou_threshold=1.0,
                score_threshold=score_threshold, soft_nms_sigma=sigma / 2.0)
            kept_boxes.append(tf.gather(image_boxes, keep))
            kept_scores.append(decayed)
            kept_classes.append(tf.fill(tf.shape(keep), class_index))
        all_scores = tf.concat(kept_scores, axis=0)
        count = tf.minimum(tf.shape(all_scores)[0], max_detections)
        order = tf.math.top_k(all_scores, k=count).indices
        pad = max_detections - count
        return (tf.pad(tf.gather(tf.concat(kept_boxes, axis=0), order), [[0, pad], [0, 0]]),
                tf.pad(tf.gather(all_scores, order), [[0, pad]]),
                tf.pad(tf.gather(tf.concat(kept_classes, axis=0), order), [[0, pad]]), count)

    return tf.map_fn(one_image, (boxes, scores), fn_output_signature=(
        tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32)))


def vote_boxes(kept_boxes: tf.Tensor | np.ndarray, kept_classes: tf.Tensor | np.ndarray, boxes: tf.Tensor | np.ndarray,
               scores: tf.Tensor | np.ndarray, iou_threshold: float) -> tf.Tensor:
    """Box voting: each box NMS kept becomes the mean of the candidate boxes that overlap it by at least
    ``iou_threshold``, each weighted by its score for the kept box's class (the kept box is one of them).

    Args:
        kept_boxes: [B, K, 4] corner form, as ``batched_nms`` returns them.  kept_classes: [B, K] int32 in
            0..C-1.  boxes: [B, N, 4] the candidates NMS chose from, same units.  scores: [B, N, C] their
            per-class scores without the background column.
    Returns:
        [B, K, 4] corner form; rows no candidate overlaps (the padding after ``valid``) stay as they were.
    """
    kept_boxes = tf.convert_to_tensor(kept_boxes, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    class_scores = tf.gather(tf.convert_to_tensor(scores, tf.float32), kept_classes, axis=2, batch_dims=1)
    overlaps = iou_matrix(kept_boxes, boxes)                                        # [B, K, N]
    weights = tf.where(overlaps >= iou_threshold, tf.transpose(class_scores, [0, 2, 1]), 0.0)
    total = tf.reduce_sum(weights, axis=-1, keepdims=True)
    voted = tf.math.divide_no_nan(tf.matmul(weights, boxes), total)
    return tf.where(total > 0, voted, kept_boxes)


def class_agnostic_nms(boxes: tf.Tensor | np.ndarray, scores: tf.Tensor | np.ndarray, score_threshold: float,
                       iou_threshold: float, max_detections: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Non-maximum suppression of one image over all classes at once (each box scored by its best class).

    Args:
        boxes: [P, 4] corner form (any units).  scores: [P, C] per-class scores without a background column.
    Returns:
        (boxes [K, 4], scores [K], classes [K] int32 in 0..C-1), sorted by score, K <= ``max_detections``.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    best = tf.reduce_max(scores, axis=-1)
    keep = tf.image.non_max_suppression(boxes, best, max_detections, iou_threshold, score_threshold)
    return (tf.gather(boxes, keep), tf.gather(best, keep),
            tf.gather(tf.argmax(scores, axis=-1, output_type=tf.int32), keep))
