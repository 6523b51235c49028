"""Tests of components/box_utils.py against brute-force Python references."""
import numpy as np
import pytest

from components.box_utils import (
    batched_nms,
    box_area,
    center_to_corner,
    corner_to_center,
    decode_boxes,
    encode_boxes,
    encode_targets,
    iou_matrix,
    paired_diou,
    paired_iou,
    soft_nms,
    vote_boxes,
)
from components.config import DEFAULT_SETTINGS
from components.prior_box import priors_from_config

VARIANCES = DEFAULT_SETTINGS.model.variances
MATCH_THRESH = DEFAULT_SETTINGS.match.match_thresh


def random_corner_boxes(rng, count, min_size=0.01, max_size=0.5):
    """Random valid corner-form boxes inside the unit square."""
    size = rng.uniform(min_size, max_size, (count, 2))
    top_left = rng.uniform(0, 1 - size)
    return np.concatenate([top_left, top_left + size], axis=1).astype(np.float32)


def brute_force_iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = max(a[2] - a[0], 0) * max(a[3] - a[1], 0) + max(b[2] - b[0], 0) * max(b[3] - b[1], 0) - inter
    return inter / union if union > 0 else 0.0


def clustered_boxes(rng, batch, num_boxes, num_classes):
    """Boxes [B, N, 4] jittered around six centres per image (so that NMS suppresses) and scores [B, N, C]."""
    centres = rng.uniform(0.2, 0.8, (batch, 6, 2))
    pick = rng.integers(0, 6, (batch, num_boxes))
    centre = np.take_along_axis(centres, pick[..., None], axis=1) + rng.normal(0, 0.02, (batch, num_boxes, 2))
    size = rng.uniform(0.05, 0.2, (batch, num_boxes, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=-1).astype(np.float32)
    return boxes, rng.uniform(0, 1, (batch, num_boxes, num_classes)).astype(np.float32)


def test_center_corner_round_trip():
    rng = np.random.default_rng(0)
    centre = np.concatenate([rng.uniform(0, 1, (50, 2)), rng.uniform(0.01, 1, (50, 2))], axis=1)
    corner = center_to_corner(centre).numpy()
    np.testing.assert_allclose(corner[:, 2:] - corner[:, :2], centre[:, 2:], atol=1e-6)
    np.testing.assert_allclose(corner_to_center(corner).numpy(), centre, atol=1e-6)
    np.testing.assert_allclose(center_to_corner([[0.5, 0.5, 0.2, 0.4]]).numpy(), [[0.4, 0.3, 0.6, 0.7]], atol=1e-6)
    # batched shapes are kept
    assert center_to_corner(np.zeros((2, 3, 4))).shape == (2, 3, 4)


def test_box_area_is_zero_for_inverted_boxes():
    np.testing.assert_allclose(box_area([[0, 0, 2, 3], [2, 2, 1, 5], [1, 1, 1, 4]]).numpy(), [6, 0, 0])


def test_iou_matrix_matches_brute_force():
    rng = np.random.default_rng(1)
    special = np.array([
        [0.1, 0.1, 0.3, 0.3],     # reference
        [0.5, 0.5, 0.7, 0.7],     # disjoint from it
        [0.15, 0.15, 0.25, 0.25], # contained in it
        [0.3, 0.1, 0.5, 0.3],     # touching it along an edge
        [0.3, 0.3, 0.4, 0.4],     # touching it at a corner
        [0.2, 0.2, 0.2, 0.2],     # zero area, inside it
        [0.1, 0.1, 0.3, 0.3],     # identical
    ], np.float32)
    boxes_a = np.concatenate([special, random_corner_boxes(rng, 20)])
    boxes_b = np.concatenate([special[::-1], random_corner_boxes(rng, 15)])
    result = iou_matrix(boxes_a, boxes_b).numpy()
    expected = np.array([[brute_force_iou(a, b) for b in boxes_b] for a in boxes_a])
    assert result.shape == (len(boxes_a), len(boxes_b))
    np.testing.assert_allclose(result, expected, atol=1e-6)
    assert result[0, len(special) - 1] == pytest.approx(1.0)            # identical
    assert result[0, len(special) - 2] == 0.0                           # disjoint
    assert result[0, len(special) - 3] == pytest.approx(0.25)          # contained: 0.01 / 0.04
    assert result[0, 3] == 0.0 and result[0, 2] == 0.0                  # touching
    assert np.isfinite(iou_matrix(special[5:6], special[5:6]).numpy()).all()   # zero-area pair: 0, not NaN
    assert iou_matrix(special[5:6], special[5:6]).numpy()[0, 0] == 0.0


def brute_force_diou(a, b):
    """Distance-IoU written out: IoU - (centre distance)^2 / (enclosing box diagonal)^2."""
    centre_a, centre_b = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2), ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    width, height = max(a[2], b[2]) - min(a[0], b[0]), max(a[3], b[3]) - min(a[1], b[1])
    distance = (centre_a[0] - centre_b[0]) ** 2 + (centre_a[1] - centre_b[1]) ** 2
    return brute_force_iou(a, b) - distance / (width ** 2 + height ** 2)


def test_paired_diou_matches_brute_force_on_random_pairs():
    rng = np.random.default_rng(12)
    boxes_a, boxes_b = random_corner_boxes(rng, 300), random_corner_boxes(rng, 300)
    expected = [brute_force_diou(a, b) for a, b in zip(boxes_a, boxes_b)]
    np.testing.assert_allclose(paired_diou(boxes_a, boxes_b).numpy(), expected, atol=1e-6)
    # leading batch dimensions, as the loss passes [B, P, 4]
    assert paired_diou(np.stack([boxes_a, boxes_a]), np.stack([boxes_b, boxes_b])).shape == (2, 300)


def test_paired_iou_is_the_diagonal_of_the_iou_matrix():
    rng = np.random.default_rng(11)
    boxes_a, boxes_b = random_corner_boxes(rng, 200), random_corner_boxes(rng, 200)
    expected = np.diag(iou_matrix(boxes_a, boxes_b).numpy())
    np.testing.assert_allclose(paired_iou(boxes_a, boxes_b).numpy(), expected, atol=1e-6)
    assert 0 < expected.max() and expected.min() == 0      # both overlapping and disjoint pairs


def test_paired_diou_special_cases():
    box = np.array([0.2, 0.2, 0.4, 0.5], np.float32)
    assert paired_diou(box, box).numpy() == pytest.approx(1.0)
    # disjoint: IoU 0, so DIoU is minus the distance term, and lower the further apart
    near, far = np.array([0.5, 0.2, 0.7, 0.5], np.float32), np.array([0.8, 0.2, 1.0, 0.5], np.float32)
    assert -1.0 < paired_diou(box, far).numpy() < paired_diou(box, near).numpy() < 0.0
    # same centre, one inside the other: plain IoU (0.06 / 0.24)
    outer = np.array([0.1, 0.05, 0.5, 0.65], np.float32)
    assert paired_diou(box, outer).numpy() == pytest.approx(0.25, abs=1e-6)
    # two zero-area boxes at one point: finite
    point = np.array([0.3, 0.3, 0.3, 0.3], np.float32)
    assert np.isfinite(paired_diou(point, point).numpy())


def test_iou_matrix_with_empty_inputs():
    assert iou_matrix(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)
    assert iou_matrix(np.zeros((2, 4)), np.zeros((0, 4))).shape == (2, 0)


def test_encode_decode_round_trip():
    rng = np.random.default_rng(2)
    boxes = random_corner_boxes(rng, 200, 0.005, 0.9)
    priors = np.concatenate([rng.uniform(0, 1, (200, 2)), rng.uniform(0.02, 0.6, (200, 2))], axis=1)
    offsets = encode_boxes(boxes, priors, VARIANCES)
    np.testing.assert_allclose(decode_boxes(offsets, priors, VARIANCES).numpy(), boxes, atol=1e-5)
    # a box equal to its prior has zero offsets
    np.testing.assert_allclose(encode_boxes(center_to_corner(priors), priors, VARIANCES).numpy(), 0, atol=1e-4)
    # decode broadcasts over a batch
    batch = decode_boxes(np.stack([offsets, offsets]), priors, VARIANCES)
    assert batch.shape == (2, 200, 4)


def test_encode_uses_variances():
    prior = np.array([[0.5, 0.5, 0.2, 0.2]], np.float32)
    box = center_to_corner([[0.52, 0.5, 0.2 * np.e, 0.2]])
    np.testing.assert_allclose(encode_boxes(box, prior, (0.1, 0.2)).numpy(), [[1.0, 0.0, 5.0, 0.0]], atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_encode_targets_matches_every_face(seed):
    rng = np.random.default_rng(seed)
    priors = priors_from_config(DEFAULT_SETTINGS.model)
    corner_priors = center_to_corner(priors).numpy()
    gt_boxes = np.concatenate([random_corner_boxes(rng, 5, 0.03, 0.4),
                               np.array([[0.40, 0.40, 0.42, 0.43]], np.float32)])   # a tiny face
    gt_labels = rng.integers(1, 3, len(gt_boxes))
    targets = encode_targets(gt_boxes, gt_labels, priors, MATCH_THRESH, VARIANCES).numpy()
    assert targets.shape == (len(priors), 5)
    labels = targets[:, 4]
    assert set(np.unique(labels)) <= {0.0, 1.0, 2.0}

    overlaps = np.array([[brute_force_iou(g, p) for p in corner_priors] for g in gt_boxes])   # [G, P]
    best_prior = overlaps.argmax(axis=1)
    positive = labels > 0
    decoded = decode_boxes(targets[:, :4], priors, VARIANCES).numpy()
    for index, (box, label) in enumerate(zip(gt_boxes, gt_labels)):
        matched = positive & np.all(np.abs(decoded - box) < 1e-4, axis=1)
        assert matched.any(), f"gt box {index} has no positive prior"
        assert matched[best_prior[index]], f"gt box {index} did not claim its best prior"
        np.testing.assert_array_equal(labels[matched], label)
    # every positive decodes to one of the boxes and is either a good overlap or a forced best prior
    for prior_index in np.flatnonzero(positive):
        distance = np.abs(gt_boxes - decoded[prior_index]).max(axis=1)
        gt_index = distance.argmin()
        assert distance[gt_index] < 1e-4
        assert overlaps[gt_index, prior_index] >= MATCH_THRESH - 1e-6 or prior_index in best_prior
        assert labels[prior_index] == gt_labels[gt_index]
    # background wherever no box overlaps enough and no box claimed the prior
    background = (overlaps.max(axis=0) < MATCH_THRESH - 1e-6)
    background[best_prior] = False
    assert np.all(labels[background] == 0)
    expected_positive = overlaps.max(axis=0) >= MATCH_THRESH + 1e-6
    expected_positive[best_prior] = True
    assert np.all(positive[expected_positive])


def test_encode_targets_without_objects():
    priors = priors_from_config(DEFAULT_SETTINGS.model)
    targets = encode_targets(np.zeros((0, 4), np.float32), np.zeros((0,), np.int32), priors,
                             MATCH_THRESH, VARIANCES).numpy()
    assert targets.shape == (len(priors), 5)
    assert not targets.any()


def compensated_matching_reference(overlaps, match_thresh, min_positives, min_positive_iou):
    """Brute-force S3FD matching: each prior's face index, or -1 for background."""
    num_gt, num_priors = overlaps.shape
    assigned = np.where(overlaps.max(axis=0) >= match_thresh, overlaps.argmax(axis=0), -1)
    free = overlaps.max(axis=0) < match_thresh
    claims = {}
    for g in range(num_gt):
        if (overlaps[g] >= match_thresh).sum() >= min_positives:
            continue
        kth = np.sort(overlaps[g])[::-1][min_positives - 1]
        for p in range(num_priors):
            if free[p] and overlaps[g, p] >= kth and overlaps[g, p] >= min_positive_iou:
                claims.setdefault(p, []).append(g)
    for p, faces in claims.items():
        assigned[p] = max(faces, key=lambda g: overlaps[g, p])
    for g in range(num_gt):   # forced best prior, later faces win
        assigned[overlaps[g].argmax()] = g
    return assigned


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_scale_compensated_matching_matches_reference(seed):
    rng = np.random.default_rng(seed)
    priors = priors_from_config(DEFAULT_SETTINGS.model)
    corner_priors = center_to_corner(priors).numpy()
    # small faces (some touching each other, so that they compete for priors) and a few large ones
    gt_boxes = np.concatenate([random_corner_boxes(rng, 6, 0.02, 0.06), random_corner_boxes(rng, 2, 0.1, 0.4)])
    gt_boxes = np.concatenate([gt_boxes, gt_boxes[:1] + [0.015, 0.0, 0.015, 0.0]])
    gt_labels = rng.integers(1, 3, len(gt_boxes))
    targets = encode_targets(gt_boxes, gt_labels, priors, 0.45, VARIANCES, min_positives=4,
                             min_positive_iou=0.2).numpy()
    overlaps = np.array([[brute_force_iou(g, p) for p in corner_priors] for g in gt_boxes])
    expected = compensated_matching_reference(overlaps, 0.45, 4, 0.2)
    np.testing.assert_array_equal(targets[:, 4], np.where(expected >= 0, gt_labels[np.maximum(expected, 0)], 0))
    positive = expected >= 0
    np.testing.assert_allclose(decode_boxes(targets[positive, :4], priors[positive], VARIANCES).numpy(),
                               gt_boxes[expected[positive]], atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_match_priors_gives_each_prior_its_face_as_the_reference_does(seed):
    from components.box_utils import match_priors
    rng = np.random.default_rng(seed)
    priors = priors_from_config(DEFAULT_SETTINGS.model)
    corner_priors = center_to_corner(priors).numpy()
    gt_boxes = np.concatenate([random_corner_boxes(rng, 5, 0.02, 0.06), random_corner_boxes(rng, 2, 0.1, 0.4)])
    matched, positive = (value.numpy() for value in match_priors(gt_boxes, priors, 0.45, 4, 0.2))
    overlaps = np.array([[brute_force_iou(g, p) for p in corner_priors] for g in gt_boxes])
    expected = compensated_matching_reference(overlaps, 0.45, 4, 0.2)
    np.testing.assert_array_equal(positive, expected >= 0)
    np.testing.assert_array_equal(matched[positive], expected[expected >= 0])
    empty_matched, empty_positive = match_priors(np.zeros((0, 4), np.float32), priors, 0.45, 4, 0.2)
    assert empty_matched.shape == (len(priors),) and not empty_positive.numpy().any()


def test_scale_compensated_matching_gives_small_faces_more_positives():
    priors = priors_from_config(DEFAULT_SETTINGS.model)
    small = np.array([[0.400, 0.400, 0.435, 0.447], [0.700, 0.200, 0.731, 0.243]], np.float32)  # ~11x11 px
    plain = encode_targets(small, [1, 2], priors, 0.45, VARIANCES).numpy()[:, 4]
    compensated = encode_targets(small, [1, 2], priors, 0.45, VARIANCES, min_positives=4).numpy()[:, 4]
    for label in (1, 2):
        assert (plain == label).sum() < 4 <= (compensated == label).sum()
    # large faces already match enough priors: nothing changes for them
    large = np.array([[0.1, 0.1, 0.5, 0.6]], np.float32)
    np.testing.assert_array_equal(encode_targets(large, [1], priors, 0.45, VARIANCES).numpy(),
                                  encode_targets(large, [1], priors, 0.45, VARIANCES, min_positives=4).numpy())


def greedy_nms_reference(boxes, scores, score_threshold, iou_threshold, max_detections):
    """Per class: drop scores <= threshold, keep greedily by score, suppress IoU > iou_threshold; then the
    best ``max_detections`` over all classes. Returns a sorted list of (score, class, prior index)."""
    kept = []
    for cls in range(scores.shape[1]):
        candidates = [i for i in np.argsort(-scores[:, cls]) if scores[i, cls] > score_threshold]
        chosen = []
        for i in candidates:
            if all(brute_force_iou(boxes[i], boxes[j]) <= iou_threshold for j in chosen):
                chosen.append(i)
        kept.extend((float(scores[i, cls]), cls, int(i)) for i in chosen[:max_detections])
    return sorted(kept, reverse=True)[:max_detections]


@pytest.mark.parametrize("max_detections", [200, 7])
def test_batched_nms_matches_greedy_reference(max_detections):
    rng = np.random.default_rng(3)
    batch, num_boxes, num_classes = 3, 60, 2
    boxes, scores = clustered_boxes(rng, batch, num_boxes, num_classes)   # so that suppression actually happens
    out_boxes, out_scores, out_classes, valid = [t.numpy() for t in
                                                 batched_nms(boxes, scores, 0.3, 0.4, max_detections)]
    assert out_boxes.shape == (batch, max_detections, 4)
    assert out_classes.dtype == np.int32
    for b in range(batch):
        expected = greedy_nms_reference(boxes[b], scores[b], 0.3, 0.4, max_detections)
        count = int(valid[b])
        assert count == len(expected)
        assert 0 < count < num_boxes * num_classes      # something was suppressed or thresholded
        np.testing.assert_allclose(out_scores[b, :count], [e[0] for e in expected], rtol=1e-6)
        np.testing.assert_array_equal(out_classes[b, :count], [e[1] for e in expected])
        np.testing.assert_allclose(out_boxes[b, :count], boxes[b][[e[2] for e in expected]], atol=1e-6)
        assert np.all(np.diff(out_scores[b, :count]) <= 0)
        assert np.all(out_scores[b, count:] == 0)


def test_iou_matrix_takes_batches():
    rng = np.random.default_rng(5)
    a = np.stack([random_corner_boxes(rng, 4) for _ in range(3)])
    b = np.stack([random_corner_boxes(rng, 6) for _ in range(3)])
    batched = iou_matrix(a, b).numpy()
    assert batched.shape == (3, 4, 6)
    for index in range(3):
        np.testing.assert_allclose(batched[index], iou_matrix(a[index], b[index]).numpy(), atol=1e-6)


@pytest.mark.parametrize("voting_iou", [0.5, 0.7])
def test_vote_boxes_matches_a_weighted_mean_reference(voting_iou):
    rng = np.random.default_rng(4)
    boxes, scores = clustered_boxes(rng, batch=2, num_boxes=50, num_classes=2)
    kept, _, kept_classes, valid = batched_nms(boxes, scores, 0.3, 0.4, 20)
    voted = vote_boxes(kept, kept_classes, boxes, scores, voting_iou).numpy()
    kept, kept_classes = kept.numpy(), kept_classes.numpy()
    moved = 0
    for b in range(2):
        for k in range(int(valid[b])):
            overlapping = [i for i in range(50) if brute_force_iou(kept[b, k], boxes[b, i]) >= voting_iou]
            weights = scores[b, overlapping, kept_classes[b, k]]
            expected = (weights[:, None] * boxes[b, overlapping]).sum(0) / weights.sum()
            np.testing.assert_allclose(voted[b, k], expected, atol=1e-5)
            moved += len(overlapping) > 1
        np.testing.assert_array_equal(voted[b, int(valid[b]):], kept[b, int(valid[b]):])   # padding as it was
    assert moved > 0


def test_box_voting_moves_boxes_but_keeps_scores_and_classes():
    from runtime.postprocessing import postprocess
    priors = priors_from_config(DEFAULT_SETTINGS.model)
    rng = np.random.default_rng(6)
    offsets = rng.normal(0, 0.5, (2, len(priors), 4)) * np.array([1.0, 1.0, 0.6, 0.6])   # (dcx, dcy, dw, dh)
    predictions = np.concatenate([offsets, rng.normal(0, 2, (2, len(priors), 3))], axis=-1).astype(np.float32)
    plain = [t.numpy() for t in postprocess(predictions, priors, DEFAULT_SETTINGS.replace(box_voting=0.0), 0.3)]
    voted = [t.numpy() for t in postprocess(predictions, priors, DEFAULT_SETTINGS.replace(box_voting=0.5), 0.3)]
    for plain_part, voted_part in zip(plain[1:], voted[1:]):
        np.testing.assert_array_equal(plain_part, voted_part)
    count = int(plain[3][0])
    assert count > 10
    shift = np.abs(plain[0][0, :count] - voted[0][0, :count]).max(axis=-1)
    assert (shift > 1e-4).any()
    overlaps = np.diag(iou_matrix(plain[0][0, :count], voted[0][0, :count]).numpy())
    assert overlaps.min() > 0.5      # a mean of boxes that each overlap the kept one by >= 0.5


def brute_force_soft_nms(boxes, scores, score_threshold, sigma):
    """Gaussian soft-NMS of one class, as in Bodla et al. 2017: [(box, decayed score)] in the order kept."""
    remaining = {i: float(scores[i]) for i in range(len(scores)) if scores[i] >= score_threshold}
    kept = []
    while remaining:
        best = max(remaining, key=remaining.get)
        kept.append((boxes[best], remaining.pop(best)))
        for i in list(remaining):
            remaining[i] *= np.exp(-brute_force_iou(boxes[best], boxes[i]) ** 2 / sigma)
            if remaining[i] < score_threshold:
                del remaining[i]
    return kept


@pytest.mark.parametrize("sigma", [0.3, 0.5])
def test_soft_nms_matches_a_brute_force_reference_per_class(sigma):
    rng = np.random.default_rng(11)
    centres = random_corner_boxes(rng, 6, 0.1, 0.3)
    boxes = np.concatenate([centres + rng.normal(0, 0.02, centres.shape) for _ in range(5)]).astype(np.float32)
    scores = rng.uniform(0, 1, (2, len(boxes), 2)).astype(np.float32)
    batch = np.stack([boxes, boxes[::-1]])
    kept_boxes, kept_scores, kept_classes, valid = (t.numpy() for t in soft_nms(batch, scores, 0.05, sigma, 100))
    for b in range(2):
        expected = []
        for c in range(2):
            expected += [(box, score, c) for box, score in brute_force_soft_nms(batch[b], scores[b, :, c], 0.05, sigma)]
        expected.sort(key=lambda item: -item[1])
        assert int(valid[b]) == len(expected)
        np.testing.assert_allclose(kept_scores[b, :valid[b]], [item[1] for item in expected], atol=1e-5)
        np.testing.assert_array_equal(kept_classes[b, :valid[b]], [item[2] for item in expected])
        np.testing.assert_allclose(kept_boxes[b, :valid[b]], [item[0] for item in expected], atol=1e-6)
        assert (kept_scores[b, valid[b]:] == 0).all()
    hard_valid = batched_nms(batch, scores, 0.05, 0.4, 100)[3].numpy()
    assert (valid > hard_valid).all()          # overlapping boxes are decayed, not dropped


def test_soft_nms_keeps_the_top_box_and_decays_the_others_in_postprocess():
    from runtime.postprocessing import postprocess
    priors = priors_from_config(DEFAULT_SETTINGS.model)[:600]     # the stride-8 priors of the top rows: many overlapping boxes
    rng = np.random.default_rng(6)
    offsets = rng.normal(0, 0.5, (2, len(priors), 4)) * np.array([1.0, 1.0, 0.6, 0.6])
    predictions = np.concatenate([offsets, rng.normal(0, 2, (2, len(priors), 3))], axis=-1).astype(np.float32)
    settings = DEFAULT_SETTINGS.replace(max_number_keep=1000)
    hard = [t.numpy() for t in postprocess(predictions, priors, settings.replace(soft_nms_sigma=0.0), 0.3)]
    soft = [t.numpy() for t in postprocess(predictions, priors, settings.replace(soft_nms_sigma=0.5), 0.3)]
    np.testing.assert_allclose(soft[1][:, 0], hard[1][:, 0])   # the best box of each image is untouched
    assert (hard[3] < 1000).all() and (soft[3] < 1000).all()
    for b in range(2):     # some kept boxes carry a decayed score, which no hard-NMS box has
        assert not np.isin(soft[1][b, :soft[3][b]], hard[1][b, :hard[3][b]]).all()
    for b in range(2):
        assert (np.diff(soft[1][b, :soft[3][b]]) <= 0).all()   # sorted by decayed score
        assert soft[1][b, :soft[3][b]].min() >= 0.3
