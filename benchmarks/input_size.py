"""Measuring for ``benchmark_input_size.py``: one model run at several input sizes -- val mAP on each validation
set and model-only latency (batch 1), Keras and TFLite exported at each size, the flip test where the priors
are mirror-symmetric at that size."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import cv2
import numpy as np

from benchmarks.models import SAMPLE_IMAGE
from benchmarks.report import Table
from benchmarks.timing import time_call

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from runtime.detector import Detector


@dataclass
class SizeResult:
    """One input size: mAP per validation set name, median ms per runtime, whether the flip test ran, the size the
    network ran at (``Detector.network_size``: the input size rounded up to align its maps with training)."""
    input_size: tuple
    flip_test: bool
    network_size: tuple
    maps: dict = field(default_factory=dict)
    median_ms: dict = field(default_factory=dict)


def detectors_at(model_file: str, input_size: Sequence[int], export_dir: str,
                 log: Callable[[str], Any]) -> dict[str, Detector]:
    """{runtime: Detector} of ``model_file`` at ``input_size``: the Keras model and a float TFLite export."""
    from deploy.export import export_model_file
    from runtime.detector import Detector
    tflite = os.path.join(export_dir, f"model_{input_size[0]}x{input_size[1]}.tflite")
    log(f"exporting tflite at {input_size[0]}x{input_size[1]}")
    export_model_file(model_file, "tflite", tflite, log=lambda message: None, input_size=input_size)
    from components.config import DEFAULT_SETTINGS
    return {"keras": Detector.from_path(model_file, DEFAULT_SETTINGS.replace(test_scales=(1,)), input_size=input_size),
            "tflite": Detector.from_path(tflite)}


def measure_size(model_file: str, input_size: Sequence[int], val_tfrecords: Sequence[str], runs: int, export_dir: str,
                 log: Callable[[str], Any]) -> SizeResult:
    """SizeResult of ``model_file`` at ``input_size``; mAP with the default inference settings (flip test)."""
    from mAP.evaluation import evaluate, map_or_zero
    detectors = detectors_at(model_file, input_size, export_dir, log)
    keras = detectors["keras"]
    result = SizeResult(tuple(input_size), keras.flip_test, tuple(keras.network_size))
    for path in val_tfrecords:
        name = os.path.splitext(os.path.basename(path))[0]
        log(f"val mAP at {input_size[0]}x{input_size[1]} on {name}")
        result.maps[name] = map_or_zero(evaluate(keras, path))
    batch = keras.preprocess([cv2.cvtColor(cv2.imread(SAMPLE_IMAGE), cv2.COLOR_BGR2RGB)])  # type: ignore[arg-type]
    for runtime, detector in detectors.items():
        result.median_ms[runtime] = time_call(partial(detector.predict_raw, batch), runs, warmup=5).median_ms
    return result


def measure_sizes(model_file: str, sizes: Sequence[Sequence[int]], val_tfrecords: Sequence[str], runs: int = 50,
                  log: Callable[[str], Any] = print) -> list[SizeResult]:
    """[SizeResult] for each (h, w) of ``sizes``."""
    with tempfile.TemporaryDirectory(prefix="input-size-") as folder:
        return [measure_size(model_file, size, val_tfrecords, runs, folder, log) for size in sizes]


def sizes_table(results: Sequence[SizeResult]) -> Table:
    """The Table of :func:`measure_sizes`' results: mAP in points per set and their mean, median ms per runtime."""
    names = list(results[0].maps)
    columns = (["input", "network input", "flip test"] + [f"mAP {name}" for name in names]
               + ["mean mAP", "Keras ms", "TFLite ms"])
    rows = []
    for result in results:
        maps = [result.maps[name] for name in names]
        cells = [f"{result.input_size[0]}x{result.input_size[1]}",
                 f"{result.network_size[0]}x{result.network_size[1]}",
                 "on" if result.flip_test else "off (grid)"]
        cells += [f"{100 * value:.2f}" for value in maps] + [f"{100 * float(np.mean(maps)):.2f}"]
        cells += [f"{result.median_ms['keras']:.1f}", f"{result.median_ms['tflite']:.1f}"]
        rows.append(cells)
    return Table(columns, rows)
