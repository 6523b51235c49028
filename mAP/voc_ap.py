"""PASCAL VOC average precision from folders of text files (the layout of the Cartucho/mAP tool).

    python mAP/compute_mAP.py [--gt_dir mAP/ground-truth] [--det_dir mAP/detection-results] [--iou 0.5]
                              [--output_dir mAP/map-results] [--no_plot]
    python mAP/compute_mAP.py --set_dirs OUT/Maskdata,OUT/ILC2021 [--output_dir OUT/map-results]

``<gt_dir>/NAME.txt`` holds one ground-truth box per line, ``<class> <left> <top> <right> <bottom>``,
optionally followed by ``difficult``. ``<det_dir>/NAME.txt`` holds one detection per line,
``<class> <score> <left> <top> <right> <bottom>``; a missing or empty file means the image has no
detections. Coordinates are pixels and continuous: a box's width is ``right - left`` (no VOC "+1").
Class names are single words. Prints a per-class table and the mAP, and writes ``results.txt`` and one
precision/recall plot per class (``<class>_pr.png``) under ``--output_dir``. ``--set_dirs`` scores several sets
(each folder holding ``ground-truth/`` and ``detection-results/``, see ``mAP/sets.py``) into
``<output_dir>/<set name>/`` and adds a summary table of them all, with their mean (``summary.txt``).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from components.atomic_io import save_figure_atomically, write_text_atomically
from components.box_utils import iou_matrix
from components.errors import ProjectError
from mAP.sets import MEAN_ROW_NAME, SUMMARY_FILE_NAME, named_set_dirs, result_dirs

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

NO_GROUND_TRUTH = "no ground truth"
ONLY_DIFFICULT = "only difficult ground truth"


@dataclass
class GroundTruth:
    """One image's ground truth: ``labels`` [G] class names, ``boxes`` [G, 4] pixels (left, top, right,
    bottom), ``difficult`` [G] bool."""
    labels: list = field(default_factory=list)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))

    @classmethod
    def from_class_ids(cls, class_ids: Sequence[int] | np.ndarray, boxes: np.ndarray,
                       difficult: Sequence[bool] | np.ndarray, names: Sequence[str]) -> GroundTruth:
        """Ground truth from class ids [G] into ``names`` (index 0 background), boxes [G, 4] and difficult [G].

        A negative id (an ignored box, ``components.config.IGNORE_ID``) becomes a difficult box of every
        class: a detection of any class on it counts neither as right nor as wrong."""
        labels: list[str] = []
        kept_boxes: list[np.ndarray] = []
        flags: list[bool] = []
        for class_id, box, is_difficult in zip(np.asarray(class_ids), np.asarray(boxes), np.asarray(difficult)):
            classes = names[1:] if class_id < 0 else [names[class_id]]
            labels.extend(classes)
            kept_boxes.extend([box] * len(classes))
            flags.extend([bool(is_difficult) or class_id < 0] * len(classes))
        return cls(labels, np.array(kept_boxes, np.float32).reshape(-1, 4), np.array(flags, bool))


@dataclass
class ScoredBoxes:
    """One image's detections as evaluation reads them: ``labels`` [D] class names, ``scores`` [D], ``boxes``
    [D, 4] pixels (the detector's own, with class ids, are ``runtime.postprocessing.Detections``)."""
    labels: list = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))


@dataclass
class ClassResult:
    """Evaluation of one class.

    ``precision`` and ``recall`` [T] follow the detections in descending score order, leaving out those
    that matched a difficult box. ``ap`` is None when the class is excluded from the mAP (``status`` says
    why: no ground truth, or only difficult ground truth). ``images``, ``scores``, ``boxes`` and
    ``true_positive`` [T] are those same detections, each with its outcome (what ``mAP/analyse_errors.py``
    sorts the false positives by).
    """
    name: str
    num_ground_truth: int           # non-difficult boxes (the positives)
    num_difficult: int
    num_detections: int             # all detections of the class, including those ignored
    true_positives: int
    false_positives: int
    ignored: int                    # detections that matched a difficult box
    precision: np.ndarray
    recall: np.ndarray
    ap: float | None
    status: str = "ok"
    images: list = field(default_factory=list)   # [T] image of each detection counted, in evaluation order
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))   # [T] their scores
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # [T, 4] pixels, corners
    true_positive: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))  # [T] TP (else FP)


@dataclass
class Evaluation:
    """Per-class results (sorted by class name) and the mAP over classes with ground truth (None if none)."""
    classes: dict
    mean_ap: float | None
    iou_threshold: float


def _read_lines(path):
    """The lines of a UTF-8 text file; raises ProjectError naming the file when it is not text."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().splitlines()
    except UnicodeDecodeError:
        raise ProjectError(f"{path}: not a UTF-8 text file") from None


def _parse_numbers(tokens, path, line_number):
    try:
        values = [float(token) for token in tokens]
    except ValueError:
        raise ProjectError(f"{path}: line {line_number}: expected numbers, got {' '.join(tokens)!r}") from None
    if not all(math.isfinite(value) for value in values):
        raise ProjectError(f"{path}: line {line_number}: non-finite number in {' '.join(tokens)!r}")
    return values


def _check_box(box, path, line_number):
    if box[2] < box[0] or box[3] < box[1]:
        raise ProjectError(f"{path}: line {line_number}: right < left or bottom < top in {box}")


def _records(path):
    """(line number, tokens, line) of each non-empty line of a results file."""
    for line_number, line in enumerate(_read_lines(path), start=1):
        if line.split():
            yield line_number, line.split(), line


def read_ground_truth_file(path: str) -> GroundTruth:
    """Parse one ground-truth file into a GroundTruth; raises ProjectError naming the file and line."""
    labels, boxes, difficult = [], [], []
    for line_number, tokens, line in _records(path):
        is_difficult = len(tokens) == 6 and tokens[5].lower() == "difficult"
        if len(tokens) != 5 and not is_difficult:
            raise ProjectError(f"{path}: line {line_number}: expected '<class> <left> <top> <right> "
                               f"<bottom> [difficult]', got {line.strip()!r}")
        box = _parse_numbers(tokens[1:5], path, line_number)
        _check_box(box, path, line_number)
        labels.append(tokens[0])
        boxes.append(box)
        difficult.append(is_difficult)
    return GroundTruth(labels, np.array(boxes, np.float32).reshape(-1, 4), np.array(difficult, bool))


def read_detection_file(path: str) -> ScoredBoxes:
    """Parse one detection file into ScoredBoxes; raises ProjectError naming the file and line."""
    labels, scores, boxes = [], [], []
    for line_number, tokens, line in _records(path):
        if len(tokens) != 6:
            raise ProjectError(f"{path}: line {line_number}: expected '<class> <score> <left> <top> "
                               f"<right> <bottom>', got {line.strip()!r}")
        values = _parse_numbers(tokens[1:], path, line_number)
        _check_box(values[1:], path, line_number)
        labels.append(tokens[0])
        scores.append(values[0])
        boxes.append(values[1:])
    return ScoredBoxes(labels, np.array(scores, np.float32), np.array(boxes, np.float32).reshape(-1, 4))


def _text_files(folder):
    return sorted(name[:-4] for name in os.listdir(folder) if name.endswith(".txt"))


def read_ground_truth_dir(gt_dir: str) -> dict[str, GroundTruth]:
    """{image name: GroundTruth} for every ``*.txt`` in ``gt_dir``.

    Raises ProjectError when the folder is missing, holds no ``.txt`` file, or a file is malformed.
    """
    if not os.path.isdir(gt_dir):
        raise ProjectError(f"{gt_dir}: ground-truth folder not found")
    names = _text_files(gt_dir)
    if not names:
        raise ProjectError(f"{gt_dir}: no ground-truth .txt files")
    return {name: read_ground_truth_file(os.path.join(gt_dir, f"{name}.txt")) for name in names}


def read_detection_dir(det_dir: str, image_names: Sequence[str]) -> dict[str, ScoredBoxes]:
    """{image name: ScoredBoxes} for each of ``image_names``; a missing file gives no detections.

    Raises ProjectError when the folder is missing, a file is malformed, or a detection file has no
    ground-truth counterpart among ``image_names`` (its detections could not be scored).
    """
    if not os.path.isdir(det_dir):
        raise ProjectError(f"{det_dir}: detection folder not found")
    known = set(image_names)
    for name in _text_files(det_dir):
        if name not in known:
            raise ProjectError(f"{os.path.join(det_dir, name)}.txt: no ground-truth file for this image")
    detections = {}
    for name in image_names:
        path = os.path.join(det_dir, f"{name}.txt")
        detections[name] = read_detection_file(path) if os.path.isfile(path) else ScoredBoxes()
    return detections


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point interpolated AP: area under the monotone (right-to-left max) precision envelope.

    Args:
        recall, precision: [T] values at each detection in descending score order (recall non-decreasing).
    Returns:
        AP as a float in [0, 1]; 0 for empty input.
    """
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if recall.size == 0:
        return 0.0
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * envelope[steps]))


def precision_recall(outcome: np.ndarray, num_positives: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall [T] (float64) after each of ``outcome`` [T] (1: true positive, 0: false positive, in
    descending score order) against ``num_positives`` faces (recall 0 without any)."""
    true_positives = np.cumsum(np.asarray(outcome, np.int64))
    precision = true_positives / np.arange(1, len(true_positives) + 1)
    recall = true_positives / num_positives if num_positives else np.zeros(len(true_positives))
    return precision.astype(np.float64), np.asarray(recall, np.float64)


def evaluate_class(class_name: str, ground_truth: Mapping[str, GroundTruth], detections: Mapping[str, ScoredBoxes],
                   iou_threshold: float = 0.5) -> ClassResult:
    """Match one class's detections to its ground truth and compute precision, recall and AP.

    ScoredBoxes of all images are taken in descending score order (stable for ties); each takes the
    not-yet-matched box of its class in its image with the highest IoU (``components.box_utils.iou_matrix``,
    one call per image). IoU >= ``iou_threshold`` with a normal box: true positive, and the box is matched;
    with a difficult box: ignored (neither TP nor FP; difficult boxes are never used up); otherwise (no box,
    every overlapping box already matched, or IoU too low): false positive. Unlike the VOC devkit, a
    detection whose best box is already taken may still claim the next-best free box above the threshold.
    Coordinates are continuous pixels (width = right - left, no "+1").

    Args:
        ground_truth: {image name: GroundTruth}.  detections: {image name: ScoredBoxes}.
    Returns:
        ClassResult; its ``ap`` is None if the class has no non-difficult ground truth.
    """
    gt_boxes, gt_difficult = {}, {}
    for image, truth in ground_truth.items():
        mask = np.array([label == class_name for label in truth.labels], bool)
        if mask.any():
            gt_boxes[image] = truth.boxes[mask]
            gt_difficult[image] = truth.difficult[mask]
    num_difficult = int(sum(flags.sum() for flags in gt_difficult.values()))
    num_positives = int(sum((~flags).sum() for flags in gt_difficult.values()))

    det_images, det_scores, det_rows, det_boxes = [], [], [], []
    overlaps = {}                                          # image -> [D_i, G_i] IoU
    for image, found in detections.items():
        mask = np.array([label == class_name for label in found.labels], bool)
        if not mask.any():
            continue
        boxes = found.boxes[mask]
        det_images.extend([image] * len(boxes))
        det_scores.append(found.scores[mask])
        det_rows.append(np.arange(len(boxes)))
        det_boxes.append(boxes)
        if image in gt_boxes:
            overlaps[image] = iou_matrix(boxes, gt_boxes[image]).numpy()
    num_detections = len(det_images)
    scores = np.concatenate(det_scores) if det_scores else np.zeros((0,), np.float32)
    rows = np.concatenate(det_rows) if det_rows else np.zeros((0,), int)
    all_boxes = np.concatenate(det_boxes).astype(np.float32) if det_boxes else np.zeros((0, 4), np.float32)
    order = np.argsort(-scores, kind="stable")

    matched = {image: np.zeros(len(boxes), bool) for image, boxes in gt_boxes.items()}
    # +1 TP / 0 FP, and the index of each such detection (ignored ones left out); outcome becomes an array
    outcome: Any = []
    counted: list[int] = []
    for index in order:
        image, row = det_images[index], rows[index]
        is_true = 0
        if image in overlaps:
            candidate_iou = np.where(matched[image], -1.0, overlaps[image][row])
            best = int(np.argmax(candidate_iou))
            if candidate_iou[best] >= iou_threshold:
                if gt_difficult[image][best]:
                    continue
                matched[image][best] = True
                is_true = 1
        outcome.append(is_true)
        counted.append(index)
    outcome = np.array(outcome, np.int64)
    precision, recall = precision_recall(outcome, num_positives)

    if num_positives:
        ap, status = average_precision(recall, precision), "ok"
    else:
        ap, status = None, (ONLY_DIFFICULT if num_difficult else NO_GROUND_TRUTH)
    return ClassResult(class_name, num_positives, num_difficult, num_detections,
                       int(outcome.sum()), int(len(outcome) - outcome.sum()), num_detections - len(outcome),
                       precision, recall, ap, status,
                       [det_images[index] for index in counted], scores[counted], all_boxes[counted],
                       outcome.astype(bool))


def evaluate_detections(ground_truth: Mapping[str, GroundTruth], detections: Mapping[str, ScoredBoxes],
                        iou_threshold: float = 0.5) -> Evaluation:
    """Evaluate every class found in ``ground_truth`` or ``detections`` (see :func:`evaluate_class`).

    Returns:
        Evaluation whose ``mean_ap`` is the mean AP over classes with non-difficult ground truth.
    """
    names = {label for truth in ground_truth.values() for label in truth.labels}
    names |= {label for found in detections.values() for label in found.labels}
    classes = {name: evaluate_class(name, ground_truth, detections, iou_threshold) for name in sorted(names)}
    scored = [result.ap for result in classes.values() if result.ap is not None]
    return Evaluation(classes, float(np.mean(scored)) if scored else None, iou_threshold)


def format_results(evaluation: Evaluation) -> list[str]:
    """The results table as text lines: class, GT count, detections, TP, FP, AP, then the mAP line."""
    width = max([5] + [len(name) for name in evaluation.classes])
    lines = [f"{'class':<{width}}  {'GT':>6}  {'detections':>10}  {'TP':>6}  {'FP':>6}  AP"]
    for name, result in evaluation.classes.items():
        ap_text = f"{100 * result.ap:.2f}%" if result.ap is not None else f"excluded ({result.status})"
        lines.append(f"{name:<{width}}  {result.num_ground_truth:>6}  {result.num_detections:>10}  "
                     f"{result.true_positives:>6}  {result.false_positives:>6}  {ap_text}")
    used = sum(result.ap is not None for result in evaluation.classes.values())
    map_text = f"{100 * evaluation.mean_ap:.2f}%" if evaluation.mean_ap is not None else "n/a"
    lines.append(f"mAP = {map_text}  (IoU >= {evaluation.iou_threshold:g}, {used} class{'' if used == 1 else 'es'})")
    return lines


def plot_precision_recall(result: ClassResult, path: str) -> None:
    """Save ``result``'s precision/recall curve (and its envelope) as a PNG at ``path``, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if result.recall.size:
        recall = np.concatenate([[0.0], result.recall])
        precision = np.concatenate([[result.precision[0]], result.precision])
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        axes.plot(recall, precision, color="tab:blue", label="precision")
        axes.fill_between(recall, envelope, step="pre", alpha=0.2, color="tab:blue", label="AP area")
        axes.legend(loc="lower left")
    axes.set_xlim(0, 1.0)
    axes.set_ylim(0, 1.05)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title(f"{result.name}: AP = {100 * result.ap:.2f}%")  # type: ignore[operator]   # plotted only with an AP
    axes.grid(alpha=0.3)
    save_figure_atomically(figure, path, format="png", dpi=100)


def write_results(evaluation: Evaluation, output_dir: str, plots: bool = True) -> list[str]:
    """Write ``results.txt`` (the table of :func:`format_results`) and, with ``plots``, one precision/recall
    PNG per class with an AP under ``output_dir``; returns the table lines."""
    lines = format_results(evaluation)
    os.makedirs(output_dir, exist_ok=True)
    write_text_atomically(os.path.join(output_dir, "results.txt"), "\n".join(lines) + "\n")
    if plots:
        for result in evaluation.classes.values():
            if result.ap is not None:
                plot_precision_recall(result, os.path.join(output_dir, plot_file_name(result.name)))
    return lines


def check_iou_threshold(iou_threshold: float) -> None:
    """Raise ProjectError (naming --iou) unless ``iou_threshold`` is in (0, 1]."""
    if not 0.0 < iou_threshold <= 1.0:
        raise ProjectError(f"--iou: must be in (0, 1], got {iou_threshold}")


def read_folders(gt_dir: str, det_dir: str) -> tuple[dict[str, GroundTruth], dict[str, ScoredBoxes]]:
    """(ground truth {image: GroundTruth} of ``gt_dir``, detections {image: ScoredBoxes} of ``det_dir`` for the
    same images); raises ProjectError naming the folder or file that cannot be used."""
    ground_truth = read_ground_truth_dir(gt_dir)
    return ground_truth, read_detection_dir(det_dir, list(ground_truth))


def evaluate_folders(gt_dir: str, det_dir: str, iou_threshold: float = 0.5) -> Evaluation:
    """Evaluation of the detection files of ``det_dir`` against the ground truth of ``gt_dir``.

    Raises ProjectError naming the folder or file that cannot be used, or when no file holds a non-difficult box.
    """
    check_iou_threshold(iou_threshold)
    evaluation = evaluate_detections(*read_folders(gt_dir, det_dir), iou_threshold)
    if evaluation.mean_ap is None:
        raise ProjectError(f"{gt_dir}: no non-difficult ground-truth box in any file")
    return evaluation


def evaluate_set_dirs(set_dirs: Sequence[str], iou_threshold: float = 0.5) -> dict[str, Evaluation]:
    """{set name: Evaluation} of several sets, each a folder holding ``ground-truth/`` and
    ``detection-results/`` (as mAP/detect.py writes them), named by the folder (made unique), in order.

    Every set is scored before any result is written; raises ProjectError naming the first folder that cannot be
    used (missing set folder, or a set without ground truth: see :func:`evaluate_folders`)."""
    return {name: evaluate_folders(*result_dirs(set_dir), iou_threshold)
            for name, set_dir in named_set_dirs(set_dirs).items()}


def _mean_or_none(values):
    values = [value for value in values if value is not None]
    return float(np.mean(values)) if values else None


def summary_rows(evaluations: Mapping[str, Evaluation],
                 ) -> tuple[list[str], list[tuple[str, dict[str, float | None], float | None]]]:
    """The summary of several sets' evaluations ({set name: Evaluation}): (class names, rows).

    The classes are those with an AP in at least one set, sorted. Each row is (name, {class: AP in [0, 1] or
    None where the set has no ground truth of it}, mAP); one per set, then the ``mean`` row: per class the mean
    AP over the sets that have one, and the mean of the sets' mAPs (not of the per-class means)."""
    classes = sorted({name for evaluation in evaluations.values()
                      for name, result in evaluation.classes.items() if result.ap is not None})
    rows = []
    for set_name, evaluation in evaluations.items():
        aps = {name: evaluation.classes[name].ap if name in evaluation.classes else None for name in classes}
        rows.append((set_name, aps, evaluation.mean_ap))
    mean_aps = {name: _mean_or_none([aps[name] for _, aps, _ in rows]) for name in classes}
    rows.append((MEAN_ROW_NAME, mean_aps, _mean_or_none([mean_ap for _, _, mean_ap in rows])))
    return classes, rows


def percent_cell(value: float | None) -> str:
    """A share in [0, 1] as a table cell in percent (``-``: None)."""
    return "-" if value is None else f"{100 * value:.2f}%"


def align_table(rows: Sequence[Sequence[str]], left_columns: int = 1) -> list[str]:
    """Text lines of ``rows`` (lists of cell strings, the header first): each column as wide as its widest cell,
    the first ``left_columns`` left-aligned, the others right-aligned, two spaces between columns."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(f"{cell:<{width}}" if column < left_columns else f"{cell:>{width}}"
                      for column, (cell, width) in enumerate(zip(row, widths))) for row in rows]


def format_summary(evaluations: Mapping[str, Evaluation]) -> list[str]:
    """The summary table of :func:`summary_rows` as text lines: a row per set and the mean row, AP per class
    and mAP in percent (``-``: the set has no ground truth of the class)."""
    classes, rows = summary_rows(evaluations)
    header = ["set"] + classes + ["mAP"]
    cells = [[name] + [percent_cell(aps[class_name]) for class_name in classes] + [percent_cell(mean_ap)]
             for name, aps, mean_ap in rows]
    iou_threshold = next(iter(evaluations.values())).iou_threshold
    count = len(evaluations)
    lines = [f"summary of {count} set{'' if count == 1 else 's'} (VOC AP, IoU >= {iou_threshold:g}); "
             f"{MEAN_ROW_NAME}: per class over the sets with ground truth of it, mAP over the sets' mAPs"]
    return lines + align_table([header] + cells)


def write_set_results(evaluations: Mapping[str, Evaluation], output_dir: str,
                      plots: bool = True) -> tuple[dict[str, list[str]], list[str]]:
    """Each set's results (:func:`write_results`) under ``<output_dir>/<set name>/``, then the table of
    :func:`format_summary` as ``<output_dir>/summary.txt``, atomically. Returns ({set name: table lines},
    summary lines)."""
    tables = {name: write_results(evaluation, os.path.join(output_dir, name), plots)
              for name, evaluation in evaluations.items()}
    summary = format_summary(evaluations)
    write_text_atomically(os.path.join(output_dir, SUMMARY_FILE_NAME), "\n".join(summary) + "\n")
    return tables, summary


def plot_file_name(class_name: str) -> str:
    """File name of a class's PR plot, with characters unsafe in paths replaced by '_'."""
    return re.sub(r"[^\w.-]", "_", class_name) + "_pr.png"

