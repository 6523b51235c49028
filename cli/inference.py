"""Detect masked and unmasked faces in an image, a video file or a camera stream.

    python inference.py [--model_path checkpoints/mask_detector.keras] --img_path IMG [--output OUT] [--show]
    python inference.py [--model_path checkpoints/mask_detector.keras] --video PATH|URL|INDEX [--output OUT.mp4]
                        [--show]
    python inference.py [--model_path checkpoints/mask_detector.keras] --camera [INDEX|URL] [--output OUT.mp4]
    python inference.py [--model_path checkpoints/mask_detector.keras] --img_dir DIR [--output_dir OUT]

``--model_path`` is a model in any format ``export.py`` writes, the runtime picked by its type: a ``.keras``
file (TensorFlow), a SavedModel folder (TensorFlow), a ``.tflite`` file (LiteRT, float or int8) or an
``.onnx`` file (onnxruntime); any other folder means its ``mask_detector.keras`` (or its only model). The spec
inside the model fixes its input size, anchors and labels, and ``--<config key> VALUE`` overrides the rest (e.g.
``--score_threshold 0.6``). Image mode writes the annotated image (default ``runs/out_<name>``) and prints
one line per face, ``<class> <score> <left> <top> <right> <bottom>`` in pixels of the original image.
Video and camera modes draw a smoothed FPS counter, write ``--output`` (mp4) when given and show a window
with ``--show`` (the camera shows one unless ``--output`` is given); press q or Ctrl-C to stop. Both take a
file, a camera index or a stream URL (``rtsp://``, ``http(s)://``, e.g. an MJPG camera); a live source that
drops is reopened up to ``--stream_reconnect_attempts`` times with a growing wait (``runtime/video_source.py``)
before the run ends with exit status 1 (the frames so far are written); a file that ends is just the end.

Batch mode annotates every file of ``--img_dir`` (not its subfolders) into ``--output_dir`` (default
``runs/<DIR name>_detections``) under the same name, with a progress bar, and writes ``detections.json`` (per image:
``boxes`` in pixels, ``classes``, ``scores``) and ``summary.csv`` (image, faces, then one column per class of
the model, e.g. mask, unmask). Files that
are not readable images are skipped with a one-line reason each and counted. Each finished image is appended
(and flushed) to ``detections.part.jsonl``; on Ctrl-C the results so far are assembled into the two outputs,
and running the same command again resumes: images already in the part file are not redone (unless the model
or ``--score_threshold`` changed). A run that finishes removes the part file.
"""
import argparse
import os
import sys

from tqdm import tqdm

import cli
from components.config import DETECTION_KEYS, STREAM_KEYS
from components.drawing import ANNOTATED_PREFIX
from components.images import read_image_bgr
from runtime.batch import DETECTIONS_JSON, SUMMARY_CSV, list_image_files, run_batch
from runtime.media import (
    UsageError,
    detection_lines,
    open_video_source,
    open_window,
    run_image,
    run_stream,
    summary_line,
)
from runtime.video_source import is_stream_url, parse_source

DEFAULT_MODEL_PATH = cli.DEFAULT_MODEL_PATH


def camera_source(text):
    """``--camera`` value -> camera index or stream URL; a literal ``True`` (the original project's flag) means 0."""
    if text.strip().lower() == "true":
        return 0
    if is_stream_url(text.strip()):
        return text.strip()
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a camera index, a stream URL or True, got {text!r}") from None


def load_detector(model_path, settings, input_size=None):
    """Detector for ``model_path``; the model's spec wins over ``settings.model`` (anchors, classes...) and
    for the input size unless ``input_size`` (h, w) is given."""
    if not os.path.exists(model_path):
        raise UsageError(f"{model_path}: model not found")
    from runtime.detector import Detector  # imports TensorFlow: only once the cheap checks passed
    detector = Detector.from_path(model_path, settings, input_size)
    cli.print_notes(detector)
    return detector


def build_parser():
    parser = cli.parser(__doc__, keys=DETECTION_KEYS + STREAM_KEYS)
    parser.add_argument("--model_path", default=DEFAULT_MODEL_PATH,
                        help="a .keras, .tflite or .onnx model, a SavedModel folder, or a folder holding a .keras "
                             f"model ({cli.DEFAULT_MODEL_HELP})")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--img_path", help="image to annotate")
    mode.add_argument("--img_dir", help="folder whose images are all annotated (batch mode)")
    mode.add_argument("--video", help="video file, stream URL (rtsp://, http(s)://) or camera index to annotate "
                                      "frame by frame")
    mode.add_argument("--camera", nargs="?", const=0, type=camera_source, metavar="INDEX|URL",
                      help="camera index or stream URL (default 0; 'True' also means 0)")
    parser.add_argument("--output", default=None,
                        help="annotated output: image (default runs/out_<name> of the repository) or .mp4 for "
                             "video/camera")
    parser.add_argument("--output_dir", default=None,
                        help="batch mode: annotated images, detections.json and summary.csv "
                             "(default runs/<DIR name>_detections of the repository)")
    parser.add_argument("--show", action="store_true", help="show the result in a window")
    return parser


def run_image_mode(args, settings):
    """``--img_path``: detect, draw, write and print one image's detections."""
    image_bgr = read_image_bgr(args.img_path)
    output_path = args.output or cli.runs_path(ANNOTATED_PREFIX + os.path.basename(args.img_path))
    if args.show:
        open_window()
    detector = load_detector(args.model_path, settings, cli.inference_size(args, settings))
    detections, milliseconds = run_image(detector, image_bgr, output_path, args.show)
    for line in detection_lines(detections):
        print(line)
    print(summary_line(detections, detector.settings.model.labels_list[1:], milliseconds, detector.flip_test,
                       detector.test_scales))
    print(f"annotated image written to {output_path}")


def run_stream_mode(args, settings):
    """``--video`` / ``--camera``: annotate every frame, show and / or write them."""
    show = args.show or (args.camera is not None and not args.output)
    if show:
        open_window("--show" if args.show else "--camera")
    source = parse_source(args.video) if args.video is not None else args.camera
    capture, first_frame = open_video_source(source, settings.stream,
                                             log=lambda message: tqdm.write(message, file=sys.stderr))
    try:
        detector = load_detector(args.model_path, settings, cli.inference_size(args, settings))
        frames, mean_fps, stopped = run_stream(detector, capture, first_frame, args.output, show)
    finally:
        capture.release()
    print(f"{frames} frames processed, mean {mean_fps:.1f} FPS{' (stopped by user)' if stopped else ''}")
    if args.output and frames:
        print(f"annotated video written to {args.output}")
    if capture.gave_up:
        raise capture.lost_error()


def run_batch_mode(args, settings):
    """``--img_dir``: checks, then ``runtime.batch.run_batch``."""
    if not os.path.isdir(args.img_dir):
        raise UsageError(f"{args.img_dir}: image folder not found")
    if not list_image_files(args.img_dir):
        raise UsageError(f"{args.img_dir}: image folder holds no files")
    if args.show:
        raise UsageError("--show: not available with --img_dir")
    output_dir = args.output_dir or cli.runs_path(os.path.basename(os.path.abspath(args.img_dir)) + "_detections")
    if os.path.realpath(output_dir) == os.path.realpath(args.img_dir):
        raise UsageError(f"{output_dir}: --output_dir must differ from --img_dir (the images would be overwritten)")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UsageError(f"{output_dir}: not a folder")
    detector = load_detector(args.model_path, settings, cli.inference_size(args, settings))
    try:
        done, resumed, skipped = run_batch(detector, args.img_dir, output_dir)
    except KeyboardInterrupt:
        raise cli.Interrupted(f"finished images are in {os.path.join(output_dir, DETECTIONS_JSON)}, run the "
                              "same command again to resume") from None
    print(f"{done + resumed} images annotated ({resumed} from an earlier run), {len(skipped)} skipped (unreadable)")
    print(f"results written to {os.path.join(output_dir, DETECTIONS_JSON)} and {os.path.join(output_dir, SUMMARY_CSV)}")


def body(args, settings):
    if args.img_path is not None:
        return run_image_mode(args, settings)
    if args.img_dir is not None:
        return run_batch_mode(args, settings)
    return run_stream_mode(args, settings)


def main(argv=None):
    return cli.run(build_parser(), body, argv)

