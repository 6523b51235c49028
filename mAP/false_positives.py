"""What each kind of false positive costs in AP: a TIDE-style oracle (Bolya et al. 2020) on compute_mAP's matching.

Every false positive of a class (``mAP.voc_ap.evaluate_class``: a detection that found no free face of its
class at IoU >= 0.5) gets one kind, by its overlaps with the image's non-difficult faces, in this order:

- ``duplicate``: IoU >= 0.5 with a face of its class (that face was found by a higher-scoring detection);
- ``wrong class``: IoU >= 0.5 with a face of another class;
- ``localisation``: IoU in [0.1, 0.5) with a face of its class;
- ``background``: none of these (IoU < 0.1 with every face of its class). On a data set whose annotation
  leaves faces out, this is also where a correct detection of an unlabelled face lands.

For each kind, the AP with those false positives taken out (everything else as it was) says what that kind
costs; the count of each kind at a score threshold says how many there are where they matter.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from components.box_utils import iou_matrix
from mAP.voc_ap import align_table, average_precision, evaluate_class, precision_recall

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from mAP.voc_ap import ClassResult, GroundTruth, ScoredBoxes

FALSE_POSITIVE_KINDS = ("background", "localisation", "wrong class", "duplicate")
MATCH_IOU = 0.5          # a face found (compute_mAP's threshold)
BACKGROUND_IOU = 0.1     # below this with every face of its class, a false positive is background


@dataclass
class FalsePositiveRow:
    """One class of one set: its AP, and per kind of ``FALSE_POSITIVE_KINDS`` the number of its false positives
    with a score >= the threshold (``counts``) and the AP without all of them (``ap_without``)."""
    class_name: str
    ap: float
    counts: dict
    ap_without: dict


def _kinds_in_image(boxes, class_name, truth):
    """Kinds of false positives ``boxes`` [K, 4] (pixels) of ``class_name`` in one image of ``truth``."""
    kinds = np.full(len(boxes), "background", dtype=object)
    if truth is None or not (~truth.difficult).any():
        return kinds
    keep = ~truth.difficult
    same = np.array(truth.labels, dtype=object)[keep] == class_name
    overlaps = iou_matrix(boxes, truth.boxes[keep]).numpy()                    # [K, G]
    best_same = np.where(same, overlaps, 0.0).max(axis=1)
    best_other = np.where(~same, overlaps, 0.0).max(axis=1)
    kinds[best_same >= BACKGROUND_IOU] = "localisation"
    kinds[best_other >= MATCH_IOU] = "wrong class"
    kinds[best_same >= MATCH_IOU] = "duplicate"
    return kinds


def false_positive_kinds(result: ClassResult, ground_truth: Mapping[str, GroundTruth]) -> np.ndarray:
    """[T] kind of each detection of ``result`` (a ClassResult, evaluation order): one of
    ``FALSE_POSITIVE_KINDS`` for a false positive, ``""`` for a true positive. ``ground_truth``: {image:
    GroundTruth} it was evaluated on."""
    kinds = np.full(len(result.true_positive), "", dtype=object)
    wrong = np.flatnonzero(~result.true_positive)
    images = np.array(result.images, dtype=object)[wrong] if len(wrong) else np.zeros(0, object)
    for image in set(images):
        rows = wrong[images == image]
        kinds[rows] = _kinds_in_image(result.boxes[rows], result.name, ground_truth.get(image))
    return kinds


def ap_without(result: ClassResult, drop: np.ndarray) -> float:
    """VOC AP of ``result`` (a ClassResult with ground truth) with its detections where ``drop`` [T] left out."""
    return average_precision(*precision_recall(result.true_positive[~np.asarray(drop, bool)],
                                               result.num_ground_truth)[::-1])


def false_positive_rows(ground_truth: Mapping[str, GroundTruth], detections: Mapping[str, ScoredBoxes],
                        score_threshold: float) -> list[FalsePositiveRow]:
    """[FalsePositiveRow] per class with non-difficult ground truth (sorted by name), ``detections`` ({image:
    ScoredBoxes}) against ``ground_truth`` ({image: GroundTruth})."""
    names = sorted({label for truth in ground_truth.values()
                    for label, difficult in zip(truth.labels, truth.difficult) if not difficult})
    rows = []
    for class_name in names:
        result = evaluate_class(class_name, ground_truth, detections, MATCH_IOU)
        kinds = false_positive_kinds(result, ground_truth)
        confident = result.scores >= score_threshold
        rows.append(FalsePositiveRow(class_name, result.ap,  # type: ignore[arg-type]   # classes with ground truth
                                     {kind: int(((kinds == kind) & confident).sum()) for kind in FALSE_POSITIVE_KINDS},
                                     {kind: ap_without(result, kinds == kind) for kind in FALSE_POSITIVE_KINDS}))
    return rows


def format_false_positives(name: str, rows: Sequence[FalsePositiveRow], score_threshold: float) -> list[str]:
    """Text lines of one set's FalsePositiveRows: a title, the header, a row per class; each kind's cell is
    the AP gained without that kind (points) and, in brackets, its count at ``score_threshold``."""
    header = ["class", "AP"] + list(FALSE_POSITIVE_KINDS)
    cells = [[row.class_name, f"{100 * row.ap:.2f}%"]
             + [f"+{100 * (row.ap_without[kind] - row.ap):.2f} ({row.counts[kind]})" for kind in FALSE_POSITIVE_KINDS]
             for row in rows]
    title = (f"{name}: AP gained without each kind of false positive, in points (their number at score >= "
             f"{score_threshold:g}); background: IoU < {BACKGROUND_IOU:g} with every face of its class, "
             f"localisation: {BACKGROUND_IOU:g}-{MATCH_IOU:g}, wrong class: >= {MATCH_IOU:g} with a face of another "
             f"class, duplicate: >= {MATCH_IOU:g} with a face already found")
    return [title] + align_table([header] + cells, left_columns=1)


def plot_false_positives(rows_by_set: Mapping[str, Sequence[FalsePositiveRow]], path: str) -> None:
    """Save the AP gained without each kind of false positive, bars per class, a panel per set of
    ``rows_by_set`` ({set name: [FalsePositiveRow]}), as a PNG at ``path``, atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from components.atomic_io import save_figure_atomically

    figure = Figure(figsize=(5.5 * len(rows_by_set), 4.0))
    FigureCanvasAgg(figure)
    for panel, (name, rows) in enumerate(rows_by_set.items(), start=1):
        axes = figure.add_subplot(1, len(rows_by_set), panel)
        width = 0.8 / max(len(rows), 1)
        for number, row in enumerate(rows):
            gains = [100 * (row.ap_without[kind] - row.ap) for kind in FALSE_POSITIVE_KINDS]
            axes.bar(np.arange(len(FALSE_POSITIVE_KINDS)) + (number - (len(rows) - 1) / 2) * width, gains, width,
                     color=f"C{number}", label=f"{row.class_name} (AP {100 * row.ap:.1f})")
        axes.set_xticks(range(len(FALSE_POSITIVE_KINDS)), FALSE_POSITIVE_KINDS)
        axes.set_ylabel("AP gained without them, points")
        axes.set_title(name)
        axes.grid(alpha=0.3, axis="y")
        axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    save_figure_atomically(figure, path, format="png", dpi=100)
