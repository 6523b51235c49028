"""Tests of mining faces an annotation leaves out (mAP/unlabelled_faces.py, its CLI) and of adding them to the
TFRecords as ignore boxes (dataset/extra_ignore.py, voc_to_tfrecord.py --extra_ignore)."""
import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf
from conftest import found, truth

from components.config import IGNORE_ID, IGNORE_LABEL
from dataset.extra_ignore import add_ignore_boxes, read_extra_ignore, write_extra_ignore
from dataset.tf_dataset_preprocess import parse_example
from dataset.tfrecord_writer import convert_split
from dataset.voc import Annotation, VOCError
from mAP.unlabelled_face_mining import TILE, contact_sheet, face_tile, mine_set_dir, ranked, unlabelled_faces

FACE = [44, 54, 107, 133]          # the one face of voc_mini's test_00003224 (143 x 178)
ELSEWHERE = [0, 0, 30, 40]         # overlaps no annotated box


def test_keeps_confident_detections_away_from_every_annotated_box():
    boxes, scores = unlabelled_faces(
        truth(("unmask", FACE), ("mask", [110, 140, 140, 175], True)),
        found(("unmask", 0.95, FACE),                  # the annotated face
              ("mask", 0.9, [46, 50, 110, 130]),       # a box of it in the other class
              ("unmask", 0.8, [100, 130, 135, 170]),   # on the difficult box (IoU 0.43)
              ("unmask", 0.75, [60, 0, 90, 30]),       # apart: kept
              ("mask", 0.85, ELSEWHERE), ("unmask", 0.72, [1, 1, 30, 40]),   # one face found as both classes
              ("mask", 0.6, [100, 0, 140, 30])),       # apart but below min_score
        min_score=0.7, max_iou=0.1)
    np.testing.assert_allclose(scores, [0.85, 0.75])
    np.testing.assert_allclose(boxes, [ELSEWHERE, [60, 0, 90, 30]])


def test_an_image_without_annotated_boxes_keeps_every_confident_detection():
    boxes, scores = unlabelled_faces(truth(), found(("mask", 0.9, FACE), ("unmask", 0.2, ELSEWHERE)), 0.5, 0.1)
    assert scores.tolist() == pytest.approx([0.9]) and boxes.shape == (1, 4)
    boxes, scores = unlabelled_faces(None, found(), 0.5, 0.1)
    assert boxes.shape == (0, 4) and scores.shape == (0,)


def write_set_dir(folder, ground_truth, detections):
    """A set folder as mAP/detect.py writes it, from {image: [lines]} of ground truth and of detections."""
    for sub, files in (("ground-truth", ground_truth), ("detection-results", detections)):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
        for name, lines in files.items():
            with open(os.path.join(folder, sub, f"{name}.txt"), "w") as handle:
                handle.write("".join(line + "\n" for line in lines))
    return str(folder)


def fixture_set_dir(tmp_path):
    """Two voc_mini images: test_00003224 with one unlabelled face found, test_00003200 with none."""
    face = " ".join(map(str, FACE))
    return write_set_dir(tmp_path / "det", {"test_00003224": [f"unmask {face}"], "test_00003200": []},
                         {"test_00003224": [f"unmask 0.95 {face}", "mask 0.8 0 0 30 40"],
                          "test_00003200": ["unmask 0.3 5 5 50 50"]})


def test_mine_a_set_folder_write_and_read_back(tmp_path):
    mined = mine_set_dir(fixture_set_dir(tmp_path), min_score=0.7)
    assert sorted(mined) == ["test_00003200", "test_00003224"] and len(mined["test_00003200"][0]) == 0
    assert [(score, name) for score, name, _ in ranked(mined)] == [(pytest.approx(0.8), "test_00003224")]
    path = str(tmp_path / "ignore.json")
    write_extra_ignore(path, mined, {"min_score": 0.7})
    content = json.load(open(path))
    assert content["min_score"] == 0.7 and list(content["images"]) == ["test_00003224"]
    np.testing.assert_allclose(read_extra_ignore(path)["test_00003224"], [ELSEWHERE])


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not a readable JSON file"),
    ('{"boxes": {}}', 'expected an object with "images"'),
    ('{"images": {"a": [[10, 10, 5, 20, 0.9]]}}', "image 'a': expected boxes"),
    ('{"images": {"a": [[10, 10, 20]]}}', "image 'a': expected boxes"),
    ('{"images": {"a": [["x", 1, 2, 3]]}}', "image 'a': expected boxes"),
])
def test_bad_extra_ignore_file_names_the_file_and_the_problem(tmp_path, content, problem):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(VOCError, match=problem) as error:
        read_extra_ignore(str(path))
    assert str(path) in str(error.value)
    with pytest.raises(VOCError, match="extra-ignore file not found"):
        read_extra_ignore(str(tmp_path / "missing.json"))


def test_ignore_boxes_are_clipped_and_empty_ones_dropped():
    annotation = Annotation("a.jpg", 100, 80, np.array([[10, 10, 40, 40]], np.float32), ["mask"], np.zeros(1, bool))
    added = add_ignore_boxes(annotation, [[90, 70, 120, 90], [100, 0, 130, 20]])
    assert added == 1
    np.testing.assert_allclose(annotation.boxes, [[10, 10, 40, 40], [90, 70, 100, 80]])
    assert annotation.labels == ["mask", IGNORE_LABEL] and annotation.difficult.tolist() == [False, False]


def test_converted_records_carry_the_extra_ignore_boxes(voc_mini, tiny_cfg, tmp_path):
    output = str(tmp_path / "train.tfrecord")
    report = convert_split(voc_mini, "train", output, tiny_cfg, progress=False,
                           extra_ignore={"test_00003224": np.array([ELSEWHERE], np.float32)})
    assert report.extra_ignored == 1 and "1 of them extra ignore boxes" in report.summary()
    for serialized in tf.data.TFRecordDataset(output):
        _, boxes, labels, _ = parse_example(serialized)
        name = tf.io.parse_single_example(serialized, {"image/filename": tf.io.FixedLenFeature([], tf.string)})
        if name["image/filename"].numpy() == b"test_00003224":
            assert labels.numpy().tolist() == [2, IGNORE_ID]
            np.testing.assert_allclose(boxes.numpy()[1], [0, 0, 30 / 143, 40 / 178], atol=1e-6)
            break
    else:
        pytest.fail("test_00003224 not in the records")


def test_contact_sheet_tiles_the_crops(voc_mini):
    image = cv2.imread(os.path.join(voc_mini, "JPEGImages", "test_00003224.jpg"))
    tile = face_tile(image, np.array(FACE, np.float32), 0.9)
    assert tile.shape == (TILE, TILE, 3) and tile[..., 2].max() == 255     # the red box is drawn
    assert contact_sheet([tile] * 9).shape == (2 * TILE, 8 * TILE, 3)
    assert contact_sheet([]).shape == (TILE, 8 * TILE, 3)


@pytest.mark.slow
def test_cli_writes_the_list_and_the_sheet_then_the_converter_uses_it(voc_mini, tmp_path, run_script, last_line):
    output, sheet = str(tmp_path / "ignore.json"), str(tmp_path / "sheet.png")
    result = run_script(["mAP/unlabelled_faces.py", "--set_dir", fixture_set_dir(tmp_path), "--output_file", output,
                         "--dataset_path", voc_mini, "--sheet", sheet])
    assert result.returncode == 0, result.stderr
    assert "1 boxes in 1 of 2 images" in result.stdout
    assert cv2.imread(sheet).shape == (TILE, 8 * TILE, 3)
    record = str(tmp_path / "train.tfrecord")
    result = run_script(["dataset/voc_to_tfrecord.py", "--dataset_path", voc_mini, "--split", "train",
                         "--output_file", record, "--extra_ignore", output])
    assert result.returncode == 0, result.stderr
    assert "(1 of them extra ignore boxes)" in last_line(result.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("flags, message", [
    (["--min_score", "1.5"], "--min_score: must be in [0, 1], got 1.5"),
    (["--max_iou", "0"], "--max_iou: must be in (0, 1], got 0"),
    (["--sheet", "s.png"], "--sheet: needs --dataset_path"),
])
def test_cli_refuses_bad_flags_in_one_line(tmp_path, run_script, flags, message):
    result = run_script(["mAP/unlabelled_faces.py", "--set_dir", str(tmp_path), "--output_file",
                         str(tmp_path / "o.json"), *flags])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {message}"] or message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_converter_refuses_extra_ignore_with_a_data_file(tmp_path, run_script):
    result = run_script(["dataset/voc_to_tfrecord.py", "--data", "data/ilc2021.yaml", "--extra_ignore",
                         str(tmp_path / "x.json")])
    assert result.returncode == 2
    assert "--extra_ignore: give it with --dataset_path" in result.stderr.strip().splitlines()[-1]
