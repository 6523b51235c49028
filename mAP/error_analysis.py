"""Detection error analysis by face size, from the folders compute_mAP.py reads (see its docstring for the formats).

    python mAP/analyse_errors.py [--gt_dir mAP/ground-truth] [--det_dir mAP/detection-results] [--score 0.3]
                                 [--size_bins 16,32,64,128] [--output_dir mAP/map-results] [--no_plot]
    python mAP/analyse_errors.py --set_dirs runs/map_val/Maskdata,runs/map_val/ILC2021 [--output_dir R]

Each non-difficult ground-truth box (a face) is put in a size bin by its side ``sqrt(w * h)`` in image pixels
(edges 16, 32, 64, 128: ``<16``, ``16-32``, ``32-64``, ``64-128``, ``>=128``; a side equal to an edge goes to
the bin above it). Each face is looked at on its own, by its best-overlapping detections in its image
(``components.box_utils.iou_matrix``): unlike compute_mAP's one-to-one matching, one detection may find two
faces it overlaps, so recall here is at least compute_mAP's recall at the same score (equal when no two faces
share a detection). Per set, class and size bin (and ``all`` sizes):

- ``recall``: share of faces with a same-class detection of score >= ``score`` at IoU >= 0.5;
- ``ceiling``: the same at any score kept in the detection files (the recall ceiling);
- ``wrong class``: share found (score >= ``score``, IoU >= 0.5) only by a detection of another class;
- ``loc. miss``: share whose best same-class detection (score >= ``score``) has IoU in [0.3, 0.5);
- ``h ratio`` / ``w ratio``: over the faces whose best same-class detection (score >= ``score``) has
  IoU >= 0.3, the median of detected height / ground-truth height, and of the widths (None: no such face).

Writes the tables to ``<output_dir>/errors.txt`` and, unless ``plots`` is off, the recall per size bin of each
class and set to ``<output_dir>/recall_by_size.png``; both atomically. ``<output_dir>/confusions.txt`` lists the
faces that a detection of another class finds with a high score (``review_score``, default 0.9) and none of
their own class at IoU >= 0.5 and score >= 0.5: a short list of images to look at, where the label or the model
is wrong. Below each set's table, a second one (``mAP/false_positives.py``) gives per class what each kind of
false positive (background, localisation, wrong class, duplicate) costs in AP, with a bar plot of it in
``<output_dir>/ap_by_false_positive.png``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from components.atomic_io import save_figure_atomically, write_text_atomically
from components.box_utils import iou_matrix
from components.errors import ProjectError
from mAP.false_positives import false_positive_rows, format_false_positives, plot_false_positives
from mAP.sets import named_set_dirs, result_dirs
from mAP.voc_ap import align_table, percent_cell, read_folders

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from mAP.voc_ap import GroundTruth, ScoredBoxes

DEFAULT_SIZE_BINS = (16, 32, 64, 128)   # bin edges, pixels of face side
DEFAULT_SCORE = 0.3
MATCH_IOU = 0.5                          # IoU of a found face
LOCALISATION_IOU = 0.3                   # IoU from which a same-class detection is a localisation miss
ALL_SIZES = "all"
ERRORS_FILE_NAME = "errors.txt"
PLOT_FILE_NAME = "recall_by_size.png"
FALSE_POSITIVE_PLOT_FILE_NAME = "ap_by_false_positive.png"
CONFUSIONS_FILE_NAME = "confusions.txt"
DEFAULT_REVIEW_SCORE = 0.9               # score of another class's detection that puts a face on the review list
OWN_CLASS_SCORE = 0.5                    # ... unless a detection of its own class reaches this score


@dataclass
class Confusion:
    """A face found with ``score`` only as ``detected`` (another class than its label ``labelled``); box in
    image pixels, corner form; ``own_score``: the best score of a same-class detection at IoU >= 0.5 (0: none)."""
    image: str
    box: tuple
    labelled: str
    detected: str
    score: float
    own_score: float


@dataclass
class FaceMatches:
    """The non-difficult faces of a set, [F] each: class ``labels``, ``sides`` (pixels), the best IoU of a
    same-class detection of score >= the threshold (``same_iou``) and at any score (``same_iou_any_score``),
    the best IoU of another class's detection of score >= the threshold (``other_iou``), and
    ``height_ratio`` / ``width_ratio`` of the best same-class detection of score >= the threshold to the face
    (NaN without one)."""
    labels: np.ndarray
    sides: np.ndarray
    same_iou: np.ndarray
    same_iou_any_score: np.ndarray
    other_iou: np.ndarray
    height_ratio: np.ndarray
    width_ratio: np.ndarray


@dataclass
class ErrorRow:
    """One class and size bin: face count and shares in [0, 1] (None without faces), median size ratios
    (None without a face matched at IoU >= 0.3)."""
    class_name: str
    size_bin: str
    faces: int
    recall: float | None
    recall_ceiling: float | None
    wrong_class: float | None
    localisation: float | None
    height_ratio: float | None
    width_ratio: float | None


@dataclass
class ErrorAnalysis:
    """The rows of one set (per class: each size bin, then ``all``), the score threshold, the bin edges, the
    faces confidently found only as another class (``confusions``, at ``review_score``), and what each kind of
    false positive costs per class (``false_positives``: [mAP.false_positives.FalsePositiveRow])."""
    rows: list
    score_threshold: float
    size_bins: tuple
    confusions: list
    review_score: float
    false_positives: list


def check_size_bins(edges: Iterable[float]) -> tuple[float, ...]:
    """``edges`` as a tuple of floats; raises ProjectError unless they are positive and increasing."""
    edges = tuple(float(edge) for edge in edges)
    if not edges or edges[0] <= 0 or any(later <= earlier for earlier, later in zip(edges, edges[1:])):
        raise ProjectError(f"--size_bins: expected positive increasing pixel sizes, got {','.join(map(str, edges))}")
    return edges


def size_bin_names(edges: Sequence[float]) -> list[str]:
    """Names of the bins of ``edges`` (pixels): (16, 32) -> ``['<16', '16-32', '>=32']``."""
    text = [f"{edge:g}" for edge in edges]
    return [f"<{text[0]}"] + [f"{low}-{high}" for low, high in zip(text, text[1:])] + [f">={text[-1]}"]


def size_bin_index(sides: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """[F] bin index of each face side (pixels); a side equal to an edge goes to the bin above it."""
    return np.searchsorted(np.asarray(edges, np.float64), np.asarray(sides, np.float64), side="right")


def _best(overlaps, mask):
    """[G] best IoU over the detections (rows of ``overlaps`` [D, G]) where ``mask`` [D, G]; its row (-1: none)."""
    masked = np.where(mask, overlaps, -1.0)
    if masked.shape[0] == 0:
        return np.zeros(masked.shape[1]), np.full(masked.shape[1], -1)
    rows = np.argmax(masked, axis=0)
    best = masked[rows, np.arange(masked.shape[1])]
    return np.maximum(best, 0.0), np.where(best >= 0.0, rows, -1)


def _face_overlaps(truth, found):
    """One image's non-difficult faces against its detections: (face boxes [G, 4], face labels [G], detection
    labels [D], IoU [D, G], same [D, G]: the detection is of the face's class)."""
    keep = ~truth.difficult
    boxes = truth.boxes[keep]
    labels = np.array(truth.labels, dtype=object)[keep] if len(truth.labels) else np.zeros(0, object)
    det_labels = np.array(found.labels, dtype=object)
    overlaps = iou_matrix(found.boxes, boxes).numpy() if len(boxes) and len(det_labels) else \
        np.zeros((len(det_labels), len(boxes)))
    return boxes, labels, det_labels, overlaps, det_labels[:, None] == labels[None, :]


def match_faces(ground_truth: Mapping[str, GroundTruth], detections: Mapping[str, ScoredBoxes],
                score_threshold: float = DEFAULT_SCORE) -> FaceMatches:
    """FaceMatches of every non-difficult box of ``ground_truth`` ({image: GroundTruth}) against
    ``detections`` ({image: ScoredBoxes}, as compute_mAP reads them), in image then file order."""
    parts: dict[str, list[np.ndarray]] = {key: [] for key in FaceMatches.__dataclass_fields__}
    for image, truth in ground_truth.items():
        found = detections[image]
        boxes, labels, det_labels, overlaps, same = _face_overlaps(truth, found)
        confident = (found.scores >= score_threshold)[:, None]
        same_iou, rows = _best(overlaps, same & confident)
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        det_boxes = found.boxes[np.maximum(rows, 0)] if len(det_labels) else np.zeros((len(boxes), 4))
        with np.errstate(divide="ignore", invalid="ignore"):
            height_ratio = np.where(rows >= 0, (det_boxes[:, 3] - det_boxes[:, 1]) / heights, np.nan)
            width_ratio = np.where(rows >= 0, (det_boxes[:, 2] - det_boxes[:, 0]) / widths, np.nan)
        parts["labels"].append(labels)
        parts["sides"].append(np.sqrt(np.maximum(widths, 0.0) * np.maximum(heights, 0.0)))
        parts["same_iou"].append(same_iou)
        parts["same_iou_any_score"].append(_best(overlaps, same)[0])
        parts["other_iou"].append(_best(overlaps, ~same & confident)[0])
        parts["height_ratio"].append(height_ratio)
        parts["width_ratio"].append(width_ratio)
    return FaceMatches(**{key: np.concatenate(values) if values else np.zeros(0) for key, values in parts.items()})


def find_confusions(ground_truth: Mapping[str, GroundTruth], detections: Mapping[str, ScoredBoxes],
                    review_score: float = DEFAULT_REVIEW_SCORE) -> list[Confusion]:
    """[Confusion] of ``detections`` against ``ground_truth`` (non-difficult faces), highest score first."""
    if not 0.0 <= review_score <= 1.0:
        raise ProjectError(f"--review_score: must be in [0, 1], got {review_score}")
    found_confusions = []
    for image, truth in ground_truth.items():
        found = detections[image]
        boxes, labels, det_labels, overlaps, same = _face_overlaps(truth, found)
        if not overlaps.size:
            continue
        scores = found.scores[:, None]
        own = np.where((overlaps >= MATCH_IOU) & same, scores, 0.0).max(axis=0)   # [G]
        other = np.where((overlaps >= MATCH_IOU) & ~same, scores, 0.0)
        for face in np.flatnonzero((other.max(axis=0) >= review_score) & (own < OWN_CLASS_SCORE)):
            row = int(np.argmax(other[:, face]))
            found_confusions.append(Confusion(image, tuple(float(v) for v in boxes[face]), labels[face],
                                              det_labels[row], float(found.scores[row]), float(own[face])))
    return sorted(found_confusions, key=lambda item: -item.score)


def format_confusions(name: str, confusions: Sequence[Confusion], review_score: float) -> list[str]:
    """Text lines of one set's confusions: a title naming the set, then one line per face."""
    lines = [f"{name}: {len(confusions)} faces found with a score >= {review_score:g} only as another class "
             f"(none of their own class at IoU >= {MATCH_IOU:g} and score >= {OWN_CLASS_SCORE:g}): check the label"]
    lines += [f"{item.image} labelled {item.labelled} found as {item.detected} {item.score:.3f} "
              f"(own class {item.own_score:.3f}) box " + " ".join(f"{value:g}" for value in item.box)
              for item in confusions]
    return lines


def _share(flags):
    return float(np.mean(flags)) if flags.size else None


def _median(values):
    return float(np.median(values)) if values.size else None


def error_row(class_name: str, size_bin: str, matches: FaceMatches, selected: np.ndarray) -> ErrorRow:
    """The ErrorRow of the faces of ``matches`` where ``selected`` [F] (bool)."""
    same_iou = matches.same_iou[selected]
    matched = same_iou >= LOCALISATION_IOU
    return ErrorRow(class_name, size_bin, int(selected.sum()), _share(same_iou >= MATCH_IOU),
                    _share(matches.same_iou_any_score[selected] >= MATCH_IOU),
                    _share((same_iou < MATCH_IOU) & (matches.other_iou[selected] >= MATCH_IOU)),
                    _share(matched & (same_iou < MATCH_IOU)),
                    _median(matches.height_ratio[selected][matched]), _median(matches.width_ratio[selected][matched]))


def analyse_errors(ground_truth: Mapping[str, GroundTruth], detections: Mapping[str, ScoredBoxes],
                   score_threshold: float = DEFAULT_SCORE, size_bins: Sequence[float] = DEFAULT_SIZE_BINS,
                   review_score: float = DEFAULT_REVIEW_SCORE) -> ErrorAnalysis:
    """ErrorAnalysis of ``detections`` against ``ground_truth`` (see the module docstring): per class of the
    non-difficult ground truth (sorted), a row per size bin of ``size_bins`` (edges, pixels) and one for all."""
    if not 0.0 <= score_threshold <= 1.0:
        raise ProjectError(f"--score: must be in [0, 1], got {score_threshold}")
    size_bins = check_size_bins(size_bins)
    matches = match_faces(ground_truth, detections, score_threshold)
    bins = size_bin_index(matches.sides, size_bins)
    rows = []
    for class_name in sorted(set(matches.labels)):
        of_class = matches.labels == class_name
        for index, name in enumerate(size_bin_names(size_bins)):
            rows.append(error_row(class_name, name, matches, of_class & (bins == index)))
        rows.append(error_row(class_name, ALL_SIZES, matches, of_class))
    return ErrorAnalysis(rows, score_threshold, size_bins, find_confusions(ground_truth, detections, review_score),
                         review_score, false_positive_rows(ground_truth, detections, score_threshold))


def analyse_folders(gt_dir: str, det_dir: str, score_threshold: float = DEFAULT_SCORE,
                    size_bins: Sequence[float] = DEFAULT_SIZE_BINS,
                    review_score: float = DEFAULT_REVIEW_SCORE) -> ErrorAnalysis:
    """ErrorAnalysis of the detection files of ``det_dir`` against the ground truth of ``gt_dir``.

    Raises ProjectError naming the folder or file that cannot be used, or when no file holds a non-difficult box.
    """
    analysis = analyse_errors(*read_folders(gt_dir, det_dir), score_threshold, size_bins, review_score)
    if not analysis.rows:
        raise ProjectError(f"{gt_dir}: no non-difficult ground-truth box in any file")
    return analysis


def analyse_set_dirs(set_dirs: Sequence[str], score_threshold: float = DEFAULT_SCORE,
                     size_bins: Sequence[float] = DEFAULT_SIZE_BINS,
                     review_score: float = DEFAULT_REVIEW_SCORE) -> dict[str, ErrorAnalysis]:
    """{set name: ErrorAnalysis} of several sets, each a folder holding ``ground-truth/`` and
    ``detection-results/``, named by the folder (made unique), in order. Every set is analysed before
    anything is written; raises ProjectError naming the first folder or file that cannot be used."""
    return {name: analyse_folders(*result_dirs(set_dir), score_threshold, size_bins, review_score)
            for name, set_dir in named_set_dirs(set_dirs).items()}


def _ratio(value):
    return "-" if value is None else f"{value:.2f}"


def format_errors(name: str, analysis: ErrorAnalysis) -> list[str]:
    """The table of one set's ErrorAnalysis as text lines: a title line naming the set, the header, a row
    per class and size bin (shares in percent, ``-``: no face)."""
    header = ["class", "size", "faces", "recall", "ceiling", "wrong class", "loc. miss", "h ratio", "w ratio"]
    cells = [[row.class_name, row.size_bin, str(row.faces), percent_cell(row.recall),
              percent_cell(row.recall_ceiling), percent_cell(row.wrong_class), percent_cell(row.localisation),
              _ratio(row.height_ratio), _ratio(row.width_ratio)] for row in analysis.rows]
    lines = [f"{name}: errors by face side sqrt(w*h) in px (IoU >= {MATCH_IOU:g}, score >= "
             f"{analysis.score_threshold:g}; ceiling: any score; loc. miss: IoU in [{LOCALISATION_IOU:g}, "
             f"{MATCH_IOU:g}); ratios: median detected / true height and width at IoU >= {LOCALISATION_IOU:g})"]
    return lines + align_table([header] + cells, left_columns=2)


def plot_recall_by_size(analyses: Mapping[str, ErrorAnalysis], path: str) -> None:
    """Save the recall (solid) and the recall ceiling (dashed) per size bin of each class, a panel per set of
    ``analyses`` ({set name: ErrorAnalysis}), as a PNG at ``path``, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5 * len(analyses), 4.5))
    FigureCanvasAgg(figure)
    for panel, (name, analysis) in enumerate(analyses.items(), start=1):
        axes = figure.add_subplot(1, len(analyses), panel)
        bin_names = size_bin_names(analysis.size_bins)
        classes = sorted({row.class_name for row in analysis.rows})
        for number, class_name in enumerate(classes):
            rows = {row.size_bin: row for row in analysis.rows if row.class_name == class_name}
            color = f"C{number}"
            for key, style, label in (("recall", "-o", f"{class_name} (score >= {analysis.score_threshold:g})"),
                                      ("recall_ceiling", "--", f"{class_name} (any score)")):
                values = [np.nan if getattr(rows[size], key) is None else getattr(rows[size], key)
                          for size in bin_names]
                axes.plot(range(len(bin_names)), values, style, color=color, label=label)
        axes.set_xticks(range(len(bin_names)), bin_names)
        axes.set_ylim(0, 1.05)
        axes.set_xlabel("face side sqrt(w*h), px")
        axes.set_ylabel(f"recall (IoU >= {MATCH_IOU:g})")
        axes.set_title(name)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    save_figure_atomically(figure, path, format="png", dpi=100)


def write_errors(analyses: Mapping[str, ErrorAnalysis], output_dir: str, plots: bool = True) -> str:
    """Write the tables of ``analyses`` ({set name: ErrorAnalysis}) to ``<output_dir>/errors.txt`` (per set,
    errors by size, then false positives by kind; a blank line between tables), their confusions to
    ``<output_dir>/confusions.txt`` and, with ``plots``, ``<output_dir>/recall_by_size.png`` and
    ``<output_dir>/ap_by_false_positive.png``; returns the text of errors.txt."""
    text = "\n\n".join("\n".join(format_errors(name, analysis)) + "\n\n" + "\n".join(
        format_false_positives(name, analysis.false_positives, analysis.score_threshold))
        for name, analysis in analyses.items())
    confusions = "\n\n".join("\n".join(format_confusions(name, analysis.confusions, analysis.review_score))
                              for name, analysis in analyses.items())
    os.makedirs(output_dir, exist_ok=True)
    write_text_atomically(os.path.join(output_dir, ERRORS_FILE_NAME), text + "\n")
    write_text_atomically(os.path.join(output_dir, CONFUSIONS_FILE_NAME), confusions + "\n")
    if plots:
        plot_recall_by_size(analyses, os.path.join(output_dir, PLOT_FILE_NAME))
        plot_false_positives({name: analysis.false_positives for name, analysis in analyses.items()},
                             os.path.join(output_dir, FALSE_POSITIVE_PLOT_FILE_NAME))
    return text

