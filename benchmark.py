"""Speed and accuracy of every deployment format of one model, in one Markdown table.

    python benchmark.py --model_path checkpoints/train/last.keras [--val_tfrecord dataset/val_mask.tfrecord]
                        [--skip_map] [--output benchmark.md] [--export_dir DIR] [--runs 200] [--warmup 20]

The model is exported (``export.py``'s functions, each export checked against Keras) to saved_model, tflite,
tflite_int8 and onnx in ``--export_dir`` (default: a temporary folder, removed afterwards). For each format:
model-only latency at batch 1 on a 240x320 sample image (``predict_raw``: the runtime call, median and p90 over
``--runs`` runs after ``--warmup`` warm-up runs, timed in 4 rounds that take the formats in turn), images/s,
model size on disk, and the validation mAP (VOC AP@0.5 through the shared preprocessing, ``postprocess`` and
``mAP.compute_mAP.evaluate_detections``), each both as a single pass and with the flip test (the image and its
mirror image as one batch of 2, predictions averaged: the default of ``inference.py`` and ``mAP/detect.py``).
TFLite is timed with and without the XNNPACK delegate. It also times the shared post-processing alone and the
end-to-end video throughput (decode + preprocess + infer + NMS + draw, as ``inference.py --video`` does it) on a
320x240 clip made by panning and zooming over the sample images, for the Keras path and for the fastest path,
single pass and with the flip test.

Every runtime uses 2 threads. Timings depend on what else runs on the machine: the table records the load
average before and after.
"""
import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, REPO_ROOT)

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import export  # noqa: E402
from components.atomic_io import write_text_atomically  # noqa: E402

DEFAULT_MODEL_PATH = os.path.join(REPO_ROOT, "checkpoints", "mask_detector.keras")   # the shipped 2-class model
DEFAULT_VAL_TFRECORD = os.path.join(REPO_ROOT, "dataset", "val_mask.tfrecord")
FORMATS = ("keras", "saved_model", "tflite", "tflite_int8", "onnx")
TIMING_ROUNDS = 4          # the formats are timed in turn, round by round, so a change of load hits them all
RUNTIME_NAMES = {"keras": "TensorFlow (frozen graph, fixed signature)", "saved_model": "TensorFlow (SavedModel, frozen)",
                 "tflite": "LiteRT", "tflite_int8": "LiteRT", "onnx": "onnxruntime (ORT_ENABLE_ALL)"}
VIDEO_SIZE = (320, 240)   # width, height
VIDEO_FPS = 30.0
SAMPLE_IMAGE = os.path.join(REPO_ROOT, "assets", "test_00002330.jpg")
FLIP_SUFFIX = " + flip test"


def make_video(path, frames=300, size=VIDEO_SIZE, pattern=os.path.join(REPO_ROOT, "assets", "*.jpg")):
    """Write an mp4 clip of ``frames`` frames of ``size`` (w, h): a camera panning and zooming over each sample
    image in turn. Returns the path."""
    images = [image for image in (cv2.imread(name) for name in export.sample_image_paths(pattern)) if image is not None]
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
    from components.detector import postprocess

    def call():
        return [value.numpy() for value in postprocess(predictions, detector.priors, detector.cfg, score_threshold)]
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
    from components.detector import Detections, postprocess
    from components.drawing import draw_detections
    capture = cv2.VideoCapture(video_path)
    ok, frame = capture.read()
    if not ok:
        raise OSError(f"{video_path}: cannot read the benchmark video")
    detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))   # warm-up
    stages = {name: [] for name in ("decode", "preprocess", "infer", "postprocess", "draw")}
    threshold = detector.cfg["score_threshold"]
    names = list(detector.cfg["labels_list"])
    frames = 0
    start = time.perf_counter()
    while ok:
        t0 = time.perf_counter()
        batch = detector.preprocess([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)])
        t1 = time.perf_counter()
        predictions = detector.predict_raw(batch)
        t2 = time.perf_counter()
        boxes, scores, classes, valid = (value.numpy() for value in
                                         postprocess(predictions, detector.priors, detector.cfg, threshold))
        count = int(valid[0])
        detections = Detections(detector.to_pixels(boxes[0, :count], frame.shape), scores[0, :count],
                                classes[0, :count], names)
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
        return "%.2f / %.2f / %.2f" % os.getloadavg()
    except OSError:
        return "n/a"


def versions():
    import tensorflow as tf
    parts = [f"Python {platform.python_version()}", f"TensorFlow {tf.__version__}"]
    for module, label in (("ai_edge_litert", "ai-edge-litert"), ("onnxruntime", "onnxruntime"), ("tf2onnx", "tf2onnx")):
        try:
            imported = __import__(module)
            parts.append(f"{label} {getattr(imported, '__version__', '?')}")
        except ImportError:
            parts.append(f"{label} not installed")
    return ", ".join(parts)


def format_table(rows):
    header = ["format", "runtime", "model file", "size (MiB)", "median ms", "p90 ms", "images/s", "val mAP",
              "flip test median ms", "flip test val mAP"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(key, "")) for key in header) + " |")
    return lines


def run(args, log=print):
    """Export, time and evaluate; returns the Markdown report text."""
    from components.config import cfg as default_cfg
    from components.detector import Detector, evaluate_tfrecord, resolve_model_path
    model_file = resolve_model_path(args.model_path)
    load_before = load_average()
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    temporary_exports = args.export_dir is None
    export_dir = tempfile.mkdtemp(prefix="benchmark-exports-") if temporary_exports else args.export_dir
    os.makedirs(export_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(model_file))[0]
    try:
        paths = {"keras": model_file}
        calibration = None
        for fmt in FORMATS[1:]:
            if fmt not in args.formats:
                continue
            output = os.path.join(export_dir, stem + export.OUTPUT_SUFFIX[fmt])
            if fmt == "tflite_int8":
                from components.detector import load_model_config
                size = tuple(load_model_config(model_file)["input_size"])
                log(f"calibrating tflite_int8 on {args.num_calibration} images of {args.calibration_tfrecord}")
                calibration = export.calibration_images(args.calibration_tfrecord, size, args.num_calibration)
            log(f"exporting {fmt} -> {output}")
            report = export.export_model_file(model_file, fmt, output, calibration=calibration, log=log)
            for line in export.describe(report)[1:]:
                log(f"  {line}")
            paths[fmt] = output

        sample = cv2.cvtColor(cv2.imread(SAMPLE_IMAGE), cv2.COLOR_BGR2RGB)
        rows, detectors, medians, maps = [], {}, {}, {}
        variants = []
        for fmt in FORMATS:
            if fmt in paths:
                variants.append((fmt, fmt, {}))
                if fmt.startswith("tflite"):
                    variants.append((fmt, f"{fmt} (XNNPACK off)", {"xnnpack": False}))
        single_cfg = dict(default_cfg, flip_test=False)
        loaded = {label: Detector.from_path(paths[fmt], single_cfg, **options) for fmt, label, options in variants}
        for fmt, label, options in variants:     # the same runtime with the flip test, timed alongside
            if options:
                continue
            flip = Detector(loaded[label].runtime, dict(loaded[label].cfg, flip_test=True))
            if flip.flip_test:                   # not on grids without mirror symmetry (it would be one pass)
                loaded[label + FLIP_SUFFIX] = flip
        batch = loaded["keras"].preprocess([sample])
        seconds = {label: [] for label in loaded}
        for label, detector in loaded.items():
            time_predict(detector, batch, 0, args.warmup)
        per_round = -(-args.runs // TIMING_ROUNDS)
        for round_index in range(TIMING_ROUNDS):
            log(f"timing round {round_index + 1}/{TIMING_ROUNDS}: {per_round} runs of each of {', '.join(loaded)}")
            for label, detector in loaded.items():
                seconds[label].extend(time_predict(detector, batch, per_round, 2))
        for fmt, label, options in variants:
            detector = loaded[label]
            median = 1000 * float(np.median(seconds[label]))
            p90 = 1000 * float(np.percentile(seconds[label], 90))
            row = {"format": label, "runtime": RUNTIME_NAMES[fmt] + (" + XNNPACK" if fmt.startswith("tflite")
                                                                    and not options else ""),
                   "model file": os.path.basename(paths[fmt]) + ("/" if os.path.isdir(paths[fmt]) else ""),
                   "size (MiB)": f"{export.path_size(paths[fmt]) / 2 ** 20:.2f}",
                   "median ms": f"{median:.2f}", "p90 ms": f"{p90:.2f}", "images/s": f"{1000 / median:.0f}"}
            if options:
                row["val mAP"] = row["flip test val mAP"] = "(same model)"
            else:
                flip = loaded.get(label + FLIP_SUFFIX)
                if flip is None:
                    row["flip test median ms"] = row["flip test val mAP"] = "n/a (priors not symmetric)"
                else:
                    row["flip test median ms"] = f"{1000 * float(np.median(seconds[label + FLIP_SUFFIX])):.2f}"
                if args.skip_map:
                    row["val mAP"] = row["flip test val mAP"] = "skipped"
                else:
                    log(f"val mAP of {label} on {args.val_tfrecord}, single pass and flip test")
                    maps[fmt] = evaluate_tfrecord(detector, args.val_tfrecord).mean_ap or 0.0
                    row["val mAP"] = f"{100 * maps[fmt]:.2f}%"
                    if flip is not None:
                        maps[fmt + FLIP_SUFFIX] = evaluate_tfrecord(flip, args.val_tfrecord).mean_ap or 0.0
                        row["flip test val mAP"] = f"{100 * maps[fmt + FLIP_SUFFIX]:.2f}%"
                detectors[fmt], medians[fmt] = detector, median
                if flip is not None:
                    detectors[fmt + FLIP_SUFFIX] = flip
            rows.append(row)

        keras = detectors["keras"]
        predictions = keras.predict_raw(keras.preprocess([sample]))
        post_default = time_postprocess(keras, predictions, keras.cfg["score_threshold"], args.runs)
        post_low = time_postprocess(keras, predictions, 0.01, args.runs)

        fastest = min(medians, key=medians.get)
        video_rows = []
        with tempfile.TemporaryDirectory(prefix="benchmark-video-") as folder:
            video = make_video(os.path.join(folder, "pan.mp4"), args.video_frames)
            for fmt in dict.fromkeys(["keras", fastest]):
                for label in (fmt, fmt + FLIP_SUFFIX):
                    if label in detectors:
                        log(f"video end to end with {label}")
                        fps, stages, frames = video_throughput(detectors[label], video)
                        video_rows.append((label, fps, stages, frames))
    finally:
        if temporary_exports:
            shutil.rmtree(export_dir, ignore_errors=True)
    load_after = load_average()

    lines = [f"# Benchmark of {model_file}", "",
             f"{started}; {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}); {versions()}.",
             f"Batch 1, {keras.input_size[0]}x{keras.input_size[1]} input, model only (`predict_raw`), "
             f"{TIMING_ROUNDS * -(-args.runs // TIMING_ROUNDS)} timed runs after {args.warmup} warm-up runs (in "
             f"{TIMING_ROUNDS} rounds, the formats in turn); every runtime on 2 threads. "
             f"Load average (1/5/15 min) before: {load_before}, after: {load_after}.", ""]
    lines += format_table(rows)
    lines += ["", f"Shared post-processing (decode + class-wise NMS, batch 1, `components.detector.postprocess`): "
                  f"{post_default:.2f} ms at score threshold {keras.cfg['score_threshold']:g} (inference), "
                  f"{post_low:.2f} ms at 0.01 (mAP)."]
    if "keras" in maps and "tflite_int8" in maps:
        delta = 100 * (maps["tflite_int8"] - maps["keras"])
        lines.append(f"tflite_int8 val mAP vs keras: {delta:+.2f} points (target: within 1 point).")
    if "keras" + FLIP_SUFFIX in maps:
        delta = 100 * (maps["keras" + FLIP_SUFFIX] - maps["keras"])
        lines.append(f"Flip test vs single pass (keras): {delta:+.2f} points of val mAP.")
    lines += ["", f"End-to-end video ({video_rows[0][3]} frames of {VIDEO_SIZE[0]}x{VIDEO_SIZE[1]}, mp4v, decode + "
                  "preprocess + infer + NMS + draw; stage times are medians in ms per frame):", "",
              "| path | FPS | decode | preprocess | infer | postprocess | draw |", "|---|---|---|---|---|---|---|"]
    for fmt, fps, stages, _ in video_rows:
        label = fmt + (" (fastest single pass)" if fmt == fastest else "")
        lines.append(f"| {label} | {fps:.1f} | " + " | ".join(f"{stages[name]:.2f}" for name in
                                                              ("decode", "preprocess", "infer", "postprocess", "draw"))
                     + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_path", default=DEFAULT_MODEL_PATH,
                        help="a .keras model or a folder holding one (default: checkpoints/mask_detector.keras of the repository)")
    parser.add_argument("--val_tfrecord", default=DEFAULT_VAL_TFRECORD, help="validation TFRecord for the mAP column")
    parser.add_argument("--skip_map", action="store_true", help="do not compute the validation mAP")
    parser.add_argument("--output", default="benchmark.md", help="where the Markdown report is written")
    parser.add_argument("--export_dir", default=None, help="keep the exports here (default: temporary folder)")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help=f"comma-separated subset of {','.join(FORMATS)} (keras is always included)")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per format")
    parser.add_argument("--warmup", type=int, default=20, help="untimed warm-up runs per format")
    parser.add_argument("--video_frames", type=int, default=300, help="frames of the end-to-end video")
    parser.add_argument("--calibration_tfrecord", default=export.DEFAULT_CALIBRATION_TFRECORD)
    parser.add_argument("--num_calibration", type=int, default=export.DEFAULT_NUM_CALIBRATION)
    args = parser.parse_args(argv)
    try:
        args.formats = {name.strip() for name in args.formats.split(",") if name.strip()} | {"keras"}
        unknown = args.formats - set(FORMATS)
        if unknown:
            raise ValueError(f"--formats: unknown {', '.join(sorted(unknown))}; expected {', '.join(FORMATS)}")
        if args.runs < 1 or args.warmup < 0 or args.video_frames < 2:
            raise ValueError("--runs must be >= 1, --warmup >= 0 and --video_frames >= 2")
        if not os.path.exists(args.model_path):
            raise FileNotFoundError(f"{args.model_path}: model not found")
        if not args.skip_map and not os.path.isfile(args.val_tfrecord):
            raise FileNotFoundError(f"{args.val_tfrecord}: validation TFRecord not found (or pass --skip_map)")
        report = run(args, log=lambda message: print(message, file=sys.stderr))
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        write_text_atomically(args.output, report)
    except (ValueError, OSError) as error:   # ExportError, ModelLoadError included
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(report)
    print(f"report written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
