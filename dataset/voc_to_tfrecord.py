"""Convert a VOC split to a TFRecord file.

    python dataset/voc_to_tfrecord.py --dataset_path Maskdata/ --split train --output_file dataset/train_mask.tfrecord

Each record holds the RGB JPEG image (re-encoded when the source is PNG, grey, RGBA or 16-bit), its name and
size, and the normalised corner-form boxes with class ids and difficult flags. Images that cannot be used
are skipped with a one-line reason; the output is written to a temporary name and renamed when complete.
"""
import argparse
import os
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from components.config import add_config_arguments, config_from_args  # noqa: E402
from dataset.voc import VOCError, clip_boxes, find_image, parse_annotation, read_image_bgr, read_split  # noqa: E402

JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass
class ConversionReport:
    """What a conversion wrote and what it skipped (one reason per skipped item)."""
    written: int = 0
    boxes: int = 0
    skipped_images: list = field(default_factory=list)
    skipped_objects: list = field(default_factory=list)

    def summary(self):
        return (f"wrote {self.written} images with {self.boxes} boxes; skipped {len(self.skipped_images)} "
                f"images and {len(self.skipped_objects)} objects")


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def encode_image(path):
    """(JPEG bytes of an 8-bit RGB image, height, width) for the image at ``path``.

    A 3-channel 8-bit JPEG is kept byte for byte; anything else is decoded and re-encoded (quality 95).
    """
    image = read_image_bgr(path)
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw.startswith(JPEG_MAGIC):
        original = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
        if original is not None and original.ndim == 3 and original.shape[2] == 3 and original.dtype == np.uint8:
            return raw, image.shape[0], image.shape[1]
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise VOCError(f"{path}: could not re-encode as JPEG")
    return encoded.tobytes(), image.shape[0], image.shape[1]


def make_example(name, jpeg, height, width, annotation, labels_list):
    """A tf.train.Example for one image; boxes are normalised to [0, 1]."""
    boxes = annotation.boxes / np.array([width, height, width, height], np.float32)
    return tf.train.Example(features=tf.train.Features(feature={
        "image/filename": _bytes([name.encode("utf-8")]),
        "image/encoded": _bytes([jpeg]),
        "image/height": _ints([height]),
        "image/width": _ints([width]),
        "image/object/bbox/xmin": _floats(boxes[:, 0].tolist()),
        "image/object/bbox/ymin": _floats(boxes[:, 1].tolist()),
        "image/object/bbox/xmax": _floats(boxes[:, 2].tolist()),
        "image/object/bbox/ymax": _floats(boxes[:, 3].tolist()),
        "image/object/class/label": _ints([labels_list.index(label) for label in annotation.labels]),
        "image/object/difficult": _ints(annotation.difficult.astype(int).tolist()),
    }))


def convert_split(dataset_path, split, output_file, cfg, progress=True):
    """Write ``output_file`` from the VOC ``split`` of ``dataset_path``; returns a ConversionReport.

    Raises VOCError when the split itself cannot be read.
    """
    names = read_split(dataset_path, split)
    report = ConversionReport()
    os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
    temporary = f"{output_file}.tmp-{os.getpid()}"
    try:
        with tf.io.TFRecordWriter(temporary) as writer:
            for name in tqdm(names, desc=f"{split} -> tfrecord", unit="img", disable=not progress):
                xml_path = os.path.join(dataset_path, "Annotations", f"{name}.xml")
                image_path = find_image(dataset_path, name)
                try:
                    if image_path is None:
                        raise VOCError(f"{os.path.join(dataset_path, 'JPEGImages', name)}.*: image not found")
                    if not os.path.isfile(xml_path):
                        raise VOCError(f"{xml_path}: annotation not found")
                    annotation = parse_annotation(xml_path, cfg["label_aliases"])
                    jpeg, height, width = encode_image(image_path)
                    clip_boxes(annotation, width, height)
                except VOCError as error:
                    report.skipped_images.append(str(error))
                    continue
                report.skipped_objects.extend(f"{xml_path}: {reason}" for reason in annotation.skipped)
                writer.write(make_example(name, jpeg, height, width, annotation,
                                          cfg["labels_list"]).SerializeToString())
                report.written += 1
                report.boxes += len(annotation.labels)
        os.replace(temporary, output_file)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset_path", required=True, help="VOC folder (Annotations/, JPEGImages/, ImageSets/)")
    parser.add_argument("--split", default="train", help="name of a file in ImageSets/Main, without .txt")
    parser.add_argument("--output_file", default=None, help="default: dataset/<split>_mask.tfrecord")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        output_file = args.output_file or os.path.join("dataset", f"{args.split}_mask.tfrecord")
        report = convert_split(args.dataset_path, args.split, output_file, cfg)
    except (VOCError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for reason in report.skipped_images:
        print(f"skipped image: {reason}", file=sys.stderr)
    for reason in report.skipped_objects:
        print(f"skipped object: {reason}", file=sys.stderr)
    print(f"{output_file}: {report.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
