"""Measuring for ``benchmark.py``: exports every format of one model, times model-only latency (single pass
and flip test), the shared post-processing and end-to-end video, and scores val mAP; returns the numbers
(``deploy/benchmark_report.py`` renders them).
"""
import datetime
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from deploy import export
from deploy.export import sample_image_paths

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VAL_TFRECORD = os.path.join(REPO_ROOT, "dataset", "val_mask.tfrecord")
FORMATS = ("keras", "saved_model", "tflite", "tflite_int8", "onnx")
TIMING_ROUNDS = 4          # the formats are timed in turn, round by round, so a change of load hits them all
RUNTIME_NAMES = {"keras": "TensorFlow (frozen graph, fixed signature)",
                 "saved_model": "TensorFlow (SavedModel, frozen)", "tflite": "LiteRT", "tflite_int8": "LiteRT",
                 "onnx": "onnxruntime (ORT_ENABLE_ALL)", "reference": "LiteRT + XNNPACK (260x260 input)"}
REFERENCE_LABEL = "AIZOO reference"
VIDEO_SIZE = (320, 240)   # width, height
VIDEO_FPS = 30.0
SAMPLE_IMAGE = os.path.join(REPO_ROOT, "assets", "test_00002330.jpg")
FLIP_SUFFIX = " + flip test"


@dataclass
class Variant:
    """One timed way to run the model: its format, its row label and runtime options (XNNPACK off)."""
    format: str
    label: str
    options: dict = field(default_factory=dict)


@dataclass
class BenchmarkResults:
    """What :func:`measure` found; ``rows`` are the table rows (dicts of cell text)."""
    model_file: str
    started: str
    load_before: str
    load_after: str = ""
    input_size: tuple = ()
    score_threshold: float = 0.5
    runs: int = 0
    warmup: int = 0
    rows: list = field(default_factory=list)
    maps: dict = field(default_factory=dict)
    post_default_ms: float = 0.0
    post_low_ms: float = 0.0
    fastest: str = "keras"
    video_rows: list = field(default_factory=list)   # (label, fps, {stage: ms}, frames)
    medians: dict = field(default_factory=dict)      # label -> median seconds of the model-only call


SAMPLE_PATTERN = os.path.join(REPO_ROOT, "assets", "*.jpg")


def make_video(path, frames=300, size=VIDEO_SIZE, pattern=SAMPLE_PATTERN):
    """Write an mp4 clip of ``frames`` frames of ``size`` (w, h): a camera panning and zooming over each sample
    image in turn. Returns the path."""
    images = [image for image in (cv2.imread(name) for name in sample_image_paths(pattern)) if image is not None]
    if not images:
        raise FileNotFoundError(f"{pattern}: no sample images to make a video from")
    width, height = size
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), VIDEO_FPS, (width, height))
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


def time_predict(detector, batch, runs, warmup):
    """Seconds of each of ``runs`` calls of ``detector.predict_raw(batch)`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        detector.predict_raw(batch)
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        detector.predict_raw(batch)
        seconds.append(time.perf_counter() - start)
    return np.array(seconds)


def time_postprocess(detector, predictions, score_threshold, runs):
    """Median milliseconds of the shared ``postprocess`` (results fetched as numpy) on ``predictions``."""
    def call():
        return detector.postprocess(predictions, score_threshold)
    for _ in range(10):
        call()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return 1000 * float(np.median(seconds))


def video_throughput(detector, video_path):
    """End-to-end FPS over a whole clip and the median milliseconds per frame of each stage.

    The per-frame work is that of ``inference.py --video``: decode, BGR->RGB, preprocess, infer, NMS, draw.
    """
    from components.drawing import draw_detections
    capture = cv2.VideoCapture(video_path)
    ok, frame = capture.read()
    if not ok:
        raise OSError(f"{video_path}: cannot read the benchmark video")
    detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))   # warm-up
    stages = {name: [] for name in ("decode", "preprocess", "infer", "postprocess", "draw")}
    threshold = detector.cfg["score_threshold"]
    frames = 0
    start = time.perf_counter()
    while ok:
        t0 = time.perf_counter()
        batch = detector.preprocess([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)])
        t1 = time.perf_counter()
        predictions = detector.predict_raw(batch)
        t2 = time.perf_counter()
        detections = detector.detections(predictions, [frame.shape], threshold)[0]
        t3 = time.perf_counter()
        draw_detections(frame, detections, fps=0.0)
        t4 = time.perf_counter()
        frames += 1
        ok, frame = capture.read()
        t5 = time.perf_counter()
        for name, seconds in zip(stages, (t5 - t4, t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            stages[name].append(seconds)
    elapsed = time.perf_counter() - start
    capture.release()
    return frames / elapsed, {name: 1000 * float(np.median(values)) for name, values in stages.items()}, frames


def load_average():
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def export_formats(model_file, formats, export_dir, calibration_tfrecord, num_calibration, log):
    """{format: path} of ``model_file`` exported (and checked) to each of ``formats`` in ``export_dir``."""
    from components.model_files import load_model_config
    stem = os.path.splitext(os.path.basename(model_file))[0]
    paths = {"keras": model_file}
    for fmt in FORMATS[1:]:
        if fmt not in formats:
            continue
        output = os.path.join(export_dir, stem + export.OUTPUT_SUFFIX[fmt])
        calibration = None
        if fmt == "tflite_int8":
            size = tuple(load_model_config(model_file)["input_size"])
            log(f"calibrating tflite_int8 on {num_calibration} images of {calibration_tfrecord}")
            calibration = export.calibration_images(calibration_tfrecord, size, num_calibration)
        log(f"exporting {fmt} -> {output}")
        report = export.export_model_file(model_file, fmt, output, calibration=calibration, log=log)
        for line in export.describe(report)[1:]:
            log(f"  {line}")
        paths[fmt] = output
    return paths


def load_variants(paths):
    """(variants, {label: Detector}): each format single pass (TFLite also without XNNPACK), and with the flip
    test where the priors are mirror-symmetric (elsewhere it would be the single pass again)."""
    from components.config import cfg as default_cfg
    from components.detector import Detector
    variants = []
    for fmt in FORMATS:
        if fmt in paths:
            variants.append(Variant(fmt, fmt))
            if fmt.startswith("tflite"):
                variants.append(Variant(fmt, f"{fmt} (XNNPACK off)", {"xnnpack": False}))
    single_cfg = dict(default_cfg, flip_test=False, test_scales=[1])
    loaded = {v.label: Detector.from_path(paths[v.format], single_cfg, **v.options) for v in variants}
    for variant in variants:
        if not variant.options:
            flip = Detector(loaded[variant.label].runtime, dict(loaded[variant.label].cfg, flip_test=True),
                            loaded[variant.label].trained_size)
            if flip.flip_test:
                loaded[variant.label + FLIP_SUFFIX] = flip
    return variants, loaded


def time_all(loaded, sample, runs, warmup, log):
    """{label: seconds of each timed run} of each detector on the uint8 RGB image ``sample`` preprocessed its
    own way, the detectors taken in turn for ``TIMING_ROUNDS`` rounds."""
    batches = {label: detector.preprocess([sample]) for label, detector in loaded.items()}
    seconds = {label: [] for label in loaded}
    for label, detector in loaded.items():
        time_predict(detector, batches[label], 0, warmup)
    per_round = -(-runs // TIMING_ROUNDS)
    for round_index in range(TIMING_ROUNDS):
        log(f"timing round {round_index + 1}/{TIMING_ROUNDS}: {per_round} runs of each of {', '.join(loaded)}")
        for label, detector in loaded.items():
            seconds[label].extend(time_predict(detector, batches[label], per_round, 2))
    return seconds


def reference_row(path, seconds):
    """The table row of the AIZOOTech reference (timed beside ours; its mAP comes from mAP/detect.py's path)."""
    row = speed_row(Variant("reference", REFERENCE_LABEL), path, seconds)
    row["val mAP"] = row["flip test val mAP"] = "see README (cli.detect_reference)"
    row["flip test median ms"] = "n/a"
    return row


def speed_row(variant, path, seconds):
    """The table cells of ``variant`` that do not need the mAP: runtime, file, size and latency."""
    median = 1000 * float(np.median(seconds))
    xnnpack = " + XNNPACK" if variant.format.startswith("tflite") and not variant.options else ""
    return {"format": variant.label, "runtime": RUNTIME_NAMES[variant.format] + xnnpack,
            "model file": os.path.basename(path) + ("/" if os.path.isdir(path) else ""),
            "size (MiB)": f"{export.path_size(path) / 2 ** 20:.2f}",
            "median ms": f"{median:.2f}", "p90 ms": f"{1000 * float(np.percentile(seconds, 90)):.2f}",
            "images/s": f"{1000 / median:.0f}"}


def score_row(row, label, loaded, seconds, val_tfrecord, maps, log):
    """Fill ``row``'s flip-test and val mAP cells (``val_tfrecord`` None: skipped); mAPs go into ``maps``."""
    from mAP.evaluation import evaluate, map_or_zero
    flip = loaded.get(label + FLIP_SUFFIX)
    if flip is None:
        row["flip test median ms"] = row["flip test val mAP"] = "n/a (priors not symmetric)"
    else:
        row["flip test median ms"] = f"{1000 * float(np.median(seconds[label + FLIP_SUFFIX])):.2f}"
    if val_tfrecord is None:
        row["val mAP"] = row["flip test val mAP"] = "skipped"
        return
    log(f"val mAP of {label} on {val_tfrecord}, single pass and flip test")
    maps[label] = map_or_zero(evaluate(loaded[label], val_tfrecord))
    row["val mAP"] = f"{100 * maps[label]:.2f}%"
    if flip is not None:
        maps[label + FLIP_SUFFIX] = map_or_zero(evaluate(flip, val_tfrecord))
        row["flip test val mAP"] = f"{100 * maps[label + FLIP_SUFFIX]:.2f}%"


def measure_video(detectors, fastest, video_frames, log):
    """End-to-end video rows for the Keras path and the fastest single pass, each also with the flip test."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="benchmark-video-") as folder:
        video = make_video(os.path.join(folder, "pan.mp4"), video_frames)
        for fmt in dict.fromkeys(["keras", fastest]):
            for label in (fmt, fmt + FLIP_SUFFIX):
                if label in detectors:
                    log(f"video end to end with {label}")
                    fps, stages, frames = video_throughput(detectors[label], video)
                    rows.append((label, fps, stages, frames))
    return rows


def measure(model_path, formats=FORMATS, val_tfrecord=DEFAULT_VAL_TFRECORD, export_dir=None, runs=200, warmup=20,
            video_frames=300, calibration_tfrecord=export.DEFAULT_CALIBRATION_TFRECORD,
            num_calibration=export.DEFAULT_NUM_CALIBRATION, log=print, reference=None):
    """Export, time and evaluate the model of ``model_path``; ``val_tfrecord`` None skips the mAP.

    ``export_dir`` None exports to a temporary folder, removed afterwards. ``reference``: the AIZOOTech
    reference .tflite, timed in the same rounds (None: not timed). Returns BenchmarkResults.
    """
    from components.model_files import resolve_model_path
    model_file = resolve_model_path(model_path)
    results = BenchmarkResults(model_file, datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), load_average(),
                               runs=runs, warmup=warmup)
    folder = tempfile.mkdtemp(prefix="benchmark-exports-") if export_dir is None else export_dir
    os.makedirs(folder, exist_ok=True)
    try:
        paths = export_formats(model_file, formats, folder, calibration_tfrecord, num_calibration, log)
        sample = cv2.cvtColor(cv2.imread(SAMPLE_IMAGE), cv2.COLOR_BGR2RGB)
        variants, loaded = load_variants(paths)
        if reference is not None:
            from deploy.reference import AizooReference
            loaded[REFERENCE_LABEL] = AizooReference(reference)
        seconds = time_all(loaded, sample, runs, warmup, log)
        results.medians = {label: float(np.median(values)) for label, values in seconds.items()}
        detectors, medians = {}, {}
        for variant in variants:
            row = speed_row(variant, paths[variant.format], seconds[variant.label])
            if variant.options:
                row["val mAP"] = row["flip test val mAP"] = "(same model)"
            else:
                score_row(row, variant.label, loaded, seconds, val_tfrecord, results.maps, log)
                detectors[variant.label] = loaded[variant.label]
                medians[variant.label] = float(np.median(seconds[variant.label]))
                if variant.label + FLIP_SUFFIX in loaded:
                    detectors[variant.label + FLIP_SUFFIX] = loaded[variant.label + FLIP_SUFFIX]
            results.rows.append(row)
        if reference is not None:
            results.rows.append(reference_row(reference, seconds[REFERENCE_LABEL]))
        keras = detectors["keras"]
        results.input_size, results.score_threshold = keras.input_size, keras.cfg["score_threshold"]
        predictions = keras.predict_raw(keras.preprocess([sample]))
        results.post_default_ms = time_postprocess(keras, predictions, keras.cfg["score_threshold"], runs)
        results.post_low_ms = time_postprocess(keras, predictions, 0.01, runs)
        results.fastest = min(medians, key=medians.get)
        results.video_rows = measure_video(detectors, results.fastest, video_frames, log)
    finally:
        if export_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    results.load_after = load_average()
    return results
