"""Reading PASCAL VOC folders: split lists, annotations (with label aliases) and images."""
import os
from dataclasses import dataclass, field

import cv2
import numpy as np
from lxml import etree


class VOCError(ValueError):
    """A VOC file that cannot be used; the message names the file and the problem."""


@dataclass
class Annotation:
    """One image's objects, boxes in pixels, corner form (xmin, ymin, xmax, ymax)."""
    filename: str
    width: int | None
    height: int | None
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    labels: list = field(default_factory=list)          # canonical class names
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    skipped: list = field(default_factory=list)         # one reason per object that was dropped


def read_split(dataset_path, split):
    """Image names (no extension) listed in ``ImageSets/Main/<split>.txt``."""
    path = os.path.join(dataset_path, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(path):
        raise VOCError(f"{path}: split file not found")
    with open(path, encoding="utf-8") as handle:
        names = [line.split()[0] for line in handle if line.strip()]
    if not names:
        raise VOCError(f"{path}: split file lists no images")
    return names


def find_image(dataset_path, name):
    """Path of the image called ``name`` in ``JPEGImages`` (any common extension), or None."""
    folder = os.path.join(dataset_path, "JPEGImages")
    for extension in (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG"):
        path = os.path.join(folder, name + extension)
        if os.path.isfile(path):
            return path
    return None


def _number(node, tag, path):
    text = node.findtext(tag)
    if text is None:
        raise VOCError(f"{path}: <{tag}> missing")
    try:
        return float(text)
    except ValueError:
        raise VOCError(f"{path}: <{tag}> is not a number: {text!r}") from None


def parse_annotation(path, label_aliases, keep_difficult=True):
    """Parse one VOC xml file.

    Labels are mapped through ``label_aliases`` (source name -> canonical name). Objects with an unknown
    label or a box of zero area are dropped and described in ``Annotation.skipped``; boxes are *not*
    clipped here (see :func:`clip_boxes`). Raises VOCError for an unreadable or malformed file.
    """
    try:
        root = etree.parse(path).getroot()
    except (OSError, etree.XMLSyntaxError) as error:
        raise VOCError(f"{path}: malformed xml ({str(error).splitlines()[0]})") from None
    if root.tag != "annotation":
        raise VOCError(f"{path}: root element is <{root.tag}>, expected <annotation>")
    size = root.find("size")
    width = height = None
    if size is not None and size.findtext("width") and size.findtext("height"):
        width, height = int(_number(size, "width", path)), int(_number(size, "height", path))
        if width <= 0 or height <= 0:
            width = height = None
    annotation = Annotation(root.findtext("filename") or "", width, height)
    boxes, labels, difficult = [], [], []
    for index, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in label_aliases:
            annotation.skipped.append(f"object {index}: unknown label {name!r}")
            continue
        is_difficult = (obj.findtext("difficult") or "0").strip() == "1"
        if is_difficult and not keep_difficult:
            continue
        node = obj.find("bndbox")
        if node is None:
            annotation.skipped.append(f"object {index}: no <bndbox>")
            continue
        box = [_number(node, tag, path) for tag in ("xmin", "ymin", "xmax", "ymax")]
        if box[2] <= box[0] or box[3] <= box[1]:
            annotation.skipped.append(f"object {index}: zero-area or inverted box {box}")
            continue
        boxes.append(box)
        labels.append(label_aliases[name])
        difficult.append(is_difficult)
    annotation.boxes = np.array(boxes, np.float32).reshape(-1, 4)
    annotation.labels = labels
    annotation.difficult = np.array(difficult, bool)
    return annotation


def clip_boxes(annotation, width, height):
    """Clip boxes (pixels) to a ``width`` x ``height`` image, rescaling first if the xml size differs.

    Boxes left with zero area are dropped and recorded in ``annotation.skipped``. Returns the annotation.
    """
    boxes = annotation.boxes.copy()
    if annotation.width and annotation.height and (annotation.width, annotation.height) != (width, height):
        boxes *= np.array([width / annotation.width, height / annotation.height] * 2, np.float32)
    boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    for index in np.flatnonzero(~keep):
        annotation.skipped.append(f"box {annotation.boxes[index].tolist()} has zero area inside the image")
    annotation.boxes = boxes[keep]
    annotation.labels = [label for label, k in zip(annotation.labels, keep) if k]
    annotation.difficult = annotation.difficult[keep]
    annotation.width, annotation.height = width, height
    return annotation


def read_image_bgr(path):
    """Decode any image file OpenCV reads into an 8-bit BGR array [H, W, 3].

    Grey, RGBA and 16-bit images are converted. Raises VOCError naming the file when it is missing,
    empty or not a decodable image.
    """
    if not os.path.isfile(path):
        raise VOCError(f"{path}: file not found")
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise VOCError(f"{path}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise VOCError(f"{path}: not a readable image (corrupt or unsupported format)")
    if image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image
