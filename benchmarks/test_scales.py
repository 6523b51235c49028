"""Measuring for ``benchmark_test_scales.py``: what each multi-scale test setting (``test_scales``) costs per
image -- ms of ``Detector.detect`` on the sample images (preprocessing, every pass with its flip test,
post-processing and the merge), median over repeated calls, batch 1."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from deploy.export import sample_images

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from runtime.detector import Detector


@dataclass
class ScalesResult:
    """One ``test_scales`` setting: the scales that ran, whether the base pass had the flip test, median and
    90th percentile ms per image."""
    test_scales: list
    flip_test: bool
    median_ms: float
    p90_ms: float


def time_detect(detector: Detector, images_rgb: Sequence[np.ndarray]) -> list[float]:
    """Seconds of one ``detector.detect`` call on each image of ``images_rgb``; [len(images_rgb)]."""
    seconds = []
    for image in images_rgb:
        start = time.perf_counter()
        detector.detect(image)
        seconds.append(time.perf_counter() - start)
    return seconds


def measure_test_scales(model_file: str, scale_settings: Sequence[Sequence[float]], cfg: dict[str, Any], runs: int = 20,
                        warmup: int = 2, images_rgb: Sequence[np.ndarray] | None = None) -> list[ScalesResult]:
    """[ScalesResult] of the .keras model ``model_file`` under ``cfg`` with each ``test_scales`` of
    ``scale_settings`` (lists starting with 1), on ``images_rgb`` (default: the sample photos), after ``warmup``
    untimed rounds. The settings are timed in turn, round by round, so that a change of load hits them all
    alike."""
    from runtime.detector import Detector
    images_rgb = sample_images() if images_rgb is None else images_rgb
    base = Detector.from_path(model_file, cfg.replace(test_scales=[1]))
    detectors = [Detector(base.runtime, base.settings.replace(test_scales=list(scales)), base.trained_size)
                 for scales in scale_settings]
    for _ in range(warmup):
        for detector in detectors:
            time_detect(detector, images_rgb)
    seconds: list[list[float]] = [[] for _ in detectors]
    for _ in range(runs):
        for times, detector in zip(seconds, detectors):
            times.extend(time_detect(detector, images_rgb))
    return [ScalesResult(detector.test_scales, detector.flip_test, 1000 * float(np.median(times)),
                         1000 * float(np.percentile(times, 90)))
            for detector, times in zip(detectors, seconds)]


def render_test_scales(results: Sequence[ScalesResult]) -> str:
    """Markdown table of :func:`measure_test_scales`' results, with each setting's time against the first."""
    lines = ["| test_scales | flip test | median ms / image | p90 ms | x first row |", "|---|---|---:|---:|---:|"]
    for result in results:
        ratio = result.median_ms / results[0].median_ms
        lines.append(f"| {result.test_scales} | {'on' if result.flip_test else 'off'} | {result.median_ms:.1f} | "
                     f"{result.p90_ms:.1f} | {ratio:.2f} |")
    return "\n".join(lines) + "\n"
