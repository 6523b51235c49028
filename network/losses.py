"""MultiBox loss: smooth L1 on positive priors, softmax cross-entropy with hard negative mining."""
import tensorflow as tf


def smooth_l1(diff):
    """Elementwise smooth L1 (Huber with delta 1)."""
    abs_diff = tf.abs(diff)
    return tf.where(abs_diff < 1.0, 0.5 * tf.square(diff), abs_diff - 0.5)


def hard_negative_mask(class_loss, positives, neg_pos_ratio, ignored=None):
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


def count_positives(targets):
    """Number of positive (face) priors in a batch of targets [B, P, 5], as float32."""
    return tf.reduce_sum(tf.cast(targets[..., 4] > 0, tf.float32))


def multibox_loss(targets, predictions, num_classes, neg_pos_ratio=3, num_positives=None):
    """SSD loss of a batch.

    Args:
        targets: [B, P, 5] from ``components.box_utils.encode_targets`` (4 offsets, class id; a negative id
            marks a prior matched to an ignored box, left out of both losses).
        predictions: [B, P, 4 + num_classes] network output (offsets, class logits).
        num_positives: the normaliser; defaults to :func:`count_positives` of ``targets``. Distributed
            training passes the count over all replicas so that the replicas' losses add up to the global one.
    Returns:
        (localisation loss, classification loss): scalars, each summed over the selected priors and divided
        by the number of positive priors (at least 1, so a batch without faces is safe).
    """
    predictions = tf.cast(predictions, tf.float32)
    loc_targets, labels = targets[..., :4], tf.cast(targets[..., 4], tf.int32)
    loc_pred, logits = predictions[..., :4], predictions[..., 4:4 + num_classes]
    positives, ignored = labels > 0, labels < 0

    class_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.maximum(labels, 0), logits=logits)
    negatives = hard_negative_mask(tf.stop_gradient(class_loss), positives, neg_pos_ratio, ignored)
    selected = tf.cast(tf.logical_or(positives, negatives), tf.float32)

    loc_loss = tf.reduce_sum(smooth_l1(loc_pred - loc_targets) * tf.cast(positives, tf.float32)[..., None])
    num_positives = tf.maximum(count_positives(targets) if num_positives is None else num_positives, 1.0)
    return loc_loss / num_positives, tf.reduce_sum(class_loss * selected) / num_positives
