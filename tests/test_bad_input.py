"""Bad input, tried for real (issue 5): files made by the tests fed to every entry point.

Every outcome is one of: a one-line error naming the path and the problem (``error: ...``, exit status 2 for
the command-line tools, no traceback); the item skipped with a one-line reason naming its file and counted in
a summary; or an odd but usable input handled properly (grey, RGBA, 16-bit, a PNG named ``.jpg``, a 1 x 1 and
a 10000 x 10000 image become 3-channel records or detections). Decisions tested here:

* a truncated JPEG (no end-of-image marker) or PNG (no IEND chunk) is rejected by ``read_image_bgr``
  everywhere, whatever OpenCV version would make of it: a partial decode is half grey picture;
* a 1 x 1 image is a valid image: it is converted, trained on, detected in like any other;
* a JPEG is stored byte for byte only when TensorFlow's ``decode_jpeg`` reads it to the same size, otherwise
  the converter re-encodes OpenCV's decoding, and images over 2048 px are downscaled: every record decodes;
* boxes: negative and out-of-image coordinates are clipped, inverted, zero-area and wholly outside boxes
  and unknown labels are skipped with a reason, an xml without ``<size>`` uses the image's real size.

This file covers dataset/voc.py, dataset/voc_to_tfrecord.py, components/kmeans.py, dataset/check_dataset.py,
train.py and mAP/compute_mAP.py; tests/test_bad_input_model.py (which imports the files and helpers made
here) covers inference.py and mAP/detect.py. Most entry points run in-process (``main(argv)``, which must
return, not raise); the converter, the 10000 x 10000 image and the batch mode also run as real subprocesses.
"""
import glob
import os
import shutil
import struct
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, SMALL_NETWORK, SMALL_NETWORK_FLAGS, TINY_INPUT_SIZE, VOC_MINI

from components.config import DEFAULT_SETTINGS
from components.images import ImageError, read_image_bgr

SOURCE_JPEG = os.path.join(VOC_MINI, "JPEGImages", "test_00003224.jpg")    # 143 x 178, baseline JPEG
SOURCE_W, SOURCE_H = 143, 178
FACE = (20, 30, 120, 150)                                                   # a box inside the source image
HUGE_SIDE = 10000
HUGE_BGR = (40, 120, 200)
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")

# image files that cannot be used, and the reason every entry point must give
UNUSABLE_IMAGES = {
    "zero_byte.jpg": "empty file",
    "truncated.jpg": "truncated JPEG",            # a real JPEG cut in half
    "not_an_image.jpg": "not a readable image",   # text
    "header_bomb.jpg": "not a readable image",    # a real JPEG whose header claims 65000 x 65000 pixels
}
# odd image files that must work: (height, width) after decoding
USABLE_IMAGES = {
    "png_named_jpg.jpg": (SOURCE_H, SOURCE_W),
    "grey.jpg": (SOURCE_H, SOURCE_W),
    "rgba.png": (SOURCE_H, SOURCE_W),
    "deep16.png": (SOURCE_H, SOURCE_W),           # 16-bit colour PNG
    "grey16.png": (SOURCE_H, SOURCE_W),           # 16-bit grey PNG
    "one_pixel.jpg": (1, 1),
}


# --- making the bad files ------------------------------------------------------------------------------

def jpeg_with_declared_size(raw, width, height):
    """``raw`` JPEG bytes with the size in its frame header (SOF) replaced."""
    data, position = bytearray(raw), 2
    while data[position + 1] not in (0xC0, 0xC1, 0xC2):
        position += 2 + struct.unpack(">H", data[position + 2:position + 4])[0]
    data[position + 5:position + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def make_image_files(folder):
    """Write every case of UNUSABLE_IMAGES and USABLE_IMAGES into ``folder``; returns {file name: path}."""
    os.makedirs(folder, exist_ok=True)
    with open(SOURCE_JPEG, "rb") as handle:
        raw = handle.read()
    source = cv2.imread(SOURCE_JPEG)
    grey = cv2.cvtColor(source, cv2.COLOR_BGR2GRAY)
    contents = {
        "zero_byte.jpg": b"",
        "truncated.jpg": raw[:len(raw) // 2],
        "not_an_image.jpg": b"these are my holiday notes, not a picture\n",
        "header_bomb.jpg": jpeg_with_declared_size(raw, 65000, 65000),
        "png_named_jpg.jpg": cv2.imencode(".png", source)[1].tobytes(),
        "grey.jpg": cv2.imencode(".jpg", grey)[1].tobytes(),
        "rgba.png": cv2.imencode(".png", cv2.cvtColor(source, cv2.COLOR_BGR2BGRA))[1].tobytes(),
        "deep16.png": cv2.imencode(".png", source.astype(np.uint16) * 257)[1].tobytes(),
        "grey16.png": cv2.imencode(".png", grey.astype(np.uint16) * 257)[1].tobytes(),
        "one_pixel.jpg": cv2.imencode(".jpg", np.full((1, 1, 3), (30, 60, 90), np.uint8))[1].tobytes(),
    }
    assert set(contents) == set(UNUSABLE_IMAGES) | set(USABLE_IMAGES)
    paths = {}
    for name, data in contents.items():
        paths[name] = os.path.join(folder, name)
        with open(paths[name], "wb") as handle:
            handle.write(data)
    return paths


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    return make_image_files(str(tmp_path_factory.mktemp("images")))


@pytest.fixture(scope="module")
def huge_jpeg(tmp_path_factory):
    """A 10000 x 10000 JPEG of one flat colour (about 1.5 MB on disk, 300 MB decoded)."""
    path = str(tmp_path_factory.mktemp("huge") / "huge.jpg")
    ok, encoded = cv2.imencode(".jpg", np.full((HUGE_SIDE, HUGE_SIDE, 3), HUGE_BGR, np.uint8))
    assert ok
    encoded.tofile(path)
    return path


def voc_xml(objects, size=None, filename="x.jpg"):
    """VOC annotation text; ``objects`` are (label, (xmin, ymin, xmax, ymax)); no <size> when ``size`` is None."""
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    return (f"<annotation><filename>{filename}</filename>{size_xml}" + "".join(
        f"<object><name>{label}</name><difficult>0</difficult><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
        f"<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>" for label, box in objects)
        + "</annotation>\n")


# items of the bad VOC folder whose annotation is the problem (image: a copy of SOURCE_JPEG)
ANNOTATION_CASES = {
    "malformed_xml": "<annotation><object><name>face</name>",
    "no_size": voc_xml([("face", (20, 30, 300, 150))]),                        # xmax past the real width
    "unknown_label": voc_xml([("cat", (10, 10, 50, 50)), ("face", FACE)], (SOURCE_W, SOURCE_H)),
    "negative_box": voc_xml([("face", (-10, -5, 60, 70))], (SOURCE_W, SOURCE_H)),
    "inverted_box": voc_xml([("face", (120, 30, 20, 150)), ("face_mask", FACE)], (SOURCE_W, SOURCE_H)),
    "zero_area_box": voc_xml([("face", (40, 30, 40, 150)), ("face", FACE)], (SOURCE_W, SOURCE_H)),
    "outside_box": voc_xml([("face", (300, 300, 400, 400)), ("face", (100, 100, 400, 400))], (SOURCE_W, SOURCE_H)),
    "nan_coordinate": voc_xml([("face", ("nan", 30, 120, 150))], (SOURCE_W, SOURCE_H)),
}
# what the converter must store for the items it keeps: box normalised to the image, and label id
KEPT = {
    **{name[:-4]: ([FACE[0] / SOURCE_W, FACE[1] / SOURCE_H, FACE[2] / SOURCE_W, FACE[3] / SOURCE_H], 2)
       for name in USABLE_IMAGES if name != "one_pixel.jpg"},
    "one_pixel": ([0, 0, 1, 1], 2),
    "no_size": ([20 / SOURCE_W, 30 / SOURCE_H, 1, 150 / SOURCE_H], 2),
    "unknown_label": ([FACE[0] / SOURCE_W, FACE[1] / SOURCE_H, FACE[2] / SOURCE_W, FACE[3] / SOURCE_H], 2),
    "negative_box": ([0, 0, 60 / SOURCE_W, 70 / SOURCE_H], 2),
    "inverted_box": ([FACE[0] / SOURCE_W, FACE[1] / SOURCE_H, FACE[2] / SOURCE_W, FACE[3] / SOURCE_H], 1),
    "zero_area_box": ([FACE[0] / SOURCE_W, FACE[1] / SOURCE_H, FACE[2] / SOURCE_W, FACE[3] / SOURCE_H], 2),
    "outside_box": ([100 / SOURCE_W, 100 / SOURCE_H, 1, 1], 2),
}
# items skipped whole: name -> (file named in the reason, reason)
SKIPPED_ITEMS = {
    **{name[:-4]: (name, reason) for name, reason in UNUSABLE_IMAGES.items()},
    "malformed_xml": ("malformed_xml.xml", "malformed xml"),
    "nan_coordinate": ("nan_coordinate.xml", "<xmin> is not a finite number"),
    "no_image": (os.path.join("JPEGImages", "no_image") + ".*", "image not found"),
    "no_xml": ("no_xml.xml", "annotation not found"),
}
# objects dropped from kept items: name -> reason
SKIPPED_OBJECTS = {
    "unknown_label": "unknown label 'cat'",
    "inverted_box": "zero-area or inverted box",
    "zero_area_box": "zero-area or inverted box",
    "outside_box": "has zero area inside the image",
}


@pytest.fixture(scope="module")
def bad_voc(tmp_path_factory, image_files, huge_jpeg):
    """A VOC folder holding every bad case. Splits: ``bad`` (all but the huge image), ``all`` (with it),
    ``empty`` (blank lines only)."""
    root = str(tmp_path_factory.mktemp("bad_voc"))
    for folder in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(root, folder))

    def annotate(name, text):
        with open(os.path.join(root, "Annotations", f"{name}.xml"), "w") as handle:
            handle.write(text)

    for file_name, path in image_files.items():
        shutil.copy(path, os.path.join(root, "JPEGImages", file_name))
        name = file_name[:-4]
        annotate(name, voc_xml([("face", (0, 0, 1, 1) if name == "one_pixel" else FACE)],
                               (1, 1) if name == "one_pixel" else (SOURCE_W, SOURCE_H)))
    for name, text in ANNOTATION_CASES.items():
        shutil.copy(SOURCE_JPEG, os.path.join(root, "JPEGImages", f"{name}.jpg"))
        annotate(name, text)
    annotate("no_image", voc_xml([("face", FACE)], (SOURCE_W, SOURCE_H)))
    shutil.copy(SOURCE_JPEG, os.path.join(root, "JPEGImages", "no_xml.jpg"))
    os.symlink(huge_jpeg, os.path.join(root, "JPEGImages", "huge.jpg"))
    annotate("huge", voc_xml([("face", (1000, 2000, 4000, 6000))], (HUGE_SIDE, HUGE_SIDE)))

    names = [file_name[:-4] for file_name in image_files] + list(ANNOTATION_CASES) + ["no_image", "no_xml"]
    assert sorted(names) == sorted(set(KEPT) | set(SKIPPED_ITEMS))
    split_folder = os.path.join(root, "ImageSets", "Main")
    for split, listed in (("bad", names), ("all", names + ["huge"])):
        with open(os.path.join(split_folder, f"{split}.txt"), "w") as handle:
            handle.write("\n".join(listed) + "\n")
    with open(os.path.join(split_folder, "empty.txt"), "w") as handle:
        handle.write("\n   \n")
    return root


# --- helpers -------------------------------------------------------------------------------------------

def lines_starting(text, prefix):
    return [line for line in text.splitlines() if line.startswith(prefix)]


def assert_one_line_error(status, stderr, *fragments, expected_status=2):
    """``status`` is ``expected_status``, no traceback, exactly one ``error: `` line holding every fragment."""
    assert "Traceback" not in stderr, stderr
    errors = lines_starting(stderr, "error: ")
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert str(fragment) in errors[0], errors[0]
    assert status == expected_status, stderr


def assert_reasons(lines, expected):
    """Each (file, reason) of ``expected`` is in exactly one of ``lines``, and there are no other lines."""
    assert len(lines) == len(expected), "\n".join(lines)
    for file_name, reason in expected:
        matching = [line for line in lines if file_name in line and reason in line]
        assert len(matching) == 1, f"{file_name}: {reason!r} not in\n" + "\n".join(lines)


# Peak resident memory of the running process in MB, printed by code run in a subprocess. VmHWM belongs to
# the process's own address space; ru_maxrss would also count the parent's memory at fork (kept over exec).
PEAK_MB_CODE = ("def peak_mb():\n"
                "    import resource\n"
                "    try:\n"
                "        with open('/proc/self/status') as status:\n"
                "            return int(next(line for line in status if line.startswith('VmHWM:')).split()[1]) // 1024\n"
                "    except (OSError, StopIteration):\n"
                "        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024\n")


def leftovers(folder):
    """Temporary files (``*.tmp-*``) anywhere under ``folder``."""
    return glob.glob(os.path.join(str(folder), "**", "*.tmp-*"), recursive=True)


def tiny_config():
    config = DEFAULT_SETTINGS
    config = config.replace(**SMALL_NETWORK, input_size=TINY_INPUT_SIZE, batch_size=2, cache_dataset=False)
    return config


def run_main(main, argv, capsys):
    """``main(argv)`` in-process: (status, stdout, stderr); an exception escaping main fails the test."""
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# --- components.images.read_image_bgr: what every entry point reads images with -------------------------------

@pytest.mark.parametrize("name", sorted(UNUSABLE_IMAGES))
def test_unusable_image_is_refused_naming_the_file(image_files, name):
    with pytest.raises(ImageError) as error:
        read_image_bgr(image_files[name])
    message = str(error.value)
    assert message.startswith(f"{image_files[name]}: ") and UNUSABLE_IMAGES[name] in message
    assert "\n" not in message


@pytest.mark.parametrize("name", sorted(USABLE_IMAGES))
def test_odd_image_becomes_8_bit_bgr(image_files, name):
    image = read_image_bgr(image_files[name])
    assert image.dtype == np.uint8 and image.shape == (*USABLE_IMAGES[name], 3)
    source = cv2.imread(SOURCE_JPEG).astype(float)
    if name.startswith("grey"):
        assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
        grey = cv2.cvtColor(source.astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(float)
        assert np.abs(image[..., 0] - grey).mean() < 4
    elif name == "one_pixel.jpg":
        assert np.abs(image[0, 0].astype(float) - (30, 60, 90)).max() < 8
    else:
        assert np.array_equal(image, source)       # lossless: PNG, alpha dropped, 16 bits divided by 257


def test_missing_path_and_folder_are_refused(tmp_path):
    for path, reason in ((tmp_path / "missing.jpg", "file not found"), (tmp_path, "is a folder")):
        with pytest.raises(ImageError, match=reason) as error:
            read_image_bgr(str(path))
        assert str(error.value).startswith(f"{path}: ")


def test_truncated_jpeg_is_refused_at_any_cut_and_complete_files_pass(tmp_path):
    """OpenCV 4 returns a partly grey image for some cuts, OpenCV 5 none; the marker check decides either way."""
    with open(SOURCE_JPEG, "rb") as handle:
        raw = handle.read()
    source = cv2.imread(SOURCE_JPEG)
    progressive = cv2.imencode(".jpg", source, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    for label, data in (("baseline", raw), ("progressive", progressive)):
        for cut in (3, 100, len(data) // 3, len(data) // 2, len(data) - 2):
            path = tmp_path / f"{label}_{cut}.jpg"
            path.write_bytes(data[:cut])
            with pytest.raises(ImageError, match="truncated JPEG|not a readable image"):
                read_image_bgr(str(path))
        whole = tmp_path / f"{label}_whole.jpg"
        whole.write_bytes(data + b"camera trailer after the end-of-image marker")
        assert read_image_bgr(str(whole)).shape == (SOURCE_H, SOURCE_W, 3)
    png = cv2.imencode(".png", source)[1].tobytes()
    (tmp_path / "cut.png").write_bytes(png[:len(png) - 20])
    with pytest.raises(ImageError, match="truncated PNG"):
        read_image_bgr(str(tmp_path / "cut.png"))


@pytest.mark.slow
def test_huge_image_reads_in_bounded_time_and_memory(huge_jpeg):
    """10000 x 10000 decodes to 300 MB; reading it must not take much more (own process, no TensorFlow)."""
    code = PEAK_MB_CODE + (
        "import sys, time; from components.images import read_image_bgr\n"
        "start = time.perf_counter(); image = read_image_bgr(sys.argv[2])\n"
        "print(image.shape, image[5000, 5000].tolist(), time.perf_counter() - start, peak_mb())\n")
    run = subprocess.run([sys.executable, "-c", code, REPO_ROOT, huge_jpeg], capture_output=True, text=True,
                         env=ENV, timeout=120)
    assert run.returncode == 0, run.stderr
    parts = run.stdout.split()
    seconds, peak_mb = float(parts[-2]), int(parts[-1])
    assert f"({HUGE_SIDE}, {HUGE_SIDE}, 3)" in run.stdout
    pixel = [int(value.strip("[],")) for value in parts[-5:-2]]
    assert np.abs(np.subtract(pixel, HUGE_BGR)).max() <= 2
    print(f"peak {peak_mb} MB, {seconds:.1f} s")
    assert peak_mb < 800, f"peak {peak_mb} MB"
    assert seconds < 60, f"{seconds:.1f} s"


# --- dataset/voc_to_tfrecord.py ------------------------------------------------------------------------

CONVERTER = os.path.join(REPO_ROOT, "dataset", "voc_to_tfrecord.py")


def read_records(path):
    """{name: (image uint8 [H, W, 3] as tf.io.decode_jpeg gives it, boxes [N, 4], labels [N])}."""
    import tensorflow as tf

    from dataset.tf_dataset_preprocess import FEATURES, parse_example
    records = {}
    for serialized in tf.data.TFRecordDataset(path):
        features = tf.io.parse_single_example(serialized, FEATURES)
        image, boxes, labels, _ = parse_example(serialized)
        assert (features["image/height"].numpy(), features["image/width"].numpy()) == image.shape[:2]
        records[features["image/filename"].numpy().decode()] = (image.numpy(), boxes.numpy(), labels.numpy())
    return records


@pytest.fixture(scope="module")
def converted(bad_voc, tmp_path_factory):
    """The converter run once, as a real command, over the ``all`` split: (CompletedProcess, output path)."""
    output = str(tmp_path_factory.mktemp("converted") / "all.tfrecord")
    start = time.perf_counter()
    run = subprocess.run([sys.executable, CONVERTER, "--dataset_path", bad_voc, "--split", "all",
                          "--output_file", output, "--skip_unknown_labels"], capture_output=True, text=True, env=ENV, cwd=REPO_ROOT,
                         timeout=300)
    return run, output, time.perf_counter() - start


@pytest.mark.slow
def test_converter_skips_each_bad_item_with_one_reason_and_counts_them(converted):
    run, output, seconds = converted
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and not lines_starting(run.stderr, "error:")
    assert_reasons(lines_starting(run.stderr, "skipped image: "),
                   [SKIPPED_ITEMS[name] for name in SKIPPED_ITEMS])
    assert_reasons(lines_starting(run.stderr, "skipped object: "),
                   [(f"{name}.xml", reason) for name, reason in SKIPPED_OBJECTS.items()])
    kept = len(KEPT) + 1                                                   # + the huge image
    assert run.stdout.strip().splitlines()[-1] == (
        f"{output}: wrote {kept} images with {kept} boxes; skipped {len(SKIPPED_ITEMS)} images and "
        f"{len(SKIPPED_OBJECTS)} objects")
    assert not leftovers(os.path.dirname(output))
    assert seconds < 120, f"conversion took {seconds:.0f} s"


@pytest.mark.slow
def test_converter_records_are_3_channel_with_clipped_boxes(converted):
    _, output, _ = converted
    records = read_records(output)
    assert sorted(records) == sorted(list(KEPT) + ["huge"])
    source_rgb = cv2.imread(SOURCE_JPEG)[..., ::-1].astype(float)
    for name, (image, boxes, labels) in records.items():
        if name == "huge":
            # downscaled to 2048 px, one flat colour, box still on the same part of the picture
            assert image.shape == (2048, 2048, 3)
            assert np.abs(image.reshape(-1, 3).mean(axis=0) - HUGE_BGR[::-1]).max() < 3
            np.testing.assert_allclose(boxes, [[0.1, 0.2, 0.4, 0.6]], atol=1e-6)
            continue
        expected_box, expected_label = KEPT[name]
        np.testing.assert_allclose(boxes, [expected_box], atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(labels, [expected_label])
        if name == "one_pixel":
            assert image.shape == (1, 1, 3)
            assert np.abs(image[0, 0].astype(float) - (90, 60, 30)).max() < 8          # RGB of BGR (30, 60, 90)
            continue
        assert image.shape == (SOURCE_H, SOURCE_W, 3), name
        if name.startswith("grey"):
            assert np.abs(image[..., 0].astype(float) - image[..., 1]).max() <= 2, name
        else:
            assert np.abs(image.astype(float) - source_rgb).mean() < 4, name            # same picture, RGB


@pytest.mark.slow
def test_every_record_goes_through_the_training_pipeline(converted):
    """TensorFlow's decode_jpeg and the augmentation must take every record we wrote, 1 x 1 included."""
    from dataset.tf_dataset_preprocess import load_dataset
    _, output, _ = converted
    config = tiny_config()
    for training in (True, False):
        count = 0
        for images, targets in load_dataset(output, config, training=training, batch_size=1, seed=0):
            assert images.shape == (1, *TINY_INPUT_SIZE, 3)
            assert np.all(np.isfinite(images.numpy())) and np.all(np.isfinite(targets.numpy()))
            count += 1
        assert count == len(KEPT) + 1


def test_jpeg_tensorflow_cannot_decode_is_re_encoded_not_stored(tmp_path, monkeypatch):
    """A JPEG OpenCV decodes but TensorFlow refuses is stored as OpenCV's decoding, re-encoded."""
    import tensorflow as tf

    from dataset import tfrecord_writer as voc_to_tfrecord
    with open(SOURCE_JPEG, "rb") as handle:
        raw = handle.read()
    kept = voc_to_tfrecord.encode_image(SOURCE_JPEG)
    assert kept.jpeg == raw and (kept.height, kept.width) == (SOURCE_H, SOURCE_W)

    def refusing_decode(*args, **kwargs):
        raise tf.errors.InvalidArgumentError(None, None, "Invalid JPEG data")

    monkeypatch.setattr(voc_to_tfrecord.tf.io, "decode_jpeg", refusing_decode)
    re_encoded = voc_to_tfrecord.encode_image(SOURCE_JPEG)
    monkeypatch.undo()
    assert re_encoded.jpeg != raw and re_encoded.jpeg[:3] == b"\xff\xd8\xff"
    assert tf.io.decode_jpeg(re_encoded.jpeg, channels=3).shape == (SOURCE_H, SOURCE_W, 3)


def test_converter_errors_name_the_path(bad_voc, tmp_path, capsys):
    from cli.voc_to_tfrecord import main
    output = tmp_path / "out.tfrecord"
    cases = [
        (["--dataset_path", tmp_path / "nowhere", "--split", "bad"], [tmp_path / "nowhere", "dataset folder not found"]),
        (["--dataset_path", bad_voc, "--split", "nosuch"], ["nosuch.txt", "split file not found"]),
        (["--dataset_path", bad_voc, "--split", "empty"], ["empty.txt", "lists no images"]),
        (["--dataset_path", bad_voc, "--split", "bad", "--label_aliases", "{'face': "], ["--label_aliases"]),
        (["--dataset_path", bad_voc, "--split", "bad", "--max_image_side", "-1"], ["--max_image_side"]),
    ]
    for argv, fragments in cases:
        status, _, err = run_main(main, argv + ["--output_file", output], capsys)
        assert_one_line_error(status, err, *fragments)
    folder = tmp_path / "a_folder"
    folder.mkdir()
    status, _, err = run_main(main, ["--dataset_path", bad_voc, "--split", "bad", "--output_file", folder], capsys)
    assert_one_line_error(status, err, folder, "is a folder")
    assert sorted(os.listdir(tmp_path)) == ["a_folder"]                  # no output, no temporary file


def test_interrupted_conversion_keeps_the_old_output(bad_voc, tmp_path, monkeypatch, capsys):
    """Ctrl-C half-way: the earlier output file is untouched and no temporary file remains."""
    from dataset import tfrecord_writer as voc_to_tfrecord
    output = tmp_path / "train.tfrecord"
    output.write_bytes(b"an earlier, complete conversion")
    calls = []
    real_encode = voc_to_tfrecord.encode_image

    def interrupted_encode(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(voc_to_tfrecord, "encode_image", interrupted_encode)
    from cli.voc_to_tfrecord import main
    status, _, err = run_main(main, ["--dataset_path", bad_voc, "--split", "bad",
                                     "--output_file", output, "--skip_unknown_labels"], capsys)
    assert_one_line_error(status, err, "interrupted", output, expected_status=130)
    assert len(calls) == 4
    assert output.read_bytes() == b"an earlier, complete conversion"
    assert os.listdir(tmp_path) == ["train.tfrecord"]


# --- components/kmeans.py ------------------------------------------------------------------------------

def test_kmeans_skips_unreadable_annotations_with_one_reason_each(bad_voc, tmp_path, capsys):
    """k-means reads only the xml (images only when an xml has no size): bad images with a sized xml count."""
    from cli.kmeans import main
    plot = tmp_path / "anchors.png"
    status, out, err = run_main(main, ["--dataset_path", bad_voc, "--split", "all", "--k", "3",
                                       "--output", plot, "--skip_unknown_labels"], capsys)
    assert status == 0, err
    assert "Traceback" not in err and not lines_starting(err, "error:")
    expected = [SKIPPED_ITEMS[name] for name in ("malformed_xml", "nan_coordinate", "no_xml")]
    expected += [(f"{name}.xml", reason) for name, reason in SKIPPED_OBJECTS.items()]
    assert_reasons(lines_starting(err, "skipped: "), expected)
    assert f"skipped {len(expected)} images/objects" in err
    # every xml with a usable box: the 10 image cases, no_image, huge and the 6 annotation cases kept
    assert "boxes: 18 " in out
    assert plot.read_bytes()[:4] == b"\x89PNG" and not leftovers(tmp_path)


def test_kmeans_errors_name_the_path(bad_voc, tmp_path, capsys):
    from cli.kmeans import main
    cases = [
        (["--dataset_path", bad_voc, "--split", "empty"], ["empty.txt", "lists no images"]),
        (["--dataset_path", tmp_path / "nowhere"], [tmp_path / "nowhere", "split file not found"]),
        (["--dataset_path", bad_voc, "--split", "bad", "--k", "0", "--skip_unknown_labels"], ["--k: must be at least 1"]),
        (["--dataset_path", bad_voc, "--split", "bad", "--input_size", "(240, "], ["--input_size"]),
    ]
    for argv, fragments in cases:
        status, _, err = run_main(main, argv + ["--output", tmp_path / "a.png"], capsys)
        assert_one_line_error(status, err, *fragments)
    assert not os.path.exists(tmp_path / "a.png")


# --- dataset/check_dataset.py --------------------------------------------------------------------------

@pytest.mark.slow
def test_check_dataset_errors_name_the_tfrecord(tmp_path, capsys):
    from cli.check_dataset import main
    empty, garbage = tmp_path / "empty.tfrecord", tmp_path / "garbage.tfrecord"
    empty.write_bytes(b"")
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    output = tmp_path / "grid.png"
    cases = [
        (tmp_path / "missing.tfrecord", [], ["TFRecord not found"]),
        (empty, [], ["holds no records"]),
        (garbage, [], ["not a readable TFRecord"]),
        (SOURCE_JPEG, [], ["not a readable TFRecord"]),                     # a picture passed as the data
        (tmp_path, [], ["TFRecord not found"]),
        (empty, ["--num_images", "0"], ["--num_images"]),
    ]
    for tfrecord, extra, fragments in cases:
        status, _, err = run_main(main, ["--tfrecord", tfrecord, "--output", output, *extra], capsys)
        assert_one_line_error(status, err, *([tfrecord] if not extra else []), *fragments)
    assert not output.exists() and not leftovers(tmp_path)


@pytest.mark.slow
def test_check_dataset_shows_fewer_records_than_asked(converted, tmp_path, capsys):
    from cli.check_dataset import main
    _, tfrecord, _ = converted
    output = tmp_path / "grid.png"
    status, out, err = run_main(main, ["--tfrecord", tfrecord, "--num_images", "20", "--output", output,
                                       "--input_size", str(TINY_INPUT_SIZE)], capsys)
    assert status == 0, err
    assert out.strip() == str(output) and output.read_bytes()[:4] == b"\x89PNG"


# --- train.py --------------------------------------------------------------------------------------------

def train_argv(tmp_path, tfrecord, *extra):
    return ["--train_tfrecord", tfrecord, "--val_tfrecord", tmp_path / "no_val.tfrecord", "--epoch", "1",
            "--checkpoint_dir", tmp_path / "ckpt", "--log_dir", tmp_path / "logs", "--no_progress",
            *SMALL_NETWORK_FLAGS, "--input_size", str(TINY_INPUT_SIZE), *extra]


def test_train_missing_tfrecord_and_unparsable_override_are_one_line_errors(tmp_path, capsys):
    import train
    status, _, err = run_main(train.main, train_argv(tmp_path, tmp_path / "missing.tfrecord"), capsys)
    assert_one_line_error(status, err, tmp_path / "missing.tfrecord", "not found")
    status, _, err = run_main(train.main, train_argv(tmp_path, tmp_path / "x.tfrecord", "--batch_size", "abc"),
                              capsys)
    assert_one_line_error(status, err, "--batch_size", "'abc'")
    status, _, err = run_main(train.main, train_argv(tmp_path, tmp_path / "x.tfrecord", "--using_flip", "maybe"),
                              capsys)
    assert_one_line_error(status, err, "--using_flip")


def test_train_empty_tfrecord_is_a_one_line_error(tmp_path, capsys):
    import train
    empty = tmp_path / "empty.tfrecord"
    empty.write_bytes(b"")
    status, _, err = run_main(train.main, train_argv(tmp_path, empty), capsys)
    assert_one_line_error(status, err, empty, "no records")


def test_train_corrupt_tfrecord_is_a_one_line_error(tmp_path, capsys):
    import train
    garbage = tmp_path / "garbage.tfrecord"
    shutil.copy(SOURCE_JPEG, garbage)
    status, _, err = run_main(train.main, train_argv(tmp_path, garbage), capsys)
    assert_one_line_error(status, err, garbage)


def test_train_wrong_type_override_is_a_one_line_error(tmp_path, capsys):
    import train
    for value in ("[1]", "2.5", "'8'"):
        status, _, err = run_main(train.main, train_argv(tmp_path, tmp_path / "x.tfrecord", "--batch_size", value),
                                  capsys)
        assert_one_line_error(status, err, "--batch_size", "expected int")
    assert not os.path.exists(tmp_path / "ckpt")


@pytest.mark.slow
@pytest.mark.parametrize("value", ["0", "-4"])
def test_train_out_of_range_override_is_a_one_line_error(converted, tmp_path, capsys, value):
    import train
    _, tfrecord, _ = converted
    status, _, err = run_main(train.main, train_argv(tmp_path, tfrecord, "--batch_size", value), capsys)
    assert_one_line_error(status, err, "--batch_size")


# --- mAP/compute_mAP.py --------------------------------------------------------------------------------

GT_OK = "mask 10 10 50 50\n"
DET_OK = "mask 0.9 10 10 50 50\n"
COMPUTE_MAP_CASES = {
    # name: (ground-truth files, detection files, fragments of the error line)
    "gt_too_few_fields": ({"a.txt": GT_OK + "unmask 1 2 3\n"}, {}, ["a.txt", "line 2", "expected '<class>"]),
    "gt_not_a_number": ({"a.txt": "mask 10 ten 50 50\n"}, {}, ["a.txt", "line 1", "expected numbers"]),
    "gt_nan": ({"a.txt": "mask nan 10 50 50\n"}, {}, ["a.txt", "line 1", "non-finite"]),
    "gt_inf": ({"a.txt": "mask 10 10 inf 50\n"}, {}, ["a.txt", "line 1", "non-finite"]),
    "gt_inverted": ({"a.txt": "mask 50 10 10 50\n"}, {}, ["a.txt", "line 1", "right < left"]),
    "gt_bad_flag": ({"a.txt": "mask 10 10 50 50 hard\n"}, {}, ["a.txt", "line 1", "[difficult]"]),
    "det_too_few_fields": ({"a.txt": GT_OK}, {"a.txt": "mask 0.9 10 10 50\n"}, ["a.txt", "line 1", "<score>"]),
    "det_bad_score": ({"a.txt": GT_OK}, {"a.txt": "mask high 10 10 50 50\n"}, ["a.txt", "line 1", "numbers"]),
    "det_inverted": ({"a.txt": GT_OK}, {"a.txt": DET_OK + "mask 0.5 10 50 50 10\n"}, ["a.txt", "line 2", "bottom"]),
    "det_binary": ({"a.txt": GT_OK}, {"a.txt": b"\xff\xd8\xff\xe0 a JPEG"}, ["a.txt", "not a UTF-8 text file"]),
    "det_without_gt": ({"a.txt": GT_OK}, {"a.txt": DET_OK, "b.txt": DET_OK}, ["b.txt", "no ground-truth file"]),
    "gt_empty_folder": ({}, {}, ["gt", "no ground-truth .txt files"]),
    "gt_only_empty_files": ({"a.txt": "", "b.txt": "\n\n"}, {}, ["gt", "no non-difficult ground-truth box"]),
}


@pytest.mark.parametrize("case", sorted(COMPUTE_MAP_CASES))
def test_compute_map_malformed_input_is_one_line_error(tmp_path, capsys, case):
    from cli.compute_map import main
    ground_truth, detections, fragments = COMPUTE_MAP_CASES[case]
    for folder, files in (("gt", ground_truth), ("det", detections)):
        os.makedirs(tmp_path / folder)
        for name, content in files.items():
            path = tmp_path / folder / name
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    status, _, err = run_main(main, ["--gt_dir", tmp_path / "gt", "--det_dir", tmp_path / "det",
                                     "--output_dir", tmp_path / "out", "--no_plot"], capsys)
    assert_one_line_error(status, err, *fragments)
    assert not (tmp_path / "out" / "results.txt").exists()


def test_compute_map_missing_folders_and_unwritable_output(tmp_path, capsys):
    from cli.compute_map import main
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "a.txt").write_text(GT_OK)
    (tmp_path / "det").mkdir()
    (tmp_path / "a_file").write_text("x")
    cases = [
        ([tmp_path / "nowhere", tmp_path / "det", tmp_path / "out"], [tmp_path / "nowhere", "folder not found"]),
        ([tmp_path / "a_file", tmp_path / "det", tmp_path / "out"], [tmp_path / "a_file", "folder not found"]),
        ([tmp_path / "gt", tmp_path / "nowhere", tmp_path / "out"], [tmp_path / "nowhere", "folder not found"]),
        ([tmp_path / "gt", tmp_path / "det", tmp_path / "a_file"], [tmp_path / "a_file"]),
    ]
    for (gt_dir, det_dir, output_dir), fragments in cases:
        status, _, err = run_main(main, ["--gt_dir", gt_dir, "--det_dir", det_dir, "--output_dir", output_dir,
                                         "--no_plot"], capsys)
        assert_one_line_error(status, err, *fragments)
    assert not leftovers(tmp_path)


def test_compute_map_takes_windows_line_endings_blank_lines_and_spaces(tmp_path, capsys):
    from cli.compute_map import main
    (tmp_path / "gt").mkdir()
    (tmp_path / "det").mkdir()
    (tmp_path / "gt" / "a.txt").write_bytes(b"mask 10 10 50 50\r\n\r\n  unmask 60 60 90 90  \r\n")
    (tmp_path / "det" / "a.txt").write_bytes(b"\r\nmask 0.9 10 10 50 50\r\nunmask  0.8 60 60 90 90\r\n")
    status, out, err = run_main(main, ["--gt_dir", tmp_path / "gt", "--det_dir", tmp_path / "det",
                                       "--output_dir", tmp_path / "out", "--no_plot"], capsys)
    assert status == 0, err
    assert "mAP = 100.00%" in out
