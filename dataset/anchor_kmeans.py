"""Anchor sizes for the SSD heads by k-means on the training boxes, with distance 1 - IoU.

    python components/kmeans.py --dataset_path Maskdata/ [--split train] [--k 10]
                                [--output assets/kmeans_anchors.png] [--<config key> VALUE ...]

Boxes are compared by width and height only (as if centred on the same point) and measured in pixels at
the network input size, because the network resizes the whole image to ``input_size`` = (h, w). Prints the
anchors grouped per head in the format of ``min_sizes`` in components/config.py ((w, h) pairs, which
components/prior_box.py accepts), the mean best IoU of those anchors and of the config's default anchors,
and writes a scatter plot of the box sizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from components.atomic_io import save_figure_atomically
from components.box_utils import iou_matrix
from components.errors import ProjectError
from components.images import ImageError, read_image_bgr
from components.prior_box import priors_per_cell
from dataset.label_counts import report_split_labels
from dataset.voc import VOCError, clip_boxes, load_item, read_split

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from components.config import Settings


def _centred_corners(wh):
    """[N, 2] (w, h) -> [N, 4] corner-form boxes centred on the origin."""
    return np.concatenate([-wh / 2, wh / 2], axis=1)


def wh_iou(boxes_wh: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """IoU of boxes and clusters compared by size alone (both centred on the same point).

    Args:
        boxes_wh: [N, 2] (w, h).  clusters: [K, 2] (w, h), same units.
    Returns:
        [N, K] float64 IoU, computed by ``components.box_utils.iou_matrix``.
    """
    boxes_wh = np.asarray(boxes_wh, np.float64).reshape(-1, 2)
    clusters = np.asarray(clusters, np.float64).reshape(-1, 2)
    return iou_matrix(_centred_corners(boxes_wh), _centred_corners(clusters)).numpy().astype(np.float64)


def _check_boxes(boxes_wh, k):
    boxes_wh = np.asarray(boxes_wh, np.float64)
    if boxes_wh.ndim != 2 or boxes_wh.shape[1] != 2:
        raise ProjectError(f"boxes_wh must have shape [N, 2], got {boxes_wh.shape}")
    if not np.all(np.isfinite(boxes_wh)) or np.any(boxes_wh <= 0):
        raise ProjectError("boxes_wh must hold positive, finite widths and heights")
    if k < 1:
        raise ProjectError(f"k must be at least 1, got {k}")
    distinct = len(np.unique(boxes_wh, axis=0))
    if distinct < k:
        raise ProjectError(f"k-means needs at least k={k} distinct box sizes, got {distinct}")
    return boxes_wh


def _sorted_by_area(clusters):
    return clusters[np.argsort(clusters[:, 0] * clusters[:, 1], kind="stable")]


def _kmeans_once(boxes_wh, k, rng, max_iter):
    """One k-means++ seeded run; returns [k, 2] clusters (unsorted)."""
    clusters = [boxes_wh[rng.integers(len(boxes_wh))]]
    for _ in range(1, k):
        nearest_distance = 1.0 - wh_iou(boxes_wh, np.array(clusters)).max(axis=1)
        weights = nearest_distance ** 2
        if weights.sum() <= 0:
            raise ProjectError(f"box sizes too similar to seed k={k} different clusters")
        clusters.append(boxes_wh[rng.choice(len(boxes_wh), p=weights / weights.sum())])
    clusters = np.array(clusters)

    assignment = None
    for _ in range(max_iter):
        distance = 1.0 - wh_iou(boxes_wh, clusters)                     # [N, k]
        new_assignment = np.argmin(distance, axis=1)
        if assignment is not None and np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        nearest_distance = distance[np.arange(len(boxes_wh)), assignment]
        for cluster in range(k):
            members = boxes_wh[assignment == cluster]
            if len(members):
                clusters[cluster] = np.median(members, axis=0)
            else:
                farthest = int(np.argmax(nearest_distance))
                clusters[cluster] = boxes_wh[farthest]
                nearest_distance[farthest] = 0.0
    return clusters


def kmeans_anchors(boxes_wh: np.ndarray, k: int, seed: int = 0, max_iter: int = 300, restarts: int = 5) -> np.ndarray:
    """Cluster box sizes with k-means under the distance 1 - IoU.

    Each of ``restarts`` runs starts from a k-means++ initialisation and updates clusters to the median of
    their boxes; a cluster left empty is moved to the box farthest from its nearest cluster. A run stops when
    the assignment no longer changes or after ``max_iter`` updates; the run with the best :func:`mean_iou`
    is kept (single runs often stop in a poor local optimum).

    Args:
        boxes_wh: [N, 2] positive (w, h).  k: number of clusters.  seed: seeds all initialisations.
    Returns:
        [k, 2] float64 cluster (w, h), sorted by area (smallest first).
    Raises:
        ValueError when the boxes are not [N, 2] positive sizes; ProjectError when fewer than ``k`` sizes are distinct.
    """
    boxes_wh = _check_boxes(boxes_wh, k)
    rng = np.random.default_rng(seed)
    runs = [_kmeans_once(boxes_wh, k, rng, max_iter) for _ in range(max(restarts, 1))]
    best = max(runs, key=lambda clusters: mean_iou(boxes_wh, clusters))
    return _sorted_by_area(best)


def mean_iou(boxes_wh: np.ndarray, anchors: np.ndarray) -> float:
    """Mean over boxes of the best size-only IoU with any anchor ([N, 2] and [K, 2] (w, h)) -> float."""
    return float(wh_iou(boxes_wh, anchors).max(axis=1).mean())


def load_box_sizes(dataset_path: str, split: str, input_size: Sequence[int], label_aliases: Mapping[str, str],
                   skipped: list[str] | None = None, progress: bool = False) -> np.ndarray:
    """Sizes of all boxes of a VOC split, in pixels at the network input.

    Each box is clipped to its image (size from the xml, or read from the image when the xml has none)
    and scaled by input_w / image_w and input_h / image_h, as the network resizes the whole image.
    Only the xml files are needed: an image is read (and must be readable) only when its xml has no size,
    so an xml whose image is missing or unreadable still counts here, unlike in voc_to_tfrecord.py.

    Args:
        input_size: (h, w) of the network input.  label_aliases: as ``settings.data.label_aliases``.
        skipped: optional list; one reason is appended per image or object that could not be used.
        progress: show a tqdm bar on stderr.
    Returns:
        [N, 2] float64 (w, h). Raises VOCError when the split file cannot be read.
    """
    input_h, input_w = input_size
    skipped = [] if skipped is None else skipped
    sizes = []
    for name in tqdm(read_split(dataset_path, split), desc=f"reading {split}", unit="xml", disable=not progress):
        try:
            item = load_item(dataset_path, name, label_aliases, read_image=False, require_image=False)
            annotation = item.annotation
            width, height = annotation.width, annotation.height
            if not (width and height):
                if item.image_path is None:
                    raise VOCError(f"{item.xml_path}: no <size> and no image in JPEGImages to read it from")
                height, width = read_image_bgr(item.image_path).shape[:2]
            clip_boxes(annotation, width, height)
        except (VOCError, ImageError) as error:
            skipped.append(str(error))
            continue
        skipped.extend(item.skipped())
        boxes = annotation.boxes.astype(np.float64)
        sizes.append(np.stack([(boxes[:, 2] - boxes[:, 0]) * input_w / width,
                               (boxes[:, 3] - boxes[:, 1]) * input_h / height], axis=1))
    return np.concatenate(sizes, axis=0) if sizes else np.zeros((0, 2), np.float64)


def assign_to_heads(anchors: np.ndarray, steps: Sequence[int] = (8, 16, 32, 64),
                    counts: Sequence[int] = (3, 2, 2, 3)) -> list[list[tuple[float, float]]]:
    """Split anchors into the heads' groups, smallest anchors to the smallest stride.

    Args:
        anchors: [K, 2] (w, h) with K = sum(counts).  steps: head strides, ascending.  counts: anchors per head.
    Returns:
        list (one per head, in ``steps`` order) of lists of (w, h) float tuples, each sorted by area.
    """
    anchors = _sorted_by_area(np.asarray(anchors, np.float64).reshape(-1, 2))
    if len(steps) != len(counts):
        raise ProjectError(f"{len(steps)} steps but {len(counts)} anchor counts")
    if list(steps) != sorted(steps):
        raise ProjectError(f"steps must be ascending, got {list(steps)}")
    if sum(counts) != len(anchors):
        raise ProjectError(f"counts {list(counts)} need {sum(counts)} anchors, got {len(anchors)}")
    bounds = np.cumsum([0] + list(counts))
    return [[(float(w), float(h)) for w, h in anchors[start:end]] for start, end in zip(bounds[:-1], bounds[1:])]


def default_anchor_wh(min_sizes: Sequence[Sequence[Any]]) -> np.ndarray:
    """Config ``min_sizes`` (per head: side lengths or (w, h) pairs) -> [K, 2] float64 (w, h)."""
    return np.array([size if np.ndim(size) else (size, size) for head in min_sizes for size in head],
                    np.float64).reshape(-1, 2)


def format_min_sizes(groups: Sequence[Sequence[tuple[float, float]]], decimals: int = 1) -> str:
    """Anchor groups as a Python literal in the config's ``min_sizes`` format, e.g. [[(9.5, 11.0), ...], ...]."""
    def pair(w, h) -> str:
        return f"({round(w, decimals):g}, {round(h, decimals):g})"
    return "[" + ", ".join("[" + ", ".join(pair(w, h) for w, h in group) + "]" for group in groups) + "]"


def plot_anchors(boxes_wh: np.ndarray, anchors: np.ndarray, default_anchors: np.ndarray, path: str,
                 title: str = "") -> None:
    """Scatter box w against h coloured by nearest anchor, with the anchors and defaults marked; PNG, atomic."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 7))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    assignment = np.argmax(wh_iou(boxes_wh, anchors), axis=1)
    axes.scatter(boxes_wh[:, 0], boxes_wh[:, 1], c=assignment, cmap="tab10", s=4, alpha=0.4,
                 vmin=0, vmax=max(len(anchors) - 1, 1), rasterized=True)
    axes.scatter(anchors[:, 0], anchors[:, 1], marker="X", s=140, c="black", edgecolors="white",
                 label="k-means anchors")
    axes.scatter(default_anchors[:, 0], default_anchors[:, 1], marker="s", s=90, facecolors="none",
                 edgecolors="red", linewidths=1.5, label="config min_sizes")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("box width (pixels at network input)")
    axes.set_ylabel("box height (pixels at network input)")
    axes.set_title(title)
    axes.grid(alpha=0.3, which="both")
    axes.legend(loc="upper left")
    save_figure_atomically(figure, path, format="png", dpi=100)


@dataclass
class AnchorStudy:
    """k-means anchors of one split against the configured ones (sizes in pixels at the network input)."""
    boxes_wh: np.ndarray          # [N, 2] the split's boxes
    anchors: np.ndarray           # [k, 2] k-means anchors, smallest first
    default_anchors: np.ndarray   # [K, 2] the config's min_sizes
    groups: list | None           # anchors per head (min_sizes format) when k is the config's anchor count
    kmeans_iou: float
    default_iou: float
    held_out: tuple | None = None   # (boxes, mean IoU k-means, mean IoU config) on the eval split


def box_sizes_of_sources(sources: Sequence[tuple[str, str]], settings: Settings, skipped: list[str] | None = None,
                         progress: bool = False, skip_unknown: bool = False, fix_file: str | None = None,
                         log: Callable[[str], None] | None = None) -> np.ndarray:
    """Box sizes [N, 2] of all ``sources`` ([(VOC folder, split)]), each after the label check
    (``dataset.label_counts.report_split_labels``: the table is logged; VOCError on unknown labels unless
    ``skip_unknown``), at ``settings.model.input_size`` with ``settings.data.label_aliases``. Raises VOCError when
    a source has no usable boxes."""
    aliases, sizes = settings.data.label_aliases, []
    for dataset_path, split in sources:
        report_split_labels(dataset_path, split, aliases, skip_unknown, fix_file, log)
        sizes.append(load_box_sizes(dataset_path, split, settings.model.input_size, aliases, skipped, progress))
        if len(sizes[-1]) == 0:
            raise VOCError(f"{dataset_path}: split {split!r} has no usable boxes (no object with a known label "
                           "and a non-empty box; see the table above)")
    return np.concatenate(sizes, axis=0)


def study_anchors(sources: Sequence[tuple[str, str]], settings: Settings, k: int | None = None,
                  eval_sources: Sequence[tuple[str, str]] = (), skipped: list[str] | None = None,
                  progress: bool = False, **label_check: Any) -> AnchorStudy:
    """k-means anchors of the boxes of ``sources`` ([(VOC folder, split)]; ``k`` default: the config's anchors
    per cell summed), scored with the configured ones on them and, with ``eval_sources``, on boxes k-means did
    not see (the model spec's ``min_sizes`` and ``steps``, k-means seeded with ``settings.train.seed``).
    ``label_check``: ``skip_unknown``, ``fix_file``, ``log`` of :func:`box_sizes_of_sources`.

    Raises VOCError when a split has no usable boxes or holds unknown labels.
    """
    spec = settings.model
    counts = priors_per_cell(spec.min_sizes)
    k = sum(counts) if k is None else k
    boxes_wh = box_sizes_of_sources(sources, settings, skipped, progress, **label_check)
    anchors = kmeans_anchors(boxes_wh, k, seed=settings.train.seed)
    default_anchors = default_anchor_wh(spec.min_sizes)
    groups = assign_to_heads(anchors, spec.steps, counts) if k == sum(counts) else None
    study = AnchorStudy(boxes_wh, anchors, default_anchors, groups, mean_iou(boxes_wh, anchors),
                        mean_iou(boxes_wh, default_anchors))
    if eval_sources:
        eval_wh = box_sizes_of_sources(eval_sources, settings, skipped, progress, **label_check)
        study.held_out = (len(eval_wh), mean_iou(eval_wh, anchors), mean_iou(eval_wh, default_anchors))
    return study

