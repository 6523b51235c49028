"""MultiBox loss: smooth L1 on positive priors (plus, optionally, a distance-IoU term on their decoded
boxes), softmax cross-entropy with hard negative mining (or, optionally, the softmax focal loss on every
prior; optionally with IoU-aware targets for the positives)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

from components.box_utils import decode_boxes, paired_diou, paired_iou

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    import numpy as np


def smooth_l1(diff: tf.Tensor) -> tf.Tensor:
    """Elementwise smooth L1 (Huber with delta 1)."""
    abs_diff = tf.abs(diff)
    return tf.where(abs_diff < 1.0, 0.5 * tf.square(diff), abs_diff - 0.5)


def hard_negative_mask(class_loss: tf.Tensor, positives: tf.Tensor, neg_pos_ratio: int | float,
                       ignored: tf.Tensor | None = None) -> tf.Tensor:
    """Pick the hardest background priors, ``neg_pos_ratio`` per positive of the same image.

    Args:
        class_loss: [B, P] per-prior cross-entropy.  positives: [B, P] bool.
        ignored: [B, P] bool priors that are neither positive nor negative (matched to an ignored box).
    Returns:
        [B, P] bool mask of the selected negatives.
    """
    excluded = positives if ignored is None else tf.logical_or(positives, ignored)
    background_loss = tf.where(excluded, tf.fill(tf.shape(class_loss), -1.0), class_loss)
    order = tf.argsort(background_loss, axis=1, direction="DESCENDING")
    rank = tf.argsort(order, axis=1)
    num_positives = tf.reduce_sum(tf.cast(positives, tf.int32), axis=1, keepdims=True)
    num_candidates = tf.reduce_sum(tf.cast(tf.logical_not(excluded), tf.int32), axis=1, keepdims=True)
    num_negatives = tf.minimum(neg_pos_ratio * num_positives, num_candidates)
    return tf.logical_and(rank < num_negatives, tf.logical_not(excluded))


def focal_class_loss(labels: tf.Tensor, logits: tf.Tensor, gamma: float) -> tf.Tensor:
    """Per-prior softmax focal loss (Lin et al. 2017): the cross-entropy times ``(1 - p)^gamma``, ``p`` the
    softmax probability of the true class, so that well-classified priors weigh little.

    Args:
        labels: [B, P] int class ids (0 = background).  logits: [B, P, C].
    Returns:
        [B, P] float32 (the cross-entropy itself where ``gamma`` is 0).
    """
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.pow(1.0 - tf.exp(-cross_entropy), gamma) * cross_entropy


def quality_class_loss(labels: tf.Tensor, logits: tf.Tensor, quality: tf.Tensor) -> tf.Tensor:
    """Per-prior softmax cross-entropy against soft targets: ``quality`` on the true class and ``1 - quality``
    on the background (IoU-aware classification: a positive prior's score learns how well its box fits).

    Args:
        labels: [B, P] int class ids (0 = background).  logits: [B, P, C].
        quality: [B, P] float32 in [0, 1], used where ``labels`` > 0 (the background's target stays 1).
    Returns:
        [B, P] float32.
    """
    log_probabilities = tf.nn.log_softmax(logits, axis=-1)
    true_class = tf.gather(log_probabilities, labels, axis=-1, batch_dims=2)
    quality = tf.where(labels > 0, quality, 1.0)
    return -(quality * true_class + (1.0 - quality) * log_probabilities[..., 0])


def distillation_class_loss(logits: tf.Tensor, teacher_probabilities: tf.Tensor) -> tf.Tensor:
    """Per-prior cross-entropy of the student's softmax against a teacher's class probabilities, less the
    teacher's own entropy (the KL divergence: 0 where the two agree; the gradient is the cross-entropy's).

    Args:
        logits: [B, P, C] student class logits.  teacher_probabilities: [B, P, C], rows summing to 1.
    Returns:
        [B, P] float32, >= 0.
    """
    teacher = tf.stop_gradient(tf.cast(teacher_probabilities, tf.float32))
    log_teacher = tf.math.log(tf.maximum(teacher, 1e-8))
    return tf.reduce_sum(teacher * (log_teacher - tf.nn.log_softmax(logits, axis=-1)), axis=-1)


def count_positives(targets: tf.Tensor) -> tf.Tensor:
    """Number of positive (face) priors in a batch of targets [B, P, 5], as float32."""
    return tf.reduce_sum(tf.cast(targets[..., 4] > 0, tf.float32))


def diou_loss(loc_targets: tf.Tensor, loc_pred: tf.Tensor, priors: tf.Tensor | np.ndarray,
              variances: Sequence[float]) -> tf.Tensor:
    """Per-prior ``1 - DIoU`` of the boxes decoded from predicted and target offsets.

    Args:
        loc_targets, loc_pred: [B, P, 4] offsets.  priors: [P, 4] centre form, normalised.
    Returns:
        [B, P] float32 in [0, 2].
    """
    return 1.0 - paired_diou(decode_boxes(loc_pred, priors, variances), decode_boxes(loc_targets, priors, variances))


def box_quality(loc_targets: tf.Tensor, loc_pred: tf.Tensor, priors: tf.Tensor | np.ndarray,
                variances: Sequence[float]) -> tf.Tensor:
    """IoU of each prior's decoded box with its target box, without gradient. [B, P] float32 in [0, 1]."""
    return tf.stop_gradient(paired_iou(decode_boxes(loc_pred, priors, variances),
                                       decode_boxes(loc_targets, priors, variances)))


def multibox_loss(targets: tf.Tensor, predictions: tf.Tensor, num_classes: int, neg_pos_ratio: int | float = 3,
                  num_positives: tf.Tensor | None = None, diou: tuple[Any, ...] | None = None, focal_gamma: float = 0.0,
                  quality: tuple[Any, ...] | None = None,
                  distill: tuple[tf.Tensor, float] | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """SSD loss of a batch.

    Args:
        targets: [B, P, 5] from ``components.box_utils.encode_targets`` (4 offsets, class id; a negative id
            marks a prior matched to an ignored box, left out of both losses).
        predictions: [B, P, 4 + num_classes] network output (offsets, class logits).
        num_positives: the normaliser; defaults to :func:`count_positives` of ``targets``. Distributed
            training passes the count over all replicas so that the replicas' losses add up to the global one.
        diou: None, or (weight, priors [P, 4], variances): adds ``weight * (1 - DIoU)`` of every positive
            prior's decoded box to the localisation loss (``diou_loss_weight`` in the config).
        focal_gamma: where > 0, the classification loss is :func:`focal_class_loss` summed over every prior
            that is not ignored, instead of the cross-entropy of the positives and the hard negatives
            (``neg_pos_ratio`` is then unused).
        quality: None, or (priors [P, 4], variances): each positive prior's class target is the IoU of its
            decoded box with its face (:func:`quality_class_loss`) instead of 1 (``quality_targets``).
        distill: None, or (teacher class probabilities [B, P, C], weight): adds ``weight`` times
            :func:`distillation_class_loss` of the priors the class loss selects (positives and hard
            negatives) to the classification loss (``distill_teacher``; not with ``focal_gamma``).
    Returns:
        (localisation loss, classification loss): scalars, each summed over the selected priors and divided
        by the number of positive priors (at least 1, so a batch without faces is safe).
    """
    predictions = tf.cast(predictions, tf.float32)
    loc_targets, labels = targets[..., :4], tf.cast(targets[..., 4], tf.int32)
    loc_pred, logits = predictions[..., :4], predictions[..., 4:4 + num_classes]
    positives, ignored = labels > 0, labels < 0

    if focal_gamma > 0:
        class_loss = focal_class_loss(tf.maximum(labels, 0), logits, focal_gamma)
        selected = tf.cast(tf.logical_not(ignored), tf.float32)
    else:
        if quality is None:
            class_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.maximum(labels, 0), logits=logits)
        else:   # the same cross-entropy on every prior but the positives, which mining leaves out anyway
            class_loss = quality_class_loss(tf.maximum(labels, 0), logits,
                                            box_quality(loc_targets, loc_pred, *quality))
        negatives = hard_negative_mask(tf.stop_gradient(class_loss), positives, neg_pos_ratio, ignored)
        selected = tf.cast(tf.logical_or(positives, negatives), tf.float32)
        if distill is not None:
            teacher_probabilities, weight = distill
            class_loss += weight * distillation_class_loss(logits, teacher_probabilities)

    per_prior = tf.reduce_sum(smooth_l1(loc_pred - loc_targets), axis=-1)
    if diou is not None:
        weight, priors, variances = diou
        per_prior += weight * diou_loss(loc_targets, loc_pred, priors, variances)
    loc_loss = tf.reduce_sum(per_prior * tf.cast(positives, tf.float32))
    num_positives = tf.maximum(count_positives(targets) if num_positives is None else num_positives, 1.0)
    return loc_loss / num_positives, tf.reduce_sum(class_loss * selected) / num_positives
