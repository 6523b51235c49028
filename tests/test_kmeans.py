"""Tests of components/kmeans.py: size-only IoU, k-means, head grouping, box loading and the command line."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT

import cli.kmeans as kmeans_cli
from components.config import DEFAULT_SETTINGS
from dataset import anchor_kmeans as kmeans

SCRIPT = os.path.join(REPO_ROOT, "components", "kmeans.py")
KNOWN_SIZES = np.array([[10.0, 12.0], [40.0, 30.0], [120.0, 150.0]])


def synthetic_boxes(sizes, per_size=150, spread=0.05, seed=1):
    """Boxes scattered multiplicatively (about +-``spread``) around each of ``sizes`` ([S, 2] w, h)."""
    rng = np.random.default_rng(seed)
    noise = np.exp(rng.normal(0.0, spread, (len(sizes), per_size, 2)))
    return (sizes[:, None, :] * noise).reshape(-1, 2)


def test_wh_iou_matches_brute_force():
    rng = np.random.default_rng(0)
    boxes, clusters = rng.uniform(1, 100, (20, 2)), rng.uniform(1, 100, (4, 2))
    expected = np.zeros((20, 4))
    for i, (bw, bh) in enumerate(boxes):
        for j, (cw, ch) in enumerate(clusters):
            inter = min(bw, cw) * min(bh, ch)
            expected[i, j] = inter / (bw * bh + cw * ch - inter)
    result = kmeans.wh_iou(boxes, clusters)
    assert result.shape == (20, 4)
    np.testing.assert_allclose(result, expected, rtol=1e-5)
    assert kmeans.wh_iou([[10, 20]], [[10, 20]])[0, 0] == pytest.approx(1.0)


def test_kmeans_recovers_known_sizes():
    boxes = synthetic_boxes(KNOWN_SIZES)
    anchors = kmeans.kmeans_anchors(boxes, 3, seed=0)
    assert anchors.shape == (3, 2)
    np.testing.assert_allclose(anchors, KNOWN_SIZES, rtol=0.10)     # also checks the sort by area


def test_kmeans_is_deterministic_for_a_seed():
    boxes = synthetic_boxes(KNOWN_SIZES, per_size=40)
    np.testing.assert_array_equal(kmeans.kmeans_anchors(boxes, 4, seed=3), kmeans.kmeans_anchors(boxes, 4, seed=3))


def test_kmeans_with_k_equal_to_distinct_sizes():
    sizes = np.array([[4.0, 4.0], [10.0, 20.0], [30.0, 15.0], [80.0, 90.0]])
    anchors = kmeans.kmeans_anchors(np.repeat(sizes, 5, axis=0), 4, seed=0)
    np.testing.assert_allclose(anchors, sizes)


def test_kmeans_rejects_too_few_distinct_sizes():
    with pytest.raises(ValueError, match="distinct"):
        kmeans.kmeans_anchors(np.ones((10, 2)), 2)
    with pytest.raises(ValueError, match="positive"):
        kmeans.kmeans_anchors([[1.0, 0.0], [2.0, 2.0]], 1)


def test_kmeans_anchors_beat_random_anchors():
    true_sizes = np.array([[8.0, 10.0], [20.0, 24.0], [50.0, 45.0], [140.0, 170.0]])
    boxes = synthetic_boxes(true_sizes, spread=0.2)
    best = kmeans.mean_iou(boxes, kmeans.kmeans_anchors(boxes, 4, seed=0))
    rng = np.random.default_rng(5)
    for _ in range(5):
        random_anchors = rng.uniform(boxes.min(axis=0), boxes.max(axis=0), (4, 2))
        assert best >= kmeans.mean_iou(boxes, random_anchors)
    assert best >= 0.98 * kmeans.mean_iou(boxes, true_sizes)     # not stuck in a poor local optimum


def test_mean_iou_is_mean_of_best_overlap():
    boxes = np.array([[10.0, 10.0], [20.0, 20.0]])
    anchors = np.array([[10.0, 10.0], [40.0, 40.0]])
    assert kmeans.mean_iou(boxes, anchors) == pytest.approx((1.0 + 0.25) / 2)


def test_assign_to_heads_groups_smallest_first():
    anchors = np.array([[s, s + 1] for s in range(10, 110, 10)], float)[::-1]     # largest first
    groups = kmeans.assign_to_heads(anchors, steps=[8, 16, 32, 64], counts=[3, 2, 2, 3])
    assert [len(group) for group in groups] == [3, 2, 2, 3]
    assert groups[0] == [(10.0, 11.0), (20.0, 21.0), (30.0, 31.0)]
    assert groups[1] == [(40.0, 41.0), (50.0, 51.0)]
    assert groups[3][-1] == (100.0, 101.0)
    with pytest.raises(ValueError, match="need 10 anchors"):
        kmeans.assign_to_heads(anchors[:9])
    with pytest.raises(ValueError, match="ascending"):
        kmeans.assign_to_heads(anchors, steps=[16, 8, 32, 64])


def test_default_anchor_wh_and_min_sizes_format():
    wh = kmeans.default_anchor_wh(DEFAULT_SETTINGS.model.min_sizes)
    assert wh.shape == (10, 2)
    np.testing.assert_array_equal(wh[0], [10, 10])
    np.testing.assert_array_equal(wh[-1], [256, 256])
    np.testing.assert_array_equal(kmeans.default_anchor_wh([[4, (6, 8)], [(10, 5)]]), [[4, 4], [6, 8], [10, 5]])
    text = kmeans.format_min_sizes([[(9.54, 11.0), (20.0, 21.26)], [(64.0, 80.0)]])
    assert text == "[[(9.5, 11), (20, 21.3)], [(64, 80)]]"


# --- reading a VOC folder -----------------------------------------------------------------------------

def xml_text(objects, size=None):
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    object_xml = "".join(
        f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for name, (x1, y1, x2, y2) in objects)
    return f"<annotation><filename>x.jpg</filename>{size_xml}{object_xml}</annotation>"


def make_voc(root, annotations, split_names, images=()):
    """A VOC folder: ``annotations`` {name: xml text}, ``images`` {name: (w, h)} written as black JPEGs."""
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        os.makedirs(root / folder, exist_ok=True)
    for name, text in annotations.items():
        (root / "Annotations" / f"{name}.xml").write_text(text)
    for name, (width, height) in dict(images).items():
        cv2.imwrite(str(root / "JPEGImages" / f"{name}.jpg"), np.zeros((height, width, 3), np.uint8))
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(split_names) + "\n")
    return str(root)


def test_load_box_sizes_scales_to_network_input(tmp_path):
    dataset = make_voc(tmp_path, {
        "sized": xml_text([("face", (0, 0, 64, 48)), ("with_mask", (600, 400, 700, 500)), ("cat", (0, 0, 5, 5))],
                          size=(640, 480)),
        "unsized": xml_text([("mask", (10, 10, 60, 60))]),
    }, ["sized", "unsized", "missing"], images={"unsized": (200, 100)})
    skipped = []
    sizes = kmeans.load_box_sizes(dataset, "train", (240, 320), DEFAULT_SETTINGS.data.label_aliases, skipped=skipped)
    # 640x480 -> 320x240 halves both sides; the second box is clipped to 40x80 first;
    # the 200x100 image (size read from the JPEG) scales w by 1.6 and h by 2.4
    np.testing.assert_allclose(sizes, [[32, 24], [20, 40], [80, 120]], rtol=1e-6)
    assert any("unknown label 'cat'" in reason for reason in skipped)
    assert any("missing.xml: annotation not found" in reason for reason in skipped)


@pytest.mark.slow
def test_cli_on_small_dataset(tmp_path):
    boxes = [(0, 0, 8, 10), (0, 0, 9, 11), (0, 0, 30, 20), (0, 0, 32, 22), (0, 0, 100, 120), (0, 0, 110, 118)]
    dataset = make_voc(tmp_path / "voc", {"a": xml_text([("face", box) for box in boxes], size=(320, 240))}, ["a"])
    output = tmp_path / "plots" / "anchors.png"
    run = subprocess.run([sys.executable, SCRIPT, "--dataset_path", dataset, "--output", str(output),
                          "--min_sizes", "[[10], [32, 100]]", "--steps", "[8, 16]"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "boxes: 6" in run.stdout
    assert "[[(8.5, 10.5)], [(31, 21), (105, 119)]]" in run.stdout
    assert "mean IoU: k-means" in run.stdout and "config min_sizes" in run.stdout
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(output.parent) == ["anchors.png"]


def test_main_missing_dataset_is_one_line_error(tmp_path, capsys):
    assert kmeans_cli.main(["--dataset_path", str(tmp_path / "nowhere"), "--output", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "split file not found" in err


def test_main_scores_both_anchor_sets_on_a_held_out_split(tmp_path, capsys):
    train_boxes = [(0, 0, 8, 10), (0, 0, 9, 11), (0, 0, 30, 20), (0, 0, 32, 22), (0, 0, 100, 120), (0, 0, 110, 118)]
    dataset = make_voc(tmp_path / "voc", {"a": xml_text([("face", box) for box in train_boxes], size=(320, 240)),
                                          "b": xml_text([("face", (0, 0, 10, 10))], size=(320, 240))}, ["a"])
    with open(os.path.join(dataset, "ImageSets", "Main", "val.txt"), "w") as handle:
        handle.write("b\n")
    status = kmeans_cli.main(["--dataset_path", dataset, "--output", str(tmp_path / "a.png"), "--eval_split", "val",
                          "--min_sizes", "[[10], [32, 100]]", "--steps", "[8, 16]"])
    assert status == 0
    line = [row for row in capsys.readouterr().out.splitlines() if row.startswith("mean IoU on 'val'")][0]
    kmeans_iou, config_iou = (float(part.split()[-1]) for part in line.split("|"))
    # the one 10x10 val face: the config's 10x10 anchor fits it exactly, the k-means anchors (8.5x10.5 ...) less
    assert config_iou == 1.0 and 0.5 < kmeans_iou < 1.0
