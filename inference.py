"""Detect masked and unmasked faces in an image, a video file or a camera stream.

    python inference.py [--model_path checkpoints/] --img_path IMG [--output OUT] [--show]
    python inference.py [--model_path checkpoints/] --video PATH [--output OUT.mp4] [--show]
    python inference.py [--model_path checkpoints/] --camera [INDEX] [--output OUT.mp4]

``--model_path`` is a ``.keras`` file or a folder (its newest ``.keras`` file is used); the JSON saved beside
the model fixes its input size, anchors and labels, and ``--<config key> VALUE`` overrides the rest (e.g.
``--score_threshold 0.6``). Image mode writes the annotated image (default ``assets/out_<name>``) and prints
one line per face, ``<class> <score> <left> <top> <right> <bottom>`` in pixels of the original image.
Video and camera modes draw a smoothed FPS counter, write ``--output`` (mp4) when given and show a window
with ``--show`` (the camera shows one unless ``--output`` is given); press q or Ctrl-C to stop.
"""
import argparse
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

from components.config import add_config_arguments, config_from_args  # noqa: E402
from components.drawing import draw_detections  # noqa: E402
from dataset.voc import VOCError, read_image_bgr  # noqa: E402

DEFAULT_MODEL_PATH = os.path.join(REPO_ROOT, "checkpoints")
WINDOW_NAME = "face mask detector"
FPS_SMOOTHING = 0.1        # weight of the newest frame in the exponential moving average of the FPS
FALLBACK_VIDEO_FPS = 25.0  # written to the output when the source does not report its frame rate
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


def temporary_path(path):
    """A temporary name in ``path``'s folder that keeps its extension (OpenCV picks formats by it)."""
    root, extension = os.path.splitext(path)
    return f"{root}.tmp-{os.getpid()}{extension}"


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
    temporary = temporary_path(path)
    try:
        encoded.tofile(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


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


def summary_line(detections, class_names, milliseconds):
    """``N faces: M mask, K unmask; model X ms``."""
    labels = detections.labels()
    counts = ", ".join(f"{labels.count(name)} {name}" for name in class_names)
    return f"{len(labels)} face{'' if len(labels) == 1 else 's'}: {counts}; model {milliseconds:.1f} ms"


def load_detector(model_path, cfg):
    """Detector for ``model_path``; the model's saved config wins for its own keys (input size, anchors...)."""
    if not os.path.exists(model_path):
        raise UsageError(f"{model_path}: model not found")
    from components.detector import Detector  # imports TensorFlow: only once the cheap checks passed
    return Detector.from_path(model_path, cfg)


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
        temporary = temporary_path(output_path)
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_path", default=DEFAULT_MODEL_PATH,
                        help="a .keras model or a folder holding one (default: checkpoints/ of the repository)")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--img_path", help="image to annotate")
    mode.add_argument("--video", help="video file to annotate frame by frame")
    mode.add_argument("--camera", nargs="?", const=0, type=camera_index, metavar="INDEX",
                      help="camera index (default 0; 'True' also means 0)")
    parser.add_argument("--output", default=None,
                        help="annotated output: image (default assets/out_<name>) or .mp4 for video/camera")
    parser.add_argument("--show", action="store_true", help="show the result in a window")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        if args.img_path is not None:
            image_bgr = read_image_bgr(args.img_path)
            output_path = args.output or os.path.join(REPO_ROOT, "assets", f"out_{os.path.basename(args.img_path)}")
            if args.show:
                open_window()
            detector = load_detector(args.model_path, cfg)
            detections, milliseconds = run_image(detector, image_bgr, output_path, args.show)
            for line in detection_lines(detections):
                print(line)
            print(summary_line(detections, detector.cfg["labels_list"][1:], milliseconds))
            print(f"annotated image written to {output_path}")
            return 0
        show = args.show or (args.camera is not None and not args.output)
        if show:
            open_window()
        capture, first_frame = open_capture(args.video if args.video is not None else args.camera)
        try:
            detector = load_detector(args.model_path, cfg)
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


if __name__ == "__main__":
    sys.exit(main())
