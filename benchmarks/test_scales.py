"""Measuring for ``benchmark_test_scales.py``: what each multi-scale test setting (``test_scales``) costs per
image -- ms of ``Detector.detect`` on the sample images (preprocessing, every pass with its flip test,
post-processing and the merge), median over repeated calls, batch 1."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from benchmarks.report import Table
from benchmarks.timing import Timing, time_in_rounds
from deploy.export import sample_images

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from components.config import Settings

COLUMNS = ("test_scales", "flip test", "median ms / image", "p90 ms", "x first row")


@dataclass
class ScalesResult:
    """One ``test_scales`` setting: the scales that ran, whether the base pass had the flip test, median and
    90th percentile ms per image."""
    test_scales: list
    flip_test: bool
    median_ms: float
    p90_ms: float


def measure_test_scales(model_file: str, scale_settings: Sequence[Sequence[float]], settings: Settings,
                        runs: int = 20, warmup: int = 2,
                        images_rgb: Sequence[np.ndarray] | None = None) -> list[ScalesResult]:
    """[ScalesResult] of the .keras model ``model_file`` under ``settings`` with each ``test_scales`` of
    ``scale_settings`` (lists starting with 1), on ``images_rgb`` (default: the sample photos), after ``warmup``
    untimed rounds: one ``detect`` call per image, the settings and images taken in turn for ``runs`` rounds,
    so that a change of load hits them all alike."""
    from runtime.detector import Detector
    images_rgb = sample_images() if images_rgb is None else images_rgb
    base = Detector.from_path(model_file, settings.replace(test_scales=(1,)))
    detectors = [Detector(base.runtime, base.settings.replace(test_scales=tuple(scales)), base.trained_size)
                 for scales in scale_settings]
    calls = {(index, image_index): partial(detector.detect, image)
             for index, detector in enumerate(detectors) for image_index, image in enumerate(images_rgb)}
    timings = time_in_rounds(calls, rounds=runs, runs_per_round=1, warmup=warmup)
    results = []
    for index, detector in enumerate(detectors):
        timing = Timing.merge(timings[(index, image_index)] for image_index in range(len(images_rgb)))
        results.append(ScalesResult(list(detector.test_scales), detector.flip_test, timing.median_ms, timing.p90_ms))
    return results


def scales_table(results: Sequence[ScalesResult]) -> Table:
    """The Table of :func:`measure_test_scales`' results, with each setting's time against the first."""
    rows = [[str(result.test_scales), "on" if result.flip_test else "off", f"{result.median_ms:.1f}",
             f"{result.p90_ms:.1f}", f"{result.median_ms / results[0].median_ms:.2f}"] for result in results]
    return Table(COLUMNS, rows, right=COLUMNS[2:])
