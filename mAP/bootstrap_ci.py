"""How sure a mAP is, and whether one run beats another: the bootstrap over images (Efron 1979).

A validation set is a sample of images. Drawing its images again with replacement, as many as it has, and
scoring each draw gives the spread the mAP would have on another sample of the same source. Two runs on the
same images are compared on the same draws (a paired bootstrap): the difference of their mAPs on each draw, its
95% interval, and the share of draws where the first run is ahead.

A draw is a count per image (how many times it was drawn). An image drawn k times adds k copies of its faces
and of its detections, with the same outcome (true or false positive) as in the full evaluation
(``mAP.voc_ap.evaluate_class``): the AP of a draw is the AP of weighted detections, computed for many
draws at once. With every count at 1 it is the full evaluation's AP.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from components.atomic_io import save_figure_atomically, write_text_atomically
from components.errors import ProjectError
from mAP.sets import MEAN_ROW_NAME, result_dirs
from mAP.voc_ap import align_table, check_iou_threshold, evaluate_detections, read_folders

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from mAP.voc_ap import GroundTruth, ScoredBoxes

DEFAULT_SAMPLES = 1000
DEFAULT_SEED = 0
INTERVAL = 0.95          # two-sided interval of the percentile bootstrap
TABLE_FILE_NAME = "bootstrap.txt"
PLOT_FILE_NAME = "bootstrap.png"
CHUNK = 64               # draws scored at once ([CHUNK, detections] arrays)


@dataclass
class ClassOutcomes:
    """One class of one set, as the bootstrap needs it: ``image_index`` [T] and ``true_positive`` [T] of its
    counted detections in descending score order, ``positives`` [N] its non-difficult faces per image."""
    image_index: np.ndarray
    true_positive: np.ndarray
    positives: np.ndarray


@dataclass
class SetOutcomes:
    """One set's evaluation reduced to what a draw changes: ``images`` [N] names, ``classes`` {name:
    ClassOutcomes} of the classes with an AP, and ``mean_ap`` of the full evaluation."""
    images: list
    classes: dict
    mean_ap: float


def set_outcomes(ground_truth: Mapping[str, GroundTruth], detections: Mapping[str, ScoredBoxes],
                 iou_threshold: float = 0.5) -> SetOutcomes:
    """SetOutcomes of ``detections`` ({image: ScoredBoxes}) against ``ground_truth`` ({image: GroundTruth})."""
    evaluation = evaluate_detections(ground_truth, detections, iou_threshold)
    if evaluation.mean_ap is None:
        raise ProjectError("no non-difficult ground-truth box in any image")
    images = list(ground_truth)
    index = {name: position for position, name in enumerate(images)}
    classes = {}
    for name, result in evaluation.classes.items():
        if result.ap is None:
            continue
        positives = np.array([sum(label == name and not difficult
                                  for label, difficult in zip(truth.labels, truth.difficult))
                              for truth in ground_truth.values()], np.float64)
        classes[name] = ClassOutcomes(np.array([index[image] for image in result.images], np.int64),
                                      np.asarray(result.true_positive, bool), positives)
    return SetOutcomes(images, classes, evaluation.mean_ap)


def read_set_outcomes(set_dir: str, iou_threshold: float = 0.5) -> SetOutcomes:
    """SetOutcomes of a set folder holding ``ground-truth/`` and ``detection-results/`` (as mAP/detect.py
    writes them); raises ProjectError naming the folder or file that cannot be used, or --iou outside (0, 1]."""
    check_iou_threshold(iou_threshold)
    ground_truth, detections = read_folders(*result_dirs(set_dir))
    try:
        return set_outcomes(ground_truth, detections, iou_threshold)
    except ValueError as error:
        raise ProjectError(f"{set_dir}: {error}") from None


def image_draws(num_images: int, num_samples: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """[S, N] float64 counts: each row a draw of ``num_images`` images with replacement (summing to N)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, num_images, size=(num_samples, num_images))
    return np.stack([np.bincount(row, minlength=num_images) for row in picks]).astype(np.float64)


def weighted_average_precision(true_positive: np.ndarray, weights: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """VOC all-point AP of weighted detections, one per row of ``weights``.

    Args:
        true_positive: [T] bool, the detections' outcomes in descending score order.
        weights: [S, T] each detection's count in each draw (0: not drawn).
        positives: [S] the number of faces in each draw.
    Returns:
        [S] APs in [0, 1] (0 where a draw holds no face). With unit weights it equals
        ``mAP.voc_ap.average_precision`` of the unweighted curve.
    """
    hits = np.cumsum(weights * true_positive, axis=1)
    counted = np.cumsum(weights, axis=1)
    precision = np.divide(hits, counted, out=np.zeros_like(hits), where=counted > 0)
    recall = np.divide(hits, positives[:, None], out=np.zeros_like(hits), where=positives[:, None] > 0)
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    steps = np.diff(recall, axis=1, prepend=0.0)
    return np.sum(steps * envelope, axis=1)


def bootstrap_map(outcomes: SetOutcomes, draws: np.ndarray) -> np.ndarray:
    """[S] mAP of a set on each draw ([S, N] counts of :func:`image_draws`), a chunk of draws at a time."""
    values = []
    for start in range(0, len(draws), CHUNK):
        chunk = draws[start:start + CHUNK]
        aps = [weighted_average_precision(cls.true_positive, chunk[:, cls.image_index], chunk @ cls.positives)
               for cls in outcomes.classes.values()]
        values.append(np.mean(aps, axis=0))
    return np.concatenate(values)


def interval(values: np.ndarray, level: float = INTERVAL) -> tuple[float, float]:
    """(low, high): the percentile interval holding ``level`` of ``values``."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


@dataclass
class Comparison:
    """One row of a comparison: a set (or the mean over sets) with the full-evaluation mAPs of the run and of
    the baseline (None without one), and the draws' mAPs [S] of each."""
    name: str
    run_map: float
    run_draws: np.ndarray
    baseline_map: float | None = None
    baseline_draws: np.ndarray | None = None

    @property
    def difference_draws(self) -> np.ndarray:
        return self.run_draws - self.baseline_draws

    @property
    def share_ahead(self) -> float:
        """Share of draws where the run's mAP is above the baseline's (ties count half)."""
        difference = self.difference_draws
        return float(np.mean(difference > 0) + 0.5 * np.mean(difference == 0))


def check_same_images(run: SetOutcomes, baseline: SetOutcomes, name: str) -> None:
    """Raise ProjectError unless the two SetOutcomes score the same images (a paired draw needs them)."""
    if run.images != baseline.images:
        missing = sorted(set(run.images) ^ set(baseline.images))
        raise ProjectError(f"{name}: the run and the baseline score different images"
                           + (f" (e.g. {missing[0]})" if missing else " (in another order)"))


def compare_sets(runs: Mapping[str, SetOutcomes], baselines: Mapping[str, SetOutcomes] | None = None,
                 num_samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED) -> list[Comparison]:
    """Comparison rows of several sets and their mean.

    Args:
        runs: {set name: SetOutcomes} of the run; baselines: the same sets of the baseline, or None.
        num_samples: draws per set; each set is drawn on its own (seeded by ``seed`` and its position), the
            run and the baseline on the same draws.
    Returns:
        [Comparison] one per set, then one named ``mean`` (the mean of the sets' mAPs on each draw) when there
        are several sets.
    """
    if baselines is not None and list(baselines) != list(runs):
        raise ProjectError(f"the baseline's sets {list(baselines)} are not the run's {list(runs)}")
    rows = []
    for position, (name, run) in enumerate(runs.items()):
        draws = image_draws(len(run.images), num_samples, seed + position)
        row = Comparison(name, run.mean_ap, bootstrap_map(run, draws))
        if baselines is not None:
            check_same_images(run, baselines[name], name)
            row.baseline_map = baselines[name].mean_ap
            row.baseline_draws = bootstrap_map(baselines[name], draws)
        rows.append(row)
    if len(rows) > 1:
        rows.append(_mean_row(rows))
    return rows


def _mean_row(rows):
    mean = Comparison(MEAN_ROW_NAME, float(np.mean([row.run_map for row in rows])),
                      np.mean([row.run_draws for row in rows], axis=0))
    if rows[0].baseline_draws is not None:
        mean.baseline_map = float(np.mean([row.baseline_map for row in rows]))
        mean.baseline_draws = np.mean([row.baseline_draws for row in rows], axis=0)
    return mean


def _points(value) -> str:
    return f"{100 * value:.2f}"


def _with_interval(value, draws) -> str:
    low, high = interval(draws)
    return f"{_points(value)} [{_points(low)}, {_points(high)}]"


def format_comparison(rows: Sequence[Comparison], num_samples: int) -> list[str]:
    """Text lines of a comparison: per row the run's mAP with its 95% interval, and with a baseline the
    baseline's, the difference (run - baseline, points) with its interval and the share of draws the run is
    ahead."""
    paired = rows[0].baseline_draws is not None
    header = ["set", "mAP [95% interval]"]
    if paired:
        header += ["baseline mAP [95% interval]", "difference [95% interval]", "run ahead in"]
    cells = []
    for row in rows:
        line = [row.name, _with_interval(row.run_map, row.run_draws)]
        if paired:
            line += [_with_interval(row.baseline_map, row.baseline_draws),
                     _with_interval(row.run_map - row.baseline_map, row.difference_draws),  # type: ignore[operator]
                     f"{100 * row.share_ahead:.1f}% of draws"]
        cells.append(line)
    title = (f"bootstrap over images: {num_samples} draws per set, mAP in points (VOC AP x 100), "
             f"{100 * INTERVAL:g}% percentile intervals" + ("; the run and the baseline on the same draws"
                                                           if paired else ""))
    return [title] + align_table([header] + cells)


def plot_comparison(rows: Sequence[Comparison], path: str) -> None:
    """Histograms of each row's draws (the differences with a baseline, else the mAPs) as a PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paired = rows[0].baseline_draws is not None
    figure = Figure(figsize=(4 * len(rows), 3.2))
    FigureCanvasAgg(figure)
    for position, row in enumerate(rows, start=1):
        axes = figure.add_subplot(1, len(rows), position)
        values = 100 * (row.difference_draws if paired else row.run_draws)
        axes.hist(values, bins=40, color="tab:blue", alpha=0.7)
        axes.axvline(0.0 if paired else 100 * row.run_map, color="black", linewidth=1)
        for bound in interval(values):
            axes.axvline(bound, color="tab:red", linestyle="--", linewidth=1)
        axes.set_title(row.name)
        axes.set_xlabel("run - baseline mAP (points)" if paired else "mAP (points)")
    figure.tight_layout()
    save_figure_atomically(figure, path, format="png", dpi=100)


def write_comparison(rows: Sequence[Comparison], num_samples: int, output_dir: str) -> list[str]:
    """Write the table of :func:`format_comparison` (``bootstrap.txt``) and the plot (``bootstrap.png``) under
    ``output_dir``, atomically; returns the table lines."""
    lines = format_comparison(rows, num_samples)
    os.makedirs(output_dir, exist_ok=True)
    write_text_atomically(os.path.join(output_dir, TABLE_FILE_NAME), "\n".join(lines) + "\n")
    plot_comparison(rows, os.path.join(output_dir, PLOT_FILE_NAME))
    return lines

