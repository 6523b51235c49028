"""Tests of dataset/voc_to_tfrecord.py (library and command line) read back with parse_example."""
import glob
import os
import shutil
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
import tensorflow as tf

from components.config import DEFAULT_SETTINGS
from dataset import tfrecord_writer as voc_to_tfrecord
from dataset.tf_dataset_preprocess import FEATURES, parse_example
from dataset.tfrecord_writer import convert_split

SCRIPT = os.path.join("dataset", "voc_to_tfrecord.py")
LABEL_IDS = {"face_mask": 1, "face": 2}


def read_records(path):
    """[(name, encoded bytes, image uint8, boxes, labels)] of a TFRecord file."""
    records = []
    for serialized in tf.data.TFRecordDataset(path):
        features = tf.io.parse_single_example(serialized, FEATURES)
        image, boxes, labels, _ = parse_example(serialized)
        records.append((features["image/filename"].numpy().decode(), features["image/encoded"].numpy(),
                        image.numpy(), boxes.numpy(), labels.numpy()))
    return records


def expected_objects(voc_path, name):
    """Boxes (normalised, clipped to the image) and label ids read from the xml with the standard library."""
    image = cv2.imread(os.path.join(voc_path, "JPEGImages", f"{name}.jpg"))
    height, width = image.shape[:2]
    root = ET.parse(os.path.join(voc_path, "Annotations", f"{name}.xml")).getroot()
    assert (int(root.findtext("size/width")), int(root.findtext("size/height"))) == (width, height)
    boxes, labels = [], []
    for obj in root.iter("object"):
        box = [float(obj.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax")]
        boxes.append(np.clip(box, 0, [width, height, width, height]) / [width, height, width, height])
        labels.append(LABEL_IDS[obj.findtext("name")])
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(labels), (height, width)


def split_names(voc_path, split):
    with open(os.path.join(voc_path, "ImageSets", "Main", f"{split}.txt")) as handle:
        return handle.read().split()


def make_voc(root, names):
    """An empty VOC layout under ``root`` with a train split listing ``names``; returns its path."""
    for folder in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    with open(os.path.join(root, "ImageSets", "Main", "train.txt"), "w") as handle:
        handle.write("\n".join(names) + "\n")
    return str(root)


@pytest.mark.parametrize("split", ["train", "val"])
def test_records_match_the_xml(voc_mini, voc_mini_tfrecords, split):
    names = split_names(voc_mini, split)
    records = read_records(voc_mini_tfrecords[split])
    report = voc_mini_tfrecords["reports"][split]
    assert [record[0] for record in records] == names
    assert report.written == len(names) and not report.skipped_images and not report.skipped_objects
    total_boxes = 0
    for name, encoded, image, boxes, labels in records:
        expected_boxes, expected_labels, shape = expected_objects(voc_mini, name)
        assert image.shape == (*shape, 3)
        with open(os.path.join(voc_mini, "JPEGImages", f"{name}.jpg"), "rb") as handle:
            assert encoded == handle.read()            # an RGB JPEG is stored byte for byte
        np.testing.assert_allclose(boxes, expected_boxes, atol=1e-6)
        np.testing.assert_array_equal(labels, expected_labels)
        assert boxes.min() >= 0 and boxes.max() <= 1
        total_boxes += len(boxes)
    assert report.boxes == total_boxes


def test_minus_one_coordinate_becomes_zero(voc_mini_tfrecords):
    records = {record[0]: record for record in read_records(voc_mini_tfrecords["train"])}
    boxes = records["test_00004716"][3]      # its xml has <ymin>-1</ymin>
    assert boxes.shape == (1, 4)
    assert boxes[0, 1] == 0.0
    np.testing.assert_allclose(boxes[0], [23 / 200, 0, 140 / 200, 141 / 200], atol=1e-6)


def test_other_image_formats_become_rgb_jpeg(voc_mini, tmp_path):
    source = cv2.imread(os.path.join(voc_mini, "JPEGImages", "test_00003224.jpg"))
    xml = os.path.join(voc_mini, "Annotations", "test_00003224.xml")
    variants = {
        "as_png": (".png", source),
        "grey_jpeg": (".jpg", cv2.cvtColor(source, cv2.COLOR_BGR2GRAY)),
        "rgba_png": (".png", cv2.cvtColor(source, cv2.COLOR_BGR2BGRA)),
        "deep_png": (".png", source.astype(np.uint16) * 257),
    }
    voc = make_voc(tmp_path / "voc", list(variants))
    for name, (extension, image) in variants.items():
        assert cv2.imwrite(os.path.join(voc, "JPEGImages", name + extension), image)
        shutil.copy(xml, os.path.join(voc, "Annotations", f"{name}.xml"))
    assert cv2.imread(os.path.join(voc, "JPEGImages", "grey_jpeg.jpg"), cv2.IMREAD_UNCHANGED).ndim == 2
    output = str(tmp_path / "out.tfrecord")
    report = convert_split(voc, "train", output, DEFAULT_SETTINGS, progress=False)
    assert report.written == len(variants), report.skipped_images
    expected_boxes, _, shape = expected_objects(voc_mini, "test_00003224")
    for name, encoded, image, boxes, labels in read_records(output):
        assert encoded[:3] == b"\xff\xd8\xff", name
        decoded = tf.io.decode_image(encoded, channels=0).numpy()
        assert decoded.shape == (*shape, 3), name
        np.testing.assert_allclose(boxes, expected_boxes, atol=1e-6)
        np.testing.assert_array_equal(labels, [2])
        reference = source[..., ::-1].astype(float)
        if name == "grey_jpeg":
            assert np.array_equal(decoded[..., 0], decoded[..., 1])
        else:
            assert np.abs(decoded.astype(float) - reference).mean() < 4, name   # same picture, RGB order


XML_TEMPLATE = """<annotation><filename>{name}.jpg</filename>
<size><width>{width}</width><height>{height}</height><depth>3</depth></size>
{objects}</annotation>"""
OBJECT_TEMPLATE = ("<object><name>{label}</name><difficult>0</difficult><bndbox><xmin>{box[0]}</xmin>"
                   "<ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>")


def write_xml(voc, name, objects, size=(143, 178)):
    text = XML_TEMPLATE.format(name=name, width=size[0], height=size[1], objects="".join(
        OBJECT_TEMPLATE.format(label=label, box=box) for label, box in objects))
    with open(os.path.join(voc, "Annotations", f"{name}.xml"), "w") as handle:
        handle.write(text)


def test_bad_items_are_skipped_with_a_reason(voc_mini, tmp_path):
    names = ["good", "unknown_label", "zero_area", "malformed", "no_image", "no_xml"]
    voc = make_voc(tmp_path / "voc", names)
    image = os.path.join(voc_mini, "JPEGImages", "test_00003224.jpg")
    for name in names:
        if name != "no_image":
            shutil.copy(image, os.path.join(voc, "JPEGImages", f"{name}.jpg"))
    write_xml(voc, "good", [("face", (10, 20, 60, 80)), ("face_mask", (70, 90, 120, 150))])
    write_xml(voc, "unknown_label", [("cat", (10, 20, 60, 80)), ("face", (30, 30, 90, 90))])
    write_xml(voc, "zero_area", [("face", (40, 20, 40, 80)), ("face_mask", (10, 10, 50, 60))])
    write_xml(voc, "no_image", [("face", (10, 20, 60, 80))])
    with open(os.path.join(voc, "Annotations", "malformed.xml"), "w") as handle:
        handle.write("<annotation><object><name>face</name>")
    output = str(tmp_path / "out.tfrecord")
    report = convert_split(voc, "train", output, DEFAULT_SETTINGS, progress=False)

    records = {record[0]: record for record in read_records(output)}
    assert sorted(records) == ["good", "unknown_label", "zero_area"]
    assert report.written == 3 and report.boxes == 4
    np.testing.assert_array_equal(records["unknown_label"][4], [2])
    np.testing.assert_array_equal(records["zero_area"][4], [1])
    np.testing.assert_allclose(records["zero_area"][3], [[10 / 143, 10 / 178, 50 / 143, 60 / 178]], atol=1e-6)

    assert len(report.skipped_images) == 3
    for name in ("malformed", "no_image", "no_xml"):
        assert sum(name in reason for reason in report.skipped_images) == 1, report.skipped_images
    assert len(report.skipped_objects) == 2
    assert any("unknown_label.xml" in reason and "cat" in reason for reason in report.skipped_objects)
    assert any("zero_area.xml" in reason for reason in report.skipped_objects)
    assert "skipped 3 images and 2 objects" in report.summary()


def test_failed_conversion_leaves_no_partial_file(voc_mini, tmp_path, monkeypatch):
    output = tmp_path / "out.tfrecord"
    output.write_bytes(b"previous complete file")
    calls = []
    real_make_example = voc_to_tfrecord.make_example

    def failing_make_example(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real_make_example(*args, **kwargs)

    monkeypatch.setattr(voc_to_tfrecord, "make_example", failing_make_example)
    with pytest.raises(RuntimeError, match="disk full"):
        convert_split(voc_mini, "train", str(output), DEFAULT_SETTINGS, progress=False)
    assert output.read_bytes() == b"previous complete file"
    assert sorted(os.listdir(tmp_path)) == ["out.tfrecord"]        # no temporary left behind

    output.unlink()
    calls.clear()
    with pytest.raises(RuntimeError):
        convert_split(voc_mini, "train", str(output), DEFAULT_SETTINGS, progress=False)
    assert os.listdir(tmp_path) == []


def test_missing_split_raises(voc_mini, tmp_path):
    from dataset.voc import VOCError
    with pytest.raises(VOCError, match="nosuchsplit.txt"):
        convert_split(voc_mini, "nosuchsplit", str(tmp_path / "out.tfrecord"), DEFAULT_SETTINGS, progress=False)
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_command_line(voc_mini, tmp_path, run_script, last_line):
    output = tmp_path / "cli" / "val.tfrecord"
    result = run_script([SCRIPT, "--dataset_path", voc_mini, "--split", "val", "--output_file", str(output)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote 2 images with 5 boxes" in last_line(result.stdout)
    assert len(read_records(str(output))) == 2

    missing = tmp_path / "missing.tfrecord"
    result = run_script([SCRIPT, "--dataset_path", voc_mini, "--split", "nosuchsplit", "--output_file", str(missing)])
    assert result.returncode == 2
    assert last_line(result.stderr).startswith("error: ")
    assert "nosuchsplit.txt" in last_line(result.stderr)
    assert sum(line.startswith("error:") for line in result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not glob.glob(str(tmp_path / "missing.tfrecord*"))


def test_parse_example_returns_the_difficult_flags():
    from dataset.voc import Annotation
    annotation = Annotation("a.jpg", 40, 20, np.array([[0, 0, 10, 10], [20, 5, 30, 15]], np.float32),
                            ["mask", "unmask"], np.array([False, True]))
    jpeg = cv2.imencode(".jpg", np.zeros((20, 40, 3), np.uint8))[1].tobytes()
    example = voc_to_tfrecord.make_example("a", jpeg, 20, 40, annotation, DEFAULT_SETTINGS.model.labels_list)
    image, boxes, labels, difficult = parse_example(example.SerializeToString())
    assert image.shape == (20, 40, 3) and labels.numpy().tolist() == [1, 2]
    assert difficult.dtype == tf.bool and difficult.numpy().tolist() == [False, True]
    np.testing.assert_allclose(boxes.numpy()[1], [0.5, 0.25, 0.75, 0.75])
