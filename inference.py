"""Detect masked and unmasked faces in an image, a video file or a camera stream.

    python inference.py [--model_path checkpoints/mask_detector.keras] --img_path IMG [--output OUT] [--show]
    python inference.py [--model_path checkpoints/mask_detector.keras] --video PATH [--output OUT.mp4] [--show]
    python inference.py [--model_path checkpoints/mask_detector.keras] --camera [INDEX] [--output OUT.mp4]
    python inference.py [--model_path checkpoints/mask_detector.keras] --img_dir DIR [--output_dir OUT]

``--model_path`` is a model in any format ``export.py`` writes, the runtime picked by its type: a ``.keras``
file (TensorFlow), a SavedModel folder (TensorFlow), a ``.tflite`` file (LiteRT, float or int8) or an
``.onnx`` file (onnxruntime); any other folder means its newest ``.keras`` file. The JSON saved beside the
model fixes its input size, anchors and labels, and ``--<config key> VALUE`` overrides the rest (e.g.
``--score_threshold 0.6``). Image mode writes the annotated image (default ``assets/out_<name>``) and prints
one line per face, ``<class> <score> <left> <top> <right> <bottom>`` in pixels of the original image.
Video and camera modes draw a smoothed FPS counter, write ``--output`` (mp4) when given and show a window
with ``--show`` (the camera shows one unless ``--output`` is given); press q or Ctrl-C to stop.

Batch mode annotates every file of ``--img_dir`` (not its subfolders) into ``--output_dir`` (default
``<DIR>_detections``) under the same name, with a progress bar, and writes ``detections.json`` (per image:
``boxes`` in pixels, ``classes``, ``scores``) and ``summary.csv`` (image, faces, then one column per class of
the model, e.g. mask, unmask). Files that
are not readable images are skipped with a one-line reason each and counted. Each finished image is appended
(and flushed) to ``detections.part.jsonl``; on Ctrl-C the results so far are assembled into the two outputs,
and running the same command again resumes: images already in the part file are not redone (unless the model
or ``--score_threshold`` changed). A run that finishes removes the part file.
"""
import argparse
import csv
import io
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")   # no WARN lines when a camera index does not exist
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # FFmpeg: fatal only (we report unreadable videos)

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, REPO_ROOT)

import cv2  # noqa: E402
from tqdm import tqdm  # noqa: E402

from components.atomic_io import atomic_path, temporary_path, write_text_atomically  # noqa: E402
from components.config import DETECTION_KEYS, add_config_arguments, config_from_args, given_settings  # noqa: E402
from components.drawing import ANNOTATED_PREFIX, draw_detections  # noqa: E402
from dataset.voc import VOCError, read_image_bgr  # noqa: E402

DEFAULT_MODEL_PATH = os.path.join(REPO_ROOT, "checkpoints", "mask_detector.keras")   # the shipped 2-class model
WINDOW_NAME = "face mask detector"
FPS_SMOOTHING = 0.1        # weight of the newest frame in the exponential moving average of the FPS
FALLBACK_VIDEO_FPS = 25.0  # written to the output when the source does not report its frame rate
DETECTIONS_JSON = "detections.json"
SUMMARY_CSV = "summary.csv"
PART_FILE = "detections.part.jsonl"
QUIT_KEYS = (ord("q"), ord("Q"), 27)  # q or Esc


class UsageError(ValueError):
    """A command-line mistake; the message names the path or flag and the problem."""


def camera_index(text):
    """``--camera`` value -> camera index; a literal ``True`` (the original project's flag) means 0."""
    if text.strip().lower() == "true":
        return 0
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a camera index or True, got {text!r}") from None


def write_image_atomically(path, image_bgr):
    """Encode ``image_bgr`` in the format of ``path``'s extension and write it through a temporary file."""
    extension = os.path.splitext(path)[1]
    try:
        ok, encoded = cv2.imencode(extension or ".jpg", image_bgr)
    except cv2.error:
        ok = False
    if not ok:
        raise UsageError(f"{path}: cannot write an image with extension {extension!r} (use .jpg or .png)")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as temporary:
        encoded.tofile(temporary)


def open_window():
    """Create the display window; raises UsageError when there is no display or OpenCV has no GUI."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UsageError("--show: no display (DISPLAY is not set); use --output instead")
    try:
        cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise UsageError("--show: cannot open a window (this OpenCV build has no GUI support, e.g. "
                         "opencv-python-headless); use --output instead") from None


def detection_lines(detections):
    """``<class> <score> <left> <top> <right> <bottom>`` per detection, integer pixels."""
    return [f"{label} {score:.3f} " + " ".join(str(int(round(value))) for value in box)
            for label, score, box in zip(detections.labels(), detections.scores, detections.boxes)]


def summary_line(detections, class_names, milliseconds, flip_test=False):
    """``N faces: M mask, K unmask; model X ms`` (``+ flip test`` when the mirrored image was run too)."""
    labels = detections.labels()
    counts = ", ".join(f"{labels.count(name)} {name}" for name in class_names)
    return (f"{len(labels)} face{'' if len(labels) == 1 else 's'}: {counts}; model {milliseconds:.1f} ms"
            + (" (+ flip test)" if flip_test else ""))


def load_detector(model_path, cfg, input_size=None):
    """Detector for ``model_path``; the model's saved config wins for its own keys (anchors, labels...), and
    for its input size unless ``input_size`` (h, w) is given (a .keras model runs at any size)."""
    if not os.path.exists(model_path):
        raise UsageError(f"{model_path}: model not found")
    from components.detector import Detector  # imports TensorFlow: only once the cheap checks passed
    return Detector.from_path(model_path, cfg, input_size=input_size)


def run_image(detector, image_bgr, output_path, show):
    """Detect, draw and save one image. Returns (Detections, milliseconds of one detection pass).

    The timed pass follows an untimed warm-up pass, so graph tracing is not counted.
    """
    image_rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    detector.detect(image_rgb)
    start = time.perf_counter()
    detections = detector.detect(image_rgb)
    milliseconds = 1000.0 * (time.perf_counter() - start)
    annotated = draw_detections(image_bgr, detections)
    write_image_atomically(output_path, annotated)
    if show:
        cv2.imshow(WINDOW_NAME, annotated)
        while cv2.waitKey(100) & 0xFF not in QUIT_KEYS:
            if cv2.getWindowProperty(WINDOW_NAME, cv2.WND_PROP_VISIBLE) < 1:
                break
        cv2.destroyAllWindows()
    return detections, milliseconds


def open_capture(source):
    """Open a video path or camera index. Returns (cv2.VideoCapture, its first frame BGR [H, W, 3]).

    Raises UsageError when the file is missing, the source cannot be opened or gives no frame.
    """
    name = source if isinstance(source, str) else f"camera {source}"
    if isinstance(source, str) and not os.path.isfile(source):
        raise UsageError(f"{name}: video not found")
    capture = cv2.VideoCapture(source)
    ok, frame = capture.read() if capture.isOpened() else (False, None)
    if not ok or frame is None:
        capture.release()
        raise UsageError(f"{name}: not a readable video" if isinstance(source, str)
                         else f"{name}: cannot open the camera or read a frame from it")
    return capture, frame


def run_stream(detector, capture, first_frame, output_path, show, progress=True):
    """Detect in ``first_frame`` and every further frame of ``capture``; draw boxes and a smoothed FPS
    (exponential moving average of the measured per-frame rate), write and/or show the frames.

    The output (mp4v) is written to a temporary name and renamed when the stream ends, also on q / Ctrl-C
    (not on an error). Releases ``capture``. Returns (frames processed, mean FPS over the loop, stopped by the user).
    """
    ok, frame = True, first_frame
    writer, temporary = None, None
    if output_path:
        source_fps = capture.get(cv2.CAP_PROP_FPS)
        fps = source_fps if source_fps and 1.0 <= source_fps <= 240.0 else FALLBACK_VIDEO_FPS
        os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
        temporary = temporary_path(output_path, suffix=os.path.splitext(output_path)[1])  # OpenCV picks formats by it
        height, width = frame.shape[:2]
        writer = cv2.VideoWriter(temporary, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not writer.isOpened():
            raise UsageError(f"{output_path}: cannot write a video here (use a .mp4 name)")
    detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))  # warm-up (graph tracing), not timed
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    frames, smoothed_fps, stopped, finished = 0, None, False, False
    bar = tqdm(total=total if total > 0 else None, unit="frame", disable=not progress)
    start = previous = time.perf_counter()
    try:
        while ok and frame is not None:
            detections = detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            now = time.perf_counter()
            instant_fps = 1.0 / max(now - previous, 1e-6)
            previous = now
            smoothed_fps = instant_fps if smoothed_fps is None else (
                FPS_SMOOTHING * instant_fps + (1.0 - FPS_SMOOTHING) * smoothed_fps)
            annotated = draw_detections(frame, detections, fps=smoothed_fps)
            if writer is not None:
                writer.write(annotated)
            frames += 1
            bar.update(1)
            if show:
                cv2.imshow(WINDOW_NAME, annotated)
                if cv2.waitKey(1) & 0xFF in QUIT_KEYS:
                    stopped = True
                    break
            ok, frame = capture.read()
        finished = True
    except KeyboardInterrupt:
        stopped = finished = True
    finally:
        bar.close()
        elapsed = time.perf_counter() - start
        capture.release()
        if show:
            cv2.destroyAllWindows()
        if writer is not None:
            writer.release()
            if finished and frames:
                os.replace(temporary, output_path)
            elif os.path.exists(temporary):
                os.remove(temporary)
    return frames, frames / max(elapsed, 1e-6), stopped


def list_image_files(img_dir):
    """Names of the regular, non-hidden files directly in ``img_dir``, sorted."""
    return sorted(name for name in os.listdir(img_dir)
                  if not name.startswith(".") and os.path.isfile(os.path.join(img_dir, name)))


def batch_header(detector, score_threshold):
    """What a part file's results depend on: the model file (path, size, modification time) and threshold."""
    path = getattr(detector, "model_path", None)
    path = os.path.abspath(path) if path else None
    stat = os.stat(path) if path and os.path.exists(path) else None
    return {"model": path, "model_bytes": stat.st_size if stat else None,
            "model_mtime": stat.st_mtime if stat else None, "score_threshold": float(score_threshold)}


def image_record(name, image_bgr, detections):
    """One image's entry of detections.json."""
    height, width = image_bgr.shape[:2]
    return {"image": name, "width": int(width), "height": int(height),
            "boxes": [[round(float(value), 2) for value in box] for box in detections.boxes],
            "classes": detections.labels(), "scores": [round(float(score), 6) for score in detections.scores]}


def read_part_file(path, header):
    """{image name: record} of a part file written with the same ``header``; {} when there is none, it is
    unreadable, or it belongs to another model or threshold. A torn last line is ignored."""
    if not os.path.isfile(path):
        return {}
    records = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().splitlines()
    try:
        if not lines or json.loads(lines[0]).get("header") != header:
            return {}
    except (ValueError, AttributeError):
        return {}
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("image"), str):
            records[record["image"]] = record
    return records


def _ends_with_newline(path):
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() == 0:
            return True
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def write_batch_outputs(output_dir, header, records, skipped, class_names):
    """(Re)write detections.json and summary.csv from ``records`` (image name -> record), atomically."""
    ordered = [records[name] for name in sorted(records)]
    skipped = [{"image": name, "reason": reason} for name, reason in skipped]
    # one image per line: readable, and still one JSON document
    text = (f'{{"model": {json.dumps(header["model"])}, "score_threshold": {json.dumps(header["score_threshold"])},\n'
            ' "images": [\n  ' + ",\n  ".join(json.dumps(record) for record in ordered) + '\n ],\n'
            ' "skipped": [\n  ' + ",\n  ".join(json.dumps(item) for item in skipped) + '\n ]\n}\n')
    write_text_atomically(os.path.join(output_dir, DETECTIONS_JSON), text, newline="")
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["image", "faces", *class_names])
    for record in ordered:
        writer.writerow([record["image"], len(record["classes"]),
                         *(record["classes"].count(name) for name in class_names)])
    write_text_atomically(os.path.join(output_dir, SUMMARY_CSV), table.getvalue(), newline="")


def annotated_path(output_dir, name):
    """Where the annotated copy of ``name`` goes: same name, or ``<name>.jpg`` when OpenCV cannot write
    that extension."""
    path = os.path.join(output_dir, name)
    try:
        if cv2.haveImageWriter(path):
            return path
    except cv2.error:
        pass
    return path + ".jpg"


def run_batch(detector, img_dir, output_dir, progress=True, log=None):
    """Annotate every file of ``img_dir`` into ``output_dir`` and write detections.json and summary.csv.

    Resumes from ``output_dir/detections.part.jsonl`` when it was written with the same model and threshold.
    On KeyboardInterrupt the outputs are assembled from the finished images and the interrupt re-raised.
    Returns (images done in this run, images resumed, [(name, reason)] skipped).
    """
    log = log or (lambda message: tqdm.write(message, file=sys.stderr))
    os.makedirs(output_dir, exist_ok=True)
    header = batch_header(detector, detector.cfg["score_threshold"])
    part_path = os.path.join(output_dir, PART_FILE)
    records = read_part_file(part_path, header)
    resumed = len(records)
    names = list_image_files(img_dir)
    todo = [name for name in names if name not in records]
    if resumed:
        log(f"resuming: {resumed} images already done ({part_path})")
    skipped = []
    class_names = list(detector.cfg["labels_list"][1:])
    torn = resumed and not _ends_with_newline(part_path)
    with open(part_path, "a" if resumed else "w", encoding="utf-8") as part:
        if torn:
            part.write("\n")              # a torn last line (killed mid-write) stays a line of its own
        if not resumed:
            part.write(json.dumps({"header": header}) + "\n")
            part.flush()
        try:
            for name in tqdm(todo, desc="images", unit="img", disable=not progress, dynamic_ncols=True):
                path = os.path.join(img_dir, name)
                try:
                    image_bgr = read_image_bgr(path)
                except VOCError as error:
                    skipped.append((name, str(error).split(": ", 1)[-1]))
                    log(f"skipped {error}")
                    continue
                detections = detector.detect(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
                write_image_atomically(annotated_path(output_dir, name), draw_detections(image_bgr, detections))
                record = image_record(name, image_bgr, detections)
                part.write(json.dumps(record) + "\n")
                part.flush()
                records[name] = record
        except KeyboardInterrupt:
            part.flush()
            write_batch_outputs(output_dir, header, records, skipped, class_names)
            raise
    write_batch_outputs(output_dir, header, records, skipped, class_names)
    os.remove(part_path)
    return len(records) - resumed, resumed, skipped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_path", default=DEFAULT_MODEL_PATH,
                        help="a .keras, .tflite or .onnx model, a SavedModel folder, or a folder holding a .keras "
                             "model (default: checkpoints/mask_detector.keras of the repository)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--img_path", help="image to annotate")
    mode.add_argument("--img_dir", help="folder whose images are all annotated (batch mode)")
    mode.add_argument("--video", help="video file to annotate frame by frame")
    mode.add_argument("--camera", nargs="?", const=0, type=camera_index, metavar="INDEX",
                      help="camera index (default 0; 'True' also means 0)")
    parser.add_argument("--output", default=None,
                        help="annotated output: image (default assets/out_<name>) or .mp4 for video/camera")
    parser.add_argument("--output_dir", default=None,
                        help="batch mode: annotated images, detections.json and summary.csv (default <DIR>_detections)")
    parser.add_argument("--show", action="store_true", help="show the result in a window")
    add_config_arguments(parser, keys=DETECTION_KEYS)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        input_size = given_settings(args).get("input_size")
        if args.img_path is not None:
            image_bgr = read_image_bgr(args.img_path)
            output_path = args.output or os.path.join(REPO_ROOT, "assets",
                                                      ANNOTATED_PREFIX + os.path.basename(args.img_path))
            if args.show:
                open_window()
            detector = load_detector(args.model_path, cfg, input_size)
            detections, milliseconds = run_image(detector, image_bgr, output_path, args.show)
            for line in detection_lines(detections):
                print(line)
            print(summary_line(detections, detector.cfg["labels_list"][1:], milliseconds, detector.flip_test))
            print(f"annotated image written to {output_path}")
            return 0
        if args.img_dir is not None:
            return run_batch_mode(args, cfg, input_size)
        show = args.show or (args.camera is not None and not args.output)
        if show:
            open_window()
        capture, first_frame = open_capture(args.video if args.video is not None else args.camera)
        try:
            detector = load_detector(args.model_path, cfg, input_size)
            frames, mean_fps, stopped = run_stream(detector, capture, first_frame, args.output, show)
        finally:
            capture.release()
    except (VOCError, ValueError, OSError) as error:  # VOCError, ModelLoadError and UsageError included
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(f"{frames} frames processed, mean {mean_fps:.1f} FPS{' (stopped by user)' if stopped else ''}")
    if args.output and frames:
        print(f"annotated video written to {args.output}")
    return 0


def run_batch_mode(args, cfg, input_size=None):
    """``--img_dir``: checks, then :func:`run_batch`; returns the exit status (130 when interrupted)."""
    if not os.path.isdir(args.img_dir):
        raise UsageError(f"{args.img_dir}: image folder not found")
    if not list_image_files(args.img_dir):
        raise UsageError(f"{args.img_dir}: image folder holds no files")
    if args.show:
        raise UsageError("--show: not available with --img_dir")
    output_dir = args.output_dir or os.path.normpath(args.img_dir) + "_detections"
    if os.path.realpath(output_dir) == os.path.realpath(args.img_dir):
        raise UsageError(f"{output_dir}: --output_dir must differ from --img_dir (the images would be overwritten)")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UsageError(f"{output_dir}: not a folder")
    detector = load_detector(args.model_path, cfg, input_size)
    try:
        done, resumed, skipped = run_batch(detector, args.img_dir, output_dir)
    except KeyboardInterrupt:
        print(f"error: interrupted; finished images are in {os.path.join(output_dir, DETECTIONS_JSON)}, run the "
              "same command again to resume", file=sys.stderr)
        return 130
    print(f"{done + resumed} images annotated ({resumed} from an earlier run), {len(skipped)} skipped (unreadable)")
    print(f"results written to {os.path.join(output_dir, DETECTIONS_JSON)} and {os.path.join(output_dir, SUMMARY_CSV)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
