"""Rendering for ``benchmark.py``: the report (``benchmarks.report.Report``) of ``benchmarks.models.measure``'s
results."""
from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING

from benchmarks.models import (
    EVALUATION_SCORE_THRESHOLD,
    MODEL,
    ONE_PASS,
    REFERENCE_LABEL,
    TIMING_ROUNDS,
    TTA,
    VIDEO_ROUNDS,
)
from benchmarks.report import Report, Table
from benchmarks.timing import runs_per_round

if TYPE_CHECKING:
    from collections.abc import Sequence

    from benchmarks.models import BenchmarkResults, Row

SPEED_HEADER = ["format", "runtime", "model file", "size (MiB)", "model ms", "model p90 ms", "one pass ms/image",
                "TTA", "TTA ms/image"]
VIDEO_HEADER = ["path", "inference.py flags", "passes / frame", "FPS", "ms / frame"]


def versions() -> str:
    import tensorflow as tf
    parts = [f"Python {platform.python_version()}", f"TensorFlow {tf.__version__}"]
    for module, label in (("ai_edge_litert", "ai-edge-litert"), ("onnxruntime", "onnxruntime"), ("tf2onnx", "tf2onnx")):
        try:
            imported = __import__(module)
            parts.append(f"{label} {getattr(imported, '__version__', '?')}")
        except ImportError:
            parts.append(f"{label} not installed")
    return ", ".join(parts)


def map_column(setting: str, val_set: str) -> str:
    """The header of the mAP column of ``setting`` (ONE_PASS / TTA) on ``val_set``."""
    return f"{setting} mAP {val_set}"


def table_header(val_sets: Sequence[str]) -> list[str]:
    """The main table's columns: speed, then one pass and TTA mAP of each validation set."""
    return SPEED_HEADER + [map_column(setting, name) for name in val_sets for setting in (ONE_PASS, TTA)]


def row_cells(row: Row, val_sets: Sequence[str]) -> dict[str, str]:
    """{column: text} of one ``benchmarks.models.Row``."""
    def ms(kind, index: int = 0):
        return f"{row.ms[kind][index]:.2f}" if kind in row.ms else "-"

    cells = {"format": row.label, "runtime": row.runtime, "model file": row.model_file,
             "size (MiB)": f"{row.size_mib:.2f}", "model ms": ms(MODEL), "model p90 ms": ms(MODEL, 1),
             "one pass ms/image": ms(ONE_PASS), "TTA ms/image": ms(TTA),
             "TTA": f"{row.tta} ({row.tta_passes} passes)" if row.tta_passes else row.tta}
    for name in val_sets:
        for setting in (ONE_PASS, TTA):
            value = row.maps.get((setting, name))
            cells[map_column(setting, name)] = (f"{value:.4f}" if value is not None else "(same model)"
                                                if not row.scored else "n/a" if setting == TTA else "-")
    return cells


def comparison_lines(results: BenchmarkResults) -> list[str]:
    """int8 against float, TTA against one pass (Keras), and our latency against the reference's."""
    keras, int8 = results.row("keras"), results.row("tflite_int8")
    lines = []

    def differences(first, first_setting, second, second_setting):
        """'<set> +0.12, ...': points of mAP of ``first`` over ``second`` on each set where both were scored."""
        pairs = [(name, first.maps.get((first_setting, name)), second.maps.get((second_setting, name)))
                 for name in results.val_sets]
        return ", ".join(f"{name} {100 * (a - b):+.2f}" for name, a, b in pairs if a is not None and b is not None)

    if keras and int8 and results.val_sets:
        lines.append(f"tflite_int8 vs keras, one pass, points of mAP: {differences(int8, ONE_PASS, keras, ONE_PASS)} "
                     "(target: within 1 point).")
    if keras and TTA in keras.ms:
        gains = differences(keras, TTA, keras, ONE_PASS) if results.val_sets else ""
        lines.append(f"TTA vs one pass (keras: {keras.tta}, {keras.tta_passes} passes): "
                     f"{keras.ms[TTA][0] / keras.ms[ONE_PASS][0]:.1f}x the ms per image"
                     + (f", points of mAP: {gains}." if gains else "."))
    reference = results.row(REFERENCE_LABEL)
    if reference is not None:
        ours = [row for row in results.rows if row.scored and row.format != "reference"]
        for kind, what in ((MODEL, "Model-only latency"), (ONE_PASS, "Time per image (one pass, `detect`)")):
            shares = ", ".join(f"{row.label} {row.ms[kind][0] / reference.ms[kind][0]:.2f}" for row in ours)
            lines.append(f"{what} as a share of the {REFERENCE_LABEL}'s ({reference.ms[kind][0]:.2f} ms, "
                         f"same rounds, batch 1, 2 threads): {shares}"
                         + (" (target for tflite_int8: at most 0.50)." if kind == MODEL else "."))
    return lines


def video_table(results: BenchmarkResults) -> Table | None:
    """The end-to-end video table and the default's speed-up over ``--tta`` (None without video rows)."""
    if not results.video_rows:
        return None
    width, height = results.video_size
    title = [f"End-to-end video ({results.video_rows[0].frames // VIDEO_ROUNDS} frames of {width}x{height}, mp4v, "
             f"each path over the whole clip in {VIDEO_ROUNDS} rounds, in turn): what `inference.py --video CLIP` "
             "runs per frame (`runtime.media.run_stream`: decode, preprocess, every pass, NMS, draw; no output "
             "file)."]
    rows = [[f"{row.label} {row.setting}" + (" (fastest one pass)" if row.label == results.fastest
                                             and row.setting == ONE_PASS else ""),
             row.flags, row.passes, f"{row.fps:.1f}", f"{1000 / row.fps:.1f}"] for row in results.video_rows]
    by_setting = {row.setting: row for row in results.video_rows if row.label == "keras"}
    notes = []
    if ONE_PASS in by_setting and TTA in by_setting:
        notes.append(f"Video speed-up of the default (one pass) over `--tta` (the old default): "
                     f"{by_setting[ONE_PASS].fps / by_setting[TTA].fps:.2f}x the frames per second (target: at "
                     "least 3x).")
    return Table(VIDEO_HEADER, rows, title, notes)


def report(results: BenchmarkResults) -> Report:
    """The Report of BenchmarkResults: the table of every row, then the video table."""
    height, width = results.input_size
    timed = TIMING_ROUNDS * runs_per_round(results.runs, TIMING_ROUNDS)
    title = [f"{results.started}; {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}); "
             f"{versions()}.",
             f"Batch 1, {height}x{width} input, every runtime on 2 threads; {timed} timed runs of each call after "
             f"{results.warmup} warm-up runs, in {TIMING_ROUNDS} rounds taking every row and setting in turn. "
             f"Load average (1/5/15 min) before: {results.load_before}, after: {results.load_after}.", "",
             "One pass is the default; TTA is `--tta` (`components.config.Settings.with_tta`): the flip test and "
             "scales 1, 2, 0.5 for the .keras model; an export runs one input size, so its TTA is the flip test "
             "alone. *model ms*: the runtime call alone on a preprocessed image, one pass (median; p90 beside it); "
             "*ms/image*: `detect` on one photo (preprocess, every pass, NMS, merge), median. "
             f"mAP: VOC AP@0.5 on the images of each validation TFRecord, through each row's `detect_batch` "
             f"(score threshold {EVALUATION_SCORE_THRESHOLD:g}, boxes in the image's pixels, "
             "`mAP.voc_ap.evaluate_detections`), as `mAP/detect.py` + `mAP/compute_mAP.py` score VOC folders."]
    header = table_header(results.val_sets)
    rows = [[row_cells(row, results.val_sets)[column] for column in header] for row in results.rows]
    notes = [f"Note: {note}" for note in results.notes]
    if not results.val_sets:
        notes.append("mAP not computed (`--skip_map`, or no validation TFRecord found).")
    notes += ["Shared post-processing (decode + class-wise NMS, batch 1, `runtime.postprocessing.postprocess`): "
              f"{results.post_default_ms:.2f} ms at score threshold {results.score_threshold:g} (inference), "
              f"{results.post_low_ms:.2f} ms at 0.01 (mAP)."]
    notes += comparison_lines(results)
    video = video_table(results)
    return Report(f"Benchmark of {results.model_file}",
                  [Table(header, rows, title, notes)] + ([video] if video is not None else []))


def render(results: BenchmarkResults) -> str:
    """The Markdown report text of BenchmarkResults."""
    return report(results).markdown()
