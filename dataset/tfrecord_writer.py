"""Convert a VOC split to a TFRecord file.

    python dataset/voc_to_tfrecord.py --dataset_path Maskdata/ --split train --output_file dataset/train_mask.tfrecord

Each record holds the RGB JPEG image, its name and size, and the normalised corner-form boxes with class
ids and difficult flags. An 8-bit colour JPEG that TensorFlow decodes to the same size is stored byte for
byte; anything else (PNG, grey, RGBA, 16-bit, a JPEG TensorFlow cannot decode) is re-encoded from what
OpenCV decoded, and images with a side over ``--max_image_side`` are downscaled, so every record decodes
in the training pipeline. Truncated, empty and undecodable images, and items without image or annotation,
are skipped with a one-line reason each, as are objects with an unknown label or an empty box; boxes are
clipped to the image. The output is written to a temporary name and renamed when complete, so an
interrupted or failed run leaves an earlier output file as it was.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from components.atomic_io import atomic_path
from components.class_list import write_tfrecord_classes
from components.errors import ProjectError
from components.images import ImageError, decode_image_file
from dataset.extra_ignore import add_ignore_boxes
from dataset.voc import VOCError, class_id, clip_boxes, load_item, read_split

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from components.config import Settings
    from dataset.voc import Annotation

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_QUALITY = 95
# Larger images are downscaled before storing: the network sees at most a 0.3 crop resized to its input
# (320 x 240 by default), so 2048 px loses nothing, while a decoded 10000 x 10000 image would take 300 MB
# in the training cache (and over 1 GB as floats while being augmented).
MAX_IMAGE_SIDE = 2048


@dataclass
class EncodedImage:
    """JPEG bytes of an 8-bit RGB image as stored (``height`` x ``width``) and the source image's size."""
    jpeg: bytes
    height: int
    width: int
    source_height: int
    source_width: int


@dataclass
class ConversionReport:
    """What a conversion wrote and what it skipped (one reason per skipped item)."""
    written: int = 0
    boxes: int = 0
    class_boxes: dict = field(default_factory=dict)   # class name -> boxes written
    skipped_images: list = field(default_factory=list)
    skipped_objects: list = field(default_factory=list)
    extra_ignored: int = 0                            # boxes added from an extra-ignore file (among ``boxes``)

    def summary(self) -> str:
        extra = f" ({self.extra_ignored} of them extra ignore boxes)" if self.extra_ignored else ""
        return (f"wrote {self.written} images with {self.boxes} boxes{extra}; skipped {len(self.skipped_images)} "
                f"images and {len(self.skipped_objects)} objects")


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _tensorflow_decodes(jpeg, shape):
    """Whether ``tf.io.decode_jpeg`` (as used by the training pipeline) decodes ``jpeg`` to ``shape``."""
    try:
        return tuple(tf.io.decode_jpeg(jpeg, channels=3).shape) == tuple(shape)
    except tf.errors.OpError:
        return False


def encode_image(path: str, max_side: int = MAX_IMAGE_SIDE) -> EncodedImage:
    """EncodedImage of the image at ``path``: JPEG bytes that ``tf.io.decode_jpeg`` decodes.

    An 8-bit 3-channel JPEG no larger than ``max_side`` that TensorFlow decodes to the size OpenCV saw is
    kept byte for byte; anything else is re-encoded (quality 95) from OpenCV's decoding, downscaled (area
    interpolation) so that its longer side is ``max_side`` when larger (``max_side`` 0: no limit). Raises
    VOCError naming the file when it cannot be read (see ``components.images.decode_image_file``).
    """
    image, raw, unchanged = decode_image_file(path)
    source_height, source_width = image.shape[:2]
    scale = max_side / max(source_height, source_width) if max_side else 1.0
    if scale < 1.0:
        size = (max(1, round(source_width * scale)), max(1, round(source_height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    elif unchanged and raw.startswith(JPEG_MAGIC) and _tensorflow_decodes(raw, image.shape):
        return EncodedImage(raw, source_height, source_width, source_height, source_width)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise VOCError(f"{path}: could not re-encode as JPEG")
    return EncodedImage(encoded.tobytes(), image.shape[0], image.shape[1], source_height, source_width)


def make_example(name: str, jpeg: bytes, height: int, width: int, annotation: Annotation,
                 labels_list: Sequence[str]) -> tf.train.Example:
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
        "image/object/class/label": _ints([class_id(label, labels_list) for label in annotation.labels]),
        "image/object/difficult": _ints(annotation.difficult.astype(int).tolist()),
    }))


def convert_split(dataset_path: str, split: str, output_file: str, settings: Settings, progress: bool = True,
                  max_image_side: int = MAX_IMAGE_SIDE,
                  extra_ignore: Mapping[str, np.ndarray] | None = None) -> ConversionReport:
    """Write ``output_file`` from the VOC ``split`` of ``dataset_path``; returns a ConversionReport.

    ``extra_ignore`` ({image name: boxes [K, 4] pixels, corner form}, see ``dataset/extra_ignore.py``) adds
    those boxes to the images' own as ``ignore`` boxes (faces the annotation leaves out). VOC labels map by
    ``settings.data.label_aliases``; the class list (``settings.model.labels_list``) and the boxes per class are
    written beside the file (components/class_list.py).
    Raises VOCError when the split itself cannot be read or ``output_file`` is a folder. The file is written
    under a temporary name and renamed when complete: on any error or interruption an existing
    ``output_file`` is left as it was and the temporary file is removed.
    """
    if os.path.isdir(output_file):
        raise VOCError(f"{output_file}: is a folder; --output_file must name a file")
    names = read_split(dataset_path, split)
    report = ConversionReport()
    os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
    try:
        _write_records(dataset_path, split, names, output_file, settings, progress, max_image_side, report,
                       extra_ignore or {})
    except tf.errors.OpError as error:   # TFRecordWriter cannot create or write the file
        raise ProjectError(f"{output_file}: cannot write ({error.message.splitlines()[0]})") from None
    write_tfrecord_classes(output_file, settings.model.labels_list, report.class_boxes)
    return report


def _write_records(dataset_path, split, names, output_file, settings, progress, max_image_side, report,
                   extra_ignore) -> None:
    """The body of :func:`convert_split`: every readable item of ``names`` into ``output_file``."""
    with atomic_path(output_file) as temporary, tf.io.TFRecordWriter(temporary) as writer:
        for name in tqdm(names, desc=f"{split} -> tfrecord", unit="img", disable=not progress):
            try:
                item = load_item(dataset_path, name, settings.data.label_aliases, read_image=False)
                annotation = item.annotation
                encoded = encode_image(item.image_path, max_image_side)  # type: ignore[arg-type]
                clip_boxes(annotation, encoded.source_width, encoded.source_height)
                report.extra_ignored += add_ignore_boxes(annotation, extra_ignore.get(name, ()))
                if (encoded.width, encoded.height) != (encoded.source_width, encoded.source_height):
                    clip_boxes(annotation, encoded.width, encoded.height)     # scaled to the stored size
            except (VOCError, ImageError) as error:
                report.skipped_images.append(str(error))
                continue
            report.skipped_objects.extend(item.skipped())
            writer.write(make_example(name, encoded.jpeg, encoded.height, encoded.width, annotation,
                                      settings.model.labels_list).SerializeToString())
            report.written += 1
            report.boxes += len(annotation.labels)
            for label in annotation.labels:
                report.class_boxes[label] = report.class_boxes.get(label, 0) + 1

