"""Measuring for ``benchmark.py``: exports every format of one model and measures, for each, one pass (the
default) and test-time augmentation (``--tta``) side by side -- model-only latency, ms per image of
``detect``, VOC mAP on one or several validation TFRecords -- with the AIZOOTech reference in the same timing
rounds, the shared post-processing, and the end-to-end video throughput of the default and ``--tta``. Returns
the numbers; ``benchmarks/report.py`` renders them.
"""
from __future__ import annotations

import datetime
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import cv2
import numpy as np

from benchmarks.timing import Timing, load_average, runs_per_round, time_call, time_in_rounds
from deploy import export
from deploy.export_common import DEFAULT_CALIBRATION_TFRECORD, OUTPUT_SUFFIX, sample_image_paths

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from mAP.voc_ap import GroundTruth, ScoredBoxes

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VAL_TFRECORDS = [os.path.join(REPO_ROOT, "dataset", name) for name in ("val_mask.tfrecord", "val_ilc.tfrecord")]
FORMATS = ("keras", "saved_model", "tflite", "tflite_int8", "onnx")
TIMING_ROUNDS = 4          # every timed call is taken in turn, round by round, so a change of load hits them all
VIDEO_ROUNDS = 2           # the video paths likewise, the whole clip each round
RUNTIME_NAMES = {"keras": "TensorFlow (frozen graph, fixed signature)",
                 "saved_model": "TensorFlow (SavedModel, frozen)", "tflite": "LiteRT", "tflite_int8": "LiteRT",
                 "onnx": "onnxruntime (ORT_ENABLE_ALL)", "reference": "LiteRT + XNNPACK (260x260 input)"}
REFERENCE_LABEL = "AIZOO reference"
VIDEO_SIZE = (640, 480)   # width, height
VIDEO_FPS = 30.0
SAMPLE_IMAGE = os.path.join(REPO_ROOT, "assets", "test_00002330.jpg")
MODEL, ONE_PASS, TTA = "model", "one pass", "TTA"   # what is timed: the runtime call alone, detect, detect with TTA
EVALUATION_BATCH = 8       # images per detect_batch call while scoring
EVALUATION_SCORE_THRESHOLD = 0.01   # as mAP/detect.py


@dataclass
class Entry:
    """One row of the table: a way to run the model. ``one_pass`` and ``tta`` are detectors (anything with
    ``settings``, ``preprocess``, ``predict_raw``, ``detect`` and ``detect_batch``); ``tta`` None where TTA is not
    offered (``tta_note`` says why); ``scored`` False for rows whose mAP is that of another row (same model)."""
    label: str
    format: str
    path: str
    one_pass: Any
    tta: Any = None
    tta_note: str = ""
    options: dict = field(default_factory=dict)
    scored: bool = True


@dataclass
class Row:
    """What was measured for one Entry: ``ms`` {MODEL / ONE_PASS / TTA: (median, p90) ms}, ``maps``
    {(ONE_PASS or TTA, set name): mAP in [0, 1]}; ``tta`` says what TTA ran (or why none), ``tta_passes`` the
    network passes per image it takes."""
    label: str
    format: str
    runtime: str
    model_file: str
    size_mib: float
    tta: str
    tta_passes: int = 0
    ms: dict = field(default_factory=dict)
    maps: dict = field(default_factory=dict)
    scored: bool = True


@dataclass
class VideoRow:
    """End-to-end video of one path: the row label, its setting (ONE_PASS / TTA), the inference.py flags that
    give it, network passes per frame, frames per second over ``frames`` frames (every round together)."""
    label: str
    setting: str
    flags: str
    passes: int
    fps: float
    frames: int


@dataclass
class BenchmarkResults:
    """What :func:`measure` found (times in ms, mAPs in [0, 1]); ``notes`` are lines for the report."""
    model_file: str
    started: str
    load_before: str
    load_after: str = ""
    input_size: tuple = ()
    score_threshold: float = 0.5
    runs: int = 0
    warmup: int = 0
    val_sets: list = field(default_factory=list)      # names of the scored sets (file names without .tfrecord)
    notes: list = field(default_factory=list)
    rows: list = field(default_factory=list)          # [Row]
    post_default_ms: float = 0.0
    post_low_ms: float = 0.0
    fastest: str = "keras"
    video_size: tuple = VIDEO_SIZE
    video_rows: list = field(default_factory=list)    # [VideoRow]

    def row(self, label: str) -> Row | None:
        """The Row of ``label`` (None when absent)."""
        return next((row for row in self.rows if row.label == label), None)


def make_video(path: str, frames: int = 300, size: tuple[int, int] = VIDEO_SIZE, pattern: str | None = None) -> str:
    """Write an mp4 clip of ``frames`` frames of ``size`` (w, h): a camera panning and zooming over each sample
    image in turn. Returns the path."""
    images = [image for image in (cv2.imread(name) for name in sample_image_paths(pattern)) if image is not None]
    if not images:
        raise FileNotFoundError(f"{pattern}: no sample images to make a video from")
    width, height = size
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), VIDEO_FPS, (width, height))  # type: ignore[attr-defined]
    if not writer.isOpened():
        raise OSError(f"{path}: cannot write an mp4 video")
    per_image = max(frames // len(images), 1)
    for index in range(frames):
        image = images[min(index // per_image, len(images) - 1)]
        phase = (index % per_image) / max(per_image - 1, 1)                  # 0 -> 1 within one image
        image_h, image_w = image.shape[:2]
        zoom = 1.0 - 0.4 * np.sin(np.pi * phase)                            # window: whole image -> 60% -> whole
        window_w = min(image_w, image_h * width / height) * zoom
        window_h = window_w * height / width
        left = (image_w - window_w) * phase
        top = (image_h - window_h) * (0.5 + 0.5 * np.sin(2 * np.pi * phase))
        crop = image[int(top):int(top + window_h), int(left):int(left + window_w)]
        writer.write(cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA))
    writer.release()
    return path


def time_postprocess(detector: Any, predictions: np.ndarray, score_threshold: float, runs: int) -> float:
    """Median milliseconds of the shared ``postprocess`` (results fetched as numpy) on ``predictions``."""
    return time_call(partial(detector.postprocess, predictions, score_threshold), runs, 10).median_ms


def network_passes(detector: Any) -> int:
    """Network passes per image of ``detector``: 2 with the flip test, plus those of each other scale."""
    own = 2 if getattr(detector, "flip_test", False) else 1
    return own + sum(network_passes(other) for _, other in getattr(detector, "rescaled", []))


def tta_description(detector: Any) -> str:
    """What a TTA detector runs: 'flip test + scales 1, 2, 0.5', 'flip test', ... ('' when nothing more than
    one pass)."""
    parts = ["flip test"] if detector.flip_test else []
    if len(detector.test_scales) > 1:
        parts.append("scales " + ", ".join(f"{scale:g}" for scale in detector.test_scales))
    return " + ".join(parts)


def export_formats(model_file: str, formats: Sequence[str], export_dir: str, calibration_tfrecord: str | None,
                   num_calibration: int, log: Callable[[str], Any]) -> dict[str, str]:
    """{format: path} of ``model_file`` exported (and checked) to each of ``formats`` in ``export_dir``."""
    from runtime.model_files import load_model_config
    stem = os.path.splitext(os.path.basename(model_file))[0]
    paths = {"keras": model_file}
    for fmt in FORMATS[1:]:
        if fmt not in formats:
            continue
        output = os.path.join(export_dir, stem + OUTPUT_SUFFIX[fmt])
        calibration = None
        if fmt == "tflite_int8":
            size = load_model_config(model_file).model.input_size
            # the default TFRecord where it exists, else the set the repository ships (a fresh clone)
            named = None if calibration_tfrecord == DEFAULT_CALIBRATION_TFRECORD else calibration_tfrecord
            calibration = export.load_calibration(size, num_calibration, tfrecord=named, log=log)
        log(f"exporting {fmt} -> {output}")
        report = export.export_model_file(model_file, fmt, output, calibration=calibration, log=log)
        for line in export.describe(report)[1:]:
            log(f"  {line}")
        paths[fmt] = output
    return paths


def load_entries(paths: Mapping[str, str]) -> list[Entry]:
    """[Entry] of each format of ``paths`` ({format: model path}): one pass, and TTA as ``--tta`` sets it
    (``Settings.with_tta``: the flip test and scales [1, 2, 0.5]; an export runs one input size, so
    its TTA is the flip test alone, and none where the priors are not mirror-symmetric). TFLite also without
    XNNPACK (timed only: its mAP is that of the same model)."""
    from components.config import DEFAULT_SETTINGS
    from runtime.detector import Detector
    one_pass_settings = DEFAULT_SETTINGS.replace(tta=False, flip_test=False, test_scales=(1,))
    entries = []
    for fmt in FORMATS:
        if fmt not in paths:
            continue
        variants: list[tuple[str, dict[str, Any]]] = [(fmt, {})] + (
            [(f"{fmt} (XNNPACK off)", {"xnnpack": False})] if fmt.startswith("tflite") else [])
        for label, options in variants:
            one_pass = Detector.from_path(paths[fmt], one_pass_settings, **options)
            tta = Detector(one_pass.runtime, one_pass.settings.replace(tta=True).with_tta(), one_pass.trained_size)
            note = "" if tta_description(tta) else "n/a (priors not mirror-symmetric)"
            entries.append(Entry(label, fmt, paths[fmt], one_pass, None if note else tta, note, options,
                                 scored=not options))
    return entries


def reference_entry(path: str) -> Entry:
    """The Entry of the AIZOOTech reference (one pass as published: no TTA)."""
    from benchmarks.reference import AizooReference
    return Entry(REFERENCE_LABEL, "reference", path, AizooReference(path), None, "n/a (published one pass)")


def timing_calls(entries: Sequence[Entry], sample: np.ndarray) -> dict[tuple[str, str], Callable[[], Any]]:
    """{(label, MODEL / ONE_PASS / TTA): call} on the uint8 RGB image ``sample``: the runtime call alone on the
    preprocessed image (one pass), ``detect`` one pass, ``detect`` with TTA."""
    calls: dict[tuple[str, str], Callable[[], Any]] = {}
    for entry in entries:
        calls[(entry.label, MODEL)] = partial(entry.one_pass.predict_raw, entry.one_pass.preprocess([sample]))
        calls[(entry.label, ONE_PASS)] = partial(entry.one_pass.detect, sample)
        if entry.tta is not None:
            calls[(entry.label, TTA)] = partial(entry.tta.detect, sample)
    return calls


def val_set_name(tfrecord_path: str) -> str:
    """The column name of a validation TFRecord: its file name without ``.tfrecord``."""
    name = os.path.basename(tfrecord_path)
    return name[:-len(".tfrecord")] if name.endswith(".tfrecord") else name


def evaluate_images(detectors: Mapping[Any, Any], tfrecord_path: str,
                    score_threshold: float = EVALUATION_SCORE_THRESHOLD, batch_size: int = EVALUATION_BATCH,
                    limit: int | None = None) -> dict[Any, float]:
    """{key: VOC AP@0.5 in [0, 1]} of each detector of ``detectors`` ({key: anything with ``settings`` and
    ``detect_batch``: a ``Detector`` with any test-time augmentation, the reference}) on the images of
    ``tfrecord_path``, each record decoded once and given to every detector whole, as ``mAP/detect.py`` does
    with the VOC images: boxes in the image's pixels, scored by ``mAP.voc_ap.evaluate_detections``.
    ``limit``: the first records only. Raises ProjectError / ClassListError naming the file."""
    from components.class_list import check_tfrecord_classes
    from components.errors import ProjectError
    from mAP.evaluation import map_or_zero, read_validation_records
    from mAP.voc_ap import GroundTruth, ScoredBoxes, evaluate_detections
    if not os.path.isfile(tfrecord_path):
        raise ProjectError(f"{tfrecord_path}: TFRecord not found")
    for key, detector in detectors.items():
        check_tfrecord_classes(tfrecord_path, detector.settings.model.labels_list, getattr(detector, "model_path", None)
                               or str(key))
    names = list(next(iter(detectors.values())).settings.model.labels_list)
    truth: dict[str, GroundTruth] = {}
    found: dict[Any, dict[str, ScoredBoxes]] = {key: {} for key in detectors}
    images: list[np.ndarray] = []

    def run_batch() -> None:
        for key, detector in detectors.items():
            for index, detections in zip(range(len(truth) - len(images), len(truth)),
                                         detector.detect_batch(images, score_threshold)):
                found[key][str(index)] = ScoredBoxes(detections.labels(), detections.scores, detections.boxes)
        images.clear()

    for image, boxes, labels, difficult in read_validation_records(tfrecord_path, limit):
        height, width = image.shape[:2]
        truth[str(len(truth))] = GroundTruth.from_class_ids(labels, boxes * [width, height, width, height],
                                                            difficult, names)
        images.append(image)
        if len(images) == batch_size:
            run_batch()
    if images:
        run_batch()
    if not truth:
        raise ProjectError(f"{tfrecord_path}: no records")
    return {key: map_or_zero(evaluate_detections(truth, found[key], iou_threshold=0.5)) for key in detectors}


def measure_row(entry: Entry, timings: Mapping[tuple[str, str], Timing]) -> Row:
    """The Row of ``entry`` from its timings ({(label, kind): Timing}); mAPs are added later."""
    ms = {kind: (timings[(entry.label, kind)].median_ms, timings[(entry.label, kind)].p90_ms)
          for kind in (MODEL, ONE_PASS, TTA) if (entry.label, kind) in timings}
    runtime = RUNTIME_NAMES[entry.format] + (" + XNNPACK" if entry.format.startswith("tflite") and not entry.options
                                             else "")
    tta = entry.tta_note if entry.tta is None else tta_description(entry.tta)
    return Row(entry.label, entry.format, runtime,
               os.path.basename(entry.path) + ("/" if os.path.isdir(entry.path) else ""),
               export.path_size(entry.path) / 2 ** 20, tta, network_passes(entry.tta) if entry.tta else 0, ms,
               scored=entry.scored)


def score_rows(entries: Sequence[Entry], rows: Sequence[Row], val_tfrecords: Sequence[str], log: Callable[[str], Any],
               limit: int | None = None) -> None:
    """Fill each scored row's ``maps`` on every TFRecord of ``val_tfrecords``: one pass, and TTA where offered."""
    by_label = {row.label: row for row in rows}
    for path in val_tfrecords:
        detectors = {}
        for entry in entries:
            if entry.scored:
                detectors[(entry.label, ONE_PASS)] = entry.one_pass
                if entry.tta is not None:
                    detectors[(entry.label, TTA)] = entry.tta
        log(f"val mAP on {path}: {len(detectors)} detectors (one pass and TTA of each format)")
        start = time.perf_counter()
        for (label, setting), value in evaluate_images(detectors, path, limit=limit).items():
            by_label[label].maps[(setting, val_set_name(path))] = value
        log(f"  scored in {time.perf_counter() - start:.0f} s")


def video_fps(detector: Any, video_path: str) -> tuple[int, float]:
    """(frames, seconds) of ``runtime.media.run_stream`` -- what ``inference.py --video`` runs per frame:
    decode, ``detect`` (preprocess, every pass, NMS), draw -- over the whole clip, no output file."""
    from runtime.media import run_stream
    capture = cv2.VideoCapture(video_path)
    ok, frame = capture.read()
    if not ok:
        capture.release()
        raise OSError(f"{video_path}: cannot read the benchmark video")
    frames, fps, _ = run_stream(detector, capture, frame, None, False, progress=False)
    return frames, frames / fps


def measure_video(entries: Sequence[Entry], fastest: str, video_frames: int, log: Callable[[str], Any],
                  size: tuple[int, int] = VIDEO_SIZE) -> list[VideoRow]:
    """[VideoRow]: the Keras model's default (one pass) and ``--tta``, and the fastest format's one pass, on a
    clip of ``video_frames`` frames of ``size`` (w, h), the paths taken in turn for ``VIDEO_ROUNDS`` rounds."""
    by_label = {entry.label: entry for entry in entries}
    paths = [("keras", ONE_PASS, "(default)", by_label["keras"].one_pass)]
    if by_label["keras"].tta is not None:
        paths.append(("keras", TTA, "--tta (the old default)", by_label["keras"].tta))
    if fastest != "keras":
        paths.append((fastest, ONE_PASS, f"--model_path {os.path.basename(by_label[fastest].path)}",
                      by_label[fastest].one_pass))
    totals = [[0, 0.0] for _ in paths]
    with tempfile.TemporaryDirectory(prefix="benchmark-video-") as folder:
        video = make_video(os.path.join(folder, "pan.mp4"), video_frames, size)
        for round_index in range(VIDEO_ROUNDS):
            for total, (label, setting, _, detector) in zip(totals, paths):
                log(f"video round {round_index + 1}/{VIDEO_ROUNDS}: {label} {setting}")
                frames, seconds = video_fps(detector, video)
                total[0] += frames
                total[1] += seconds
    return [VideoRow(label, setting, flags, network_passes(detector), frames / seconds, frames)  # type: ignore[arg-type]
            for (label, setting, flags, detector), (frames, seconds) in zip(paths, totals)]


def measure(model_path: str, formats: Sequence[str] = FORMATS,
            val_tfrecords: Sequence[str] = tuple(DEFAULT_VAL_TFRECORDS), export_dir: str | None = None, runs: int = 200,
            warmup: int = 20, video_frames: int = 300,
            calibration_tfrecord: str | None = DEFAULT_CALIBRATION_TFRECORD,
            num_calibration: int = export.DEFAULT_NUM_CALIBRATION, log: Callable[[str], Any] = print,
            reference: str | None = None, video_size: tuple[int, int] = VIDEO_SIZE,
            eval_limit: int | None = None) -> BenchmarkResults:
    """Export, time and evaluate the model of ``model_path``, one pass and TTA.

    ``val_tfrecords``: the TFRecords to score (empty: no mAP); a missing one is skipped with a note.
    ``export_dir`` None exports to a temporary folder, removed afterwards. ``reference``: the AIZOOTech
    reference .tflite, timed in the same rounds and scored the same way (None: left out). ``eval_limit``: score
    the first records of each set only (tests). Returns BenchmarkResults.
    """
    from runtime.model_files import resolve_model_path
    model_file = resolve_model_path(model_path)
    results = BenchmarkResults(model_file, datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), load_average(),
                               runs=runs, warmup=warmup, video_size=tuple(video_size))
    present = []
    for path in val_tfrecords:
        if os.path.isfile(path):
            present.append(path)
        else:
            results.notes.append(f"{path}: validation TFRecord not found; its mAP columns are left out.")
            log(f"note: {results.notes[-1]}")
    results.val_sets = [val_set_name(path) for path in present]
    folder = tempfile.mkdtemp(prefix="benchmark-exports-") if export_dir is None else export_dir
    os.makedirs(folder, exist_ok=True)
    try:
        paths = export_formats(model_file, formats, folder, calibration_tfrecord, num_calibration, log)
        sample = cv2.cvtColor(cv2.imread(SAMPLE_IMAGE), cv2.COLOR_BGR2RGB)  # type: ignore[arg-type]
        entries = load_entries(paths)
        if reference is not None:
            entries.append(reference_entry(reference))
        timings = time_in_rounds(timing_calls(entries, sample), TIMING_ROUNDS, runs_per_round(runs, TIMING_ROUNDS),
                                 warmup, settle=1, log=log)
        results.rows = [measure_row(entry, timings) for entry in entries]
        score_rows(entries, results.rows, present, log, eval_limit)
        keras = entries[0].one_pass
        results.input_size, results.score_threshold = keras.input_size, keras.settings.detect.score_threshold
        predictions = keras.predict_raw(keras.preprocess([sample]))
        results.post_default_ms = time_postprocess(keras, predictions, keras.settings.detect.score_threshold, runs)
        results.post_low_ms = time_postprocess(keras, predictions, 0.01, runs)
        ours = [row for row in results.rows if row.scored and row.format != "reference"]
        results.fastest = min(ours, key=lambda row: row.ms[ONE_PASS][0]).label
        results.video_rows = measure_video(entries, results.fastest, video_frames, log, video_size)
    finally:
        if export_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    results.load_after = load_average()
    return results
