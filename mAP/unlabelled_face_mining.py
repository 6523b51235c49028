"""Faces an annotation leaves out, found by a model: confident detections that overlap no annotated box.

    python mAP/detect.py --dataset_path Maskdata/ --split train --output_dir runs/train_det
    python mAP/unlabelled_faces.py --set_dir runs/train_det --output_file runs/Maskdata_train_unlabelled.json \
        [--min_score 0.7] [--max_iou 0.1] [--dataset_path Maskdata/ --sheet runs/unlabelled.png]

Reads a set folder as mAP/detect.py writes it (``ground-truth/``, ``detection-results/``). In each image, the
detections scoring at least ``min_score`` are merged over the classes (class-agnostic NMS at IoU 0.5: a face
found as both classes counts once) and those whose IoU with every annotated box (any class, difficult and
ignored ones too) is below ``max_iou`` are kept: faces the annotators skipped, or the model's confident false
positives; a contact sheet of the highest-scoring ones shows which (look before you train on them). The list is
written in ``dataset/extra_ignore.py``'s format, for ``dataset/voc_to_tfrecord.py --extra_ignore``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from components.box_utils import class_agnostic_nms, iou_matrix
from mAP.sets import result_dirs
from mAP.voc_ap import read_folders

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from mAP.voc_ap import GroundTruth, ScoredBoxes

DEFAULT_MIN_SCORE = 0.7
DEFAULT_MAX_IOU = 0.1    # below this with every annotated box: not a loose box of an annotated face
MERGE_IOU = 0.5          # detections of different classes overlapping this much are one face
TILE = 128               # side of a contact-sheet tile, pixels
TILES_PER_ROW = 8


def unlabelled_faces(truth: GroundTruth | None, found: ScoredBoxes, min_score: float = DEFAULT_MIN_SCORE,
                     max_iou: float = DEFAULT_MAX_IOU) -> tuple[np.ndarray, np.ndarray]:
    """(boxes [K, 4] pixels, corner form; scores [K], descending) of the detections ``found`` (ScoredBoxes)
    scoring >= ``min_score``, merged over classes, whose IoU with every box of ``truth`` (a GroundTruth, or
    None: no annotated box) is below ``max_iou``."""
    keep = found.scores >= min_score
    if not keep.any():
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    boxes, scores, _ = class_agnostic_nms(found.boxes[keep], found.scores[keep][:, None], min_score, MERGE_IOU,
                                          int(keep.sum()))
    boxes, scores = boxes.numpy(), scores.numpy()
    if truth is not None and len(truth.boxes):
        apart = iou_matrix(boxes, truth.boxes).numpy().max(axis=1) < max_iou
        boxes, scores = boxes[apart], scores[apart]
    return boxes, scores


def mine_set_dir(set_dir: str, min_score: float = DEFAULT_MIN_SCORE,
                 max_iou: float = DEFAULT_MAX_IOU) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{image name: (boxes [K, 4], scores [K])} of :func:`unlabelled_faces` over a set folder (``ground-truth/``
    and ``detection-results/``), every image of its ground truth (K may be 0). Raises ProjectError as
    ``mAP.voc_ap.read_folders`` does."""
    ground_truth, detections = read_folders(*result_dirs(set_dir))
    return {name: unlabelled_faces(truth, detections[name], min_score, max_iou)
            for name, truth in ground_truth.items()}


def ranked(found: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> list[tuple[float, str, np.ndarray]]:
    """[(score, image name, box [4])] of every box of ``found`` ({image: (boxes, scores)}), highest first."""
    rows = [(float(score), name, box) for name, (boxes, scores) in found.items() for box, score in zip(boxes, scores)]
    return sorted(rows, key=lambda row: (-row[0], row[1]))


def face_tile(image_bgr: np.ndarray, box: np.ndarray, score: float) -> np.ndarray:
    """A TILE x TILE crop of ``image_bgr`` around ``box`` (pixels; one box side of context on each side), the
    box drawn in red and its score and side (pixels) written on it."""
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    x0, y0 = int(max(0, left - width)), int(max(0, top - height))
    x1 = int(min(image_bgr.shape[1], right + width))
    y1 = int(min(image_bgr.shape[0], bottom + height))
    tile = cv2.resize(image_bgr[y0:y1, x0:x1], (TILE, TILE), interpolation=cv2.INTER_AREA)
    scale_x, scale_y = TILE / max(1, x1 - x0), TILE / max(1, y1 - y0)
    cv2.rectangle(tile, (int((left - x0) * scale_x), int((top - y0) * scale_y)),
                  (int((right - x0) * scale_x), int((bottom - y0) * scale_y)), (0, 0, 255), 1)
    side = int(round(np.sqrt(width * height)))
    cv2.putText(tile, f"{score:.2f} {side}px", (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 0), 1)
    return tile


def contact_sheet(tiles: Sequence[np.ndarray]) -> np.ndarray:
    """One BGR image of ``tiles`` (each TILE x TILE x 3), TILES_PER_ROW to a row, the last row padded black."""
    tiles = list(tiles) or [np.zeros((TILE, TILE, 3), np.uint8)]
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % TILES_PER_ROW)
    rows = [np.hstack(tiles[start:start + TILES_PER_ROW]) for start in range(0, len(tiles), TILES_PER_ROW)]
    return np.vstack(rows)

