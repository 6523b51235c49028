"""Tests of network/losses.py, and that the trainer's step lowers the loss on a real fixture batch."""
import numpy as np
import pytest
import tensorflow as tf

from components.box_utils import decode_boxes
from components.config import DEFAULT_SETTINGS
from components.prior_box import priors_from_config
from network.losses import focal_class_loss, hard_negative_mask, multibox_loss, quality_class_loss, smooth_l1

NUM_CLASSES = 3
VARIANCES = DEFAULT_SETTINGS.model.variances


def random_batch(rng, batch=2, priors=300, positives_per_image=(5, 9)):
    """(targets [B, P, 5], predictions [B, P, 4 + C]) with the given number of positives per image."""
    targets = np.zeros((batch, priors, 5), np.float32)
    for b, count in enumerate(positives_per_image):
        index = rng.choice(priors, count, replace=False)
        targets[b, index, :4] = rng.normal(0, 1, (count, 4))
        targets[b, index, 4] = rng.integers(1, NUM_CLASSES, count)
    predictions = rng.normal(0, 1, (batch, priors, 4 + NUM_CLASSES)).astype(np.float32)
    return targets, predictions


def reference_loss(targets, predictions, neg_pos_ratio=3):
    """The MultiBox loss written out with numpy loops."""
    labels = targets[..., 4].astype(int)
    logits = predictions[..., 4:]
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    class_loss = -np.take_along_axis(log_softmax, labels[..., None], -1)[..., 0]
    loc_total, class_total, num_pos = 0.0, 0.0, 0
    for b in range(len(targets)):
        positive = labels[b] > 0
        diff = np.abs(predictions[b, positive, :4] - targets[b, positive, :4])
        loc_total += np.where(diff < 1, 0.5 * diff ** 2, diff - 0.5).sum()
        count = min(neg_pos_ratio * positive.sum(), (~positive).sum())
        negatives = np.sort(class_loss[b, ~positive])[::-1][:count]
        class_total += class_loss[b, positive].sum() + negatives.sum()
        num_pos += positive.sum()
    num_pos = max(num_pos, 1)
    return loc_total / num_pos, class_total / num_pos


def test_smooth_l1():
    np.testing.assert_allclose(smooth_l1(tf.constant([-3.0, -1.0, -0.5, 0.0, 0.5, 2.0])).numpy(),
                               [2.5, 0.5, 0.125, 0.0, 0.125, 1.5])


def test_loss_is_finite_positive_and_matches_reference():
    rng = np.random.default_rng(0)
    targets, predictions = random_batch(rng)
    loc, cls = [float(v) for v in multibox_loss(targets, predictions, NUM_CLASSES, 3)]
    assert np.isfinite([loc, cls]).all() and loc > 0 and cls > 0
    expected_loc, expected_cls = reference_loss(targets, predictions)
    assert loc == pytest.approx(expected_loc, rel=1e-5)
    assert cls == pytest.approx(expected_cls, rel=1e-5)


def test_batch_without_positives_is_finite():
    rng = np.random.default_rng(1)
    targets = np.zeros((2, 300, 5), np.float32)
    predictions = rng.normal(0, 3, (2, 300, 4 + NUM_CLASSES)).astype(np.float32)
    loc, cls = [float(v) for v in multibox_loss(targets, predictions, NUM_CLASSES, 3)]
    assert np.isfinite(loc) and np.isfinite(cls)
    assert loc == 0.0
    # and the gradient is finite too
    predictions = tf.Variable(predictions)
    with tf.GradientTape() as tape:
        total = tf.add_n(multibox_loss(targets, predictions, NUM_CLASSES, 3))
    assert np.isfinite(tape.gradient(total, predictions).numpy()).all()


def test_one_image_without_faces_in_a_batch():
    rng = np.random.default_rng(2)
    targets, predictions = random_batch(rng, positives_per_image=(0, 4))
    loc, cls = [float(v) for v in multibox_loss(targets, predictions, NUM_CLASSES, 3)]
    expected_loc, expected_cls = reference_loss(targets, predictions)
    assert loc == pytest.approx(expected_loc, rel=1e-5) and cls == pytest.approx(expected_cls, rel=1e-5)


def reference_diou_term(targets, predictions, priors, variances):
    """Sum over positive priors of 1 - DIoU of the decoded boxes, written out with numpy."""
    positive = targets[..., 4] > 0
    total = 0.0
    for a, b in zip(decode_boxes(predictions[..., :4], priors, variances).numpy()[positive],
                    decode_boxes(targets[..., :4], priors, variances).numpy()[positive]):
        inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0)
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        enclosing = (max(a[2], b[2]) - min(a[0], b[0])) ** 2 + (max(a[3], b[3]) - min(a[1], b[1])) ** 2
        distance = ((a[0] + a[2] - b[0] - b[2]) / 2) ** 2 + ((a[1] + a[3] - b[1] - b[3]) / 2) ** 2
        total += 1.0 - (inter / union - distance / enclosing)
    return total


def test_diou_term_adds_to_the_localisation_loss_only():
    rng = np.random.default_rng(5)
    priors = priors_from_config(DEFAULT_SETTINGS.model, (60, 80))
    targets, predictions = random_batch(rng, priors=len(priors))
    targets[..., :4] *= 0.5                      # offsets of a plausible size, so the boxes stay sane
    predictions[..., :4] = targets[..., :4] + rng.normal(0, 0.3, targets[..., :4].shape)
    plain_loc, plain_cls = [float(v) for v in multibox_loss(targets, predictions, NUM_CLASSES, 3)]
    loc, cls = [float(v) for v in multibox_loss(targets, predictions, NUM_CLASSES, 3,
                                                diou=(2.0, priors, VARIANCES))]
    num_positives = float((targets[..., 4] > 0).sum())
    extra = 2.0 * reference_diou_term(targets, predictions, priors, VARIANCES) / num_positives
    assert extra > 0
    assert loc == pytest.approx(plain_loc + extra, rel=1e-4)
    assert cls == plain_cls
    # perfect boxes: no DIoU loss either
    perfect = np.concatenate([targets[..., :4], predictions[..., 4:]], axis=-1)
    assert float(multibox_loss(targets, perfect, NUM_CLASSES, 3, diou=(2.0, priors, VARIANCES))[0]) \
        == pytest.approx(0.0, abs=1e-5)


def reference_focal_loss(targets, predictions, gamma):
    """Sum of the softmax focal loss over the priors that are not ignored, per positive, with numpy."""
    labels = targets[..., 4].astype(int)
    logits = predictions[..., 4:]
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    p_true = np.take_along_axis(probabilities, np.maximum(labels, 0)[..., None], -1)[..., 0]
    per_prior = -((1 - p_true) ** gamma) * np.log(p_true)
    return per_prior[labels >= 0].sum() / max((labels > 0).sum(), 1)


def test_focal_loss_replaces_hard_negative_mining_in_the_class_loss_only():
    rng = np.random.default_rng(7)
    targets, predictions = random_batch(rng)
    targets[0, :3, 4] = -1                                 # ignored priors: in neither loss
    plain_loc, plain_cls = [float(v) for v in multibox_loss(targets, predictions, NUM_CLASSES, 3)]
    loc, cls = [float(v) for v in multibox_loss(targets, predictions, NUM_CLASSES, 3, focal_gamma=2.0)]
    assert loc == plain_loc
    assert cls == pytest.approx(reference_focal_loss(targets, predictions, 2.0), rel=1e-5)
    assert cls != pytest.approx(plain_cls, rel=1e-2)
    # gamma 0 would be the cross-entropy of every prior; the focal term weighs confident priors down
    assert focal_class_loss(tf.constant([1, 0]), tf.constant([[0.0, 6.0], [6.0, 0.0]]), 2.0).numpy() \
        == pytest.approx(np.full(2, (1 / (1 + np.e ** 6)) ** 2 * np.log(1 + np.e ** -6)), rel=1e-4)


def test_focal_loss_gradient_is_finite_on_confident_predictions():
    logits = tf.Variable([[[30.0, -30.0, 0.0], [-30.0, 30.0, 0.0]]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(focal_class_loss(tf.constant([[0, 1]]), logits, 2.0))
    assert np.isfinite(tape.gradient(loss, logits).numpy()).all() and np.isfinite(float(loss))


def test_validation_loss_step_follows_the_focal_setting():
    from training.trainer import make_loss_step

    rng = np.random.default_rng(8)
    small = DEFAULT_SETTINGS.replace(input_size=(60, 80), focal_gamma=2.0)
    targets, predictions = random_batch(rng, priors=len(priors_from_config(small.model)))
    focal = [float(v) for v in make_loss_step(small)(targets, predictions)]
    mined = [float(v) for v in make_loss_step(small.replace(focal_gamma=0.0))(targets, predictions)]
    assert focal[1] == pytest.approx(reference_focal_loss(targets, predictions, 2.0), rel=1e-5)
    assert mined[1] == pytest.approx(reference_loss(targets, predictions)[1], rel=1e-5)
    assert focal[0] == pytest.approx(mined[0], rel=1e-6)


def reference_quality_loss(targets, predictions, priors, variances, neg_pos_ratio=3):
    """The classification loss with IoU-aware targets for the positives, with numpy (mining as reference_loss)."""
    labels = targets[..., 4].astype(int)
    logits = predictions[..., 4:]
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    predicted = decode_boxes(predictions[..., :4], priors, variances).numpy()
    true = decode_boxes(targets[..., :4], priors, variances).numpy()
    total = 0.0
    for b in range(len(targets)):
        positive = labels[b] > 0
        for i in np.flatnonzero(positive):
            a, t = predicted[b, i], true[b, i]
            inter = max(min(a[2], t[2]) - max(a[0], t[0]), 0) * max(min(a[3], t[3]) - max(a[1], t[1]), 0)
            iou = inter / ((a[2] - a[0]) * (a[3] - a[1]) + (t[2] - t[0]) * (t[3] - t[1]) - inter)
            total -= iou * log_softmax[b, i, labels[b, i]] + (1 - iou) * log_softmax[b, i, 0]
        count = min(neg_pos_ratio * positive.sum(), (~positive).sum())
        total += np.sort(-log_softmax[b, ~positive, 0])[::-1][:count].sum()
    return total / max((labels > 0).sum(), 1)


def test_quality_targets_change_the_positives_class_loss_only():
    rng = np.random.default_rng(9)
    priors = priors_from_config(DEFAULT_SETTINGS.model, (60, 80))
    targets, predictions = random_batch(rng, priors=len(priors))
    targets[..., :4] *= 0.5
    predictions[..., :4] = targets[..., :4] + rng.normal(0, 0.3, targets[..., :4].shape)
    quality = (priors, VARIANCES)
    plain_loc, plain_cls = [float(v) for v in multibox_loss(targets, predictions, NUM_CLASSES, 3)]
    loc, cls = [float(v) for v in multibox_loss(targets, predictions, NUM_CLASSES, 3, quality=quality)]
    assert loc == plain_loc
    assert cls == pytest.approx(reference_quality_loss(targets, predictions, priors, VARIANCES), rel=1e-4)
    assert cls != pytest.approx(plain_cls, rel=1e-3)
    # boxes that fit exactly: the targets are 1, the plain cross-entropy
    perfect = np.concatenate([targets[..., :4], predictions[..., 4:]], axis=-1)
    assert float(multibox_loss(targets, perfect, NUM_CLASSES, 3, quality=quality)[1]) \
        == pytest.approx(plain_cls, rel=1e-4)


def test_quality_class_loss_is_lowest_where_the_score_matches_the_iou():
    labels = tf.constant([[1]])
    losses = [float(quality_class_loss(labels, tf.constant([[[0.0, np.log(p / (1 - p)), -50.0]]]),
                                       tf.constant([[0.7]]))[0, 0]) for p in (0.5, 0.7, 0.9)]
    assert losses[1] < losses[0] and losses[1] < losses[2]


def test_validation_loss_step_follows_the_diou_setting():
    from training.trainer import loss_options, make_loss_step

    rng = np.random.default_rng(6)
    small = DEFAULT_SETTINGS.replace(input_size=(60, 80), diou_loss_weight=1.0)
    targets, predictions = random_batch(rng, priors=len(priors_from_config(small.model)))
    targets[..., :4] *= 0.5
    with_diou = [float(v) for v in make_loss_step(small)(targets, predictions)]
    without = [float(v) for v in make_loss_step(small.replace(diou_loss_weight=0.0))(targets, predictions)]
    expected = [float(v) for v in multibox_loss(targets, predictions, **loss_options(small))]
    assert with_diou == pytest.approx(expected, rel=1e-5)
    assert with_diou[0] > without[0] and with_diou[1] == pytest.approx(without[1], rel=1e-6)


def test_hard_negatives_are_three_per_positive_and_the_hardest():
    rng = np.random.default_rng(3)
    class_loss = rng.uniform(0, 5, (3, 100)).astype(np.float32)
    positives = np.zeros((3, 100), bool)
    positives[0, rng.choice(100, 5, replace=False)] = True
    positives[1, rng.choice(100, 40, replace=False)] = True     # 3 x 40 > 60 backgrounds: capped
    mask = hard_negative_mask(tf.constant(class_loss), tf.constant(positives), 3).numpy()
    assert mask.sum(axis=1).tolist() == [15, 60, 0]
    assert not np.any(mask & positives)
    for b in range(2):
        background = np.flatnonzero(~positives[b])
        hardest = background[np.argsort(-class_loss[b, background])[:mask[b].sum()]]
        assert set(np.flatnonzero(mask[b])) == set(hardest)


def test_perfect_predictions_give_near_zero_loss():
    rng = np.random.default_rng(4)
    targets, _ = random_batch(rng)
    labels = targets[..., 4].astype(int)
    logits = np.eye(NUM_CLASSES, dtype=np.float32)[labels] * 30.0
    predictions = np.concatenate([targets[..., :4], logits], axis=-1)
    loc, cls = [float(v) for v in multibox_loss(targets, predictions, NUM_CLASSES, 3)]
    assert loc == pytest.approx(0.0, abs=1e-7)
    assert cls == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("loss_settings", [{}, {"diou_loss_weight": 1.0}, {"focal_gamma": 2.0},
                                           {"quality_targets": True}])
def test_train_step_lowers_the_loss_on_a_real_batch(tiny_cfg, voc_mini_tfrecords, loss_settings):
    from dataset.tf_dataset_preprocess import load_dataset
    from network.network import build_model
    from training.trainer import build_optimizer, make_train_step

    tf.keras.utils.set_random_seed(0)
    settings = tiny_cfg.replace(network="slim", batch_size=4, init_lr=1e-2, warmup_epoch=0, **loss_settings)
    images, targets = next(iter(load_dataset(voc_mini_tfrecords["train"], settings, training=False, shuffle=False)))
    assert images.shape[0] == 4 and float(tf.reduce_sum(tf.cast(targets[..., 4] > 0, tf.float32))) > 0
    model = build_model(settings)
    optimizer = build_optimizer(settings, steps_per_epoch=100)
    train_step = make_train_step(model, optimizer, settings)
    losses = [float(train_step(images, targets)[0]) for _ in range(12)]
    assert np.isfinite(losses).all()
    assert int(optimizer.iterations) == 12
    assert np.mean(losses[-3:]) < 0.85 * np.mean(losses[:3]), losses
