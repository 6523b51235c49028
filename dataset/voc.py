"""Reading PASCAL VOC folders: split lists, annotations (with label aliases) and images."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from lxml import etree

from components.config import IGNORE_ID, IGNORE_LABEL
from components.errors import ProjectError
from components.images import ImageError, read_image_bgr

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


class VOCError(ProjectError):
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


def class_id(label: str, labels_list: Sequence[str]) -> int:
    """Class id of the canonical name ``label`` in ``labels_list``; ``IGNORE_ID`` for the ignore label."""
    if label == IGNORE_LABEL:
        return IGNORE_ID
    if label not in labels_list:
        raise VOCError(f"label {label!r} (from --label_aliases) is not one of --labels_list {list(labels_list)}")
    return labels_list.index(label)


def read_split(dataset_path: str, split: str) -> list[str]:
    """Image names (no extension) listed in ``ImageSets/Main/<split>.txt``."""
    path = os.path.join(dataset_path, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(path):
        raise VOCError(f"{path}: split file not found")
    with open(path, encoding="utf-8") as handle:
        names = [line.split()[0] for line in handle if line.strip()]
    if not names:
        raise VOCError(f"{path}: split file lists no images")
    return names


def find_image(dataset_path: str, name: str) -> str | None:
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
        value = float(text)
    except ValueError:
        raise VOCError(f"{path}: <{tag}> is not a number: {text!r}") from None
    if not np.isfinite(value):
        raise VOCError(f"{path}: <{tag}> is not a finite number: {text!r}")
    return value


def parse_annotation(path: str, label_aliases: Mapping[str, str], keep_difficult: bool = True) -> Annotation:
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


def clip_to_image(boxes: np.ndarray, width: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """(``boxes`` [N, 4] pixels, corner form, clipped to a ``width`` x ``height`` image, as float32; [N] bool:
    which still have an area)."""
    boxes = np.clip(np.asarray(boxes, np.float32).reshape(-1, 4), 0, [width, height, width, height])
    return boxes.astype(np.float32), (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def clip_boxes(annotation: Annotation, width: int, height: int) -> Annotation:
    """Clip boxes (pixels) to a ``width`` x ``height`` image, rescaling first if the xml size differs.

    Boxes left with zero area are dropped and recorded in ``annotation.skipped``. Returns the annotation.
    """
    boxes = annotation.boxes.copy()
    if annotation.width and annotation.height and (annotation.width, annotation.height) != (width, height):
        boxes *= np.array([width / annotation.width, height / annotation.height] * 2, np.float32)
    boxes, keep = clip_to_image(boxes, width, height)
    for index in np.flatnonzero(~keep):
        annotation.skipped.append(f"box {annotation.boxes[index].tolist()} has zero area inside the image")
    annotation.boxes = boxes[keep]
    annotation.labels = [label for label, k in zip(annotation.labels, keep) if k]
    annotation.difficult = annotation.difficult[keep]
    annotation.width, annotation.height = width, height
    return annotation


@dataclass
class VOCItem:
    """One item of a VOC split: its files, its annotation and (when read) its image, BGR [H, W, 3]."""
    name: str
    xml_path: str
    image_path: str | None
    annotation: Annotation
    image_bgr: np.ndarray | None = None

    def skipped(self) -> list[str]:
        """One ``<xml path>: <reason>`` per object that was dropped (unknown label, empty box, ...)."""
        return [f"{self.xml_path}: {reason}" for reason in self.annotation.skipped]


def load_item(dataset_path: str, name: str, label_aliases: Mapping[str, str], read_image: bool = True,
              require_image: bool = True) -> VOCItem:
    """Load the item ``name`` of a VOC folder: find its image and xml, parse the xml (labels mapped through
    ``label_aliases``) and, with ``read_image``, decode the image and clip the boxes to it.

    ``require_image`` False allows an item without image file (``image_path`` None; only with ``read_image``
    False). Raises VOCError naming the file when the image or the xml is missing or unreadable.
    """
    xml_path = os.path.join(dataset_path, "Annotations", f"{name}.xml")
    image_path = find_image(dataset_path, name)
    if image_path is None and (require_image or read_image):
        raise VOCError(f"{os.path.join(dataset_path, 'JPEGImages', name)}.*: image not found")
    if not os.path.isfile(xml_path):
        raise VOCError(f"{xml_path}: annotation not found")
    item = VOCItem(name, xml_path, image_path, parse_annotation(xml_path, label_aliases))
    if read_image:
        try:
            item.image_bgr = read_image_bgr(image_path)  # type: ignore[arg-type]
        except ImageError as error:
            raise VOCError(str(error)) from None
        clip_boxes(item.annotation, item.image_bgr.shape[1], item.image_bgr.shape[0])
    return item
