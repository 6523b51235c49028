"""Write detection and ground-truth text files of a VOC split for mAP/compute_mAP.py.

    python mAP/detect.py [--model_path checkpoints/mask_detector.keras] --dataset_path VOC_DIR [--split val] [--output_dir mAP]
                         [--score_threshold 0.01]
    python mAP/detect.py --model_path checkpoints/mask_detector_3class.keras --data data/ilc2021.yaml [--root DIR]

With ``--data`` the images are those of the data file's val: sources (``--split`` names another of its lists,
e.g. train), its aliases map the labels, and its class names must be the model's (else a one-line error).
Labels that map to no class stop the run (exit 2) after a table of boxes per label, unless
``--skip_unknown_labels`` is given. ``--input_size H,W`` runs a .keras model at another input size.

For every image of ``ImageSets/Main/<split>.txt`` writes ``<output_dir>/detection-results/NAME.txt``
(``<class> <score> <left> <top> <right> <bottom>``) and ``<output_dir>/ground-truth/NAME.txt``
(``<class> <left> <top> <right> <bottom>``, plus `` difficult`` for difficult objects), in pixels of the
original image with the canonical class names (VOC labels are mapped through ``label_aliases``). The files are
written to a staging folder first; the earlier ``.txt`` files of those two folders are replaced only once every
image was processed, so a failed or interrupted run keeps them. Images that cannot be read are skipped with a reason.
``--model_path`` takes any format ``inference.py`` takes: ``.keras``, a SavedModel folder, ``.tflite`` or ``.onnx``
(the runtime is picked by the file type; see ``export.py``), or a folder whose newest ``.keras`` file is used.
"""
import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import cv2  # noqa: E402
from tqdm import tqdm  # noqa: E402

from components.atomic_io import write_text_atomically  # noqa: E402
from components.class_list import check_classes  # noqa: E402
from components.config import (DATA_KEYS, DETECTION_KEYS, IGNORE_LABEL, add_config_arguments,  # noqa: E402
                               check_aliases, config_from_args, given_settings)
from dataset.label_counts import check_known_labels, count_labels, format_label_table  # noqa: E402
from dataset.voc import VOCError, clip_boxes, find_image, parse_annotation, read_image_bgr, read_split  # noqa: E402

DEFAULT_MODEL_PATH = os.path.join(REPO_ROOT, "checkpoints", "mask_detector.keras")   # the shipped 2-class model
DEFAULT_OUTPUT_DIR = os.path.join(REPO_ROOT, "mAP")
DETECTION_DIR_NAME = "detection-results"
GROUND_TRUTH_DIR_NAME = "ground-truth"
DEFAULT_SCORE_THRESHOLD = 0.01
DEFAULT_IMAGES_PER_BATCH = 16


@dataclass
class DetectReport:
    """What a run wrote (counts) and what it skipped (one reason per image or object)."""
    images: int = 0
    detections: int = 0
    ground_truth_boxes: int = 0
    skipped_images: list = field(default_factory=list)
    skipped_objects: list = field(default_factory=list)


def format_pixels(value):
    """A pixel coordinate as short text: at most 2 decimals, no trailing zeros (``12``, ``12.5``)."""
    text = f"{float(value):.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def ground_truth_text(annotation, class_names=()):
    """Ground-truth file content: ``<class> <left> <top> <right> <bottom>[ difficult]`` per object.

    A box labelled ``ignore`` is written once per name of ``class_names`` (the model's classes, no
    background), each as difficult: a detection of any class on it is neither right nor wrong."""
    lines = []
    for label, box, difficult in zip(annotation.labels, annotation.boxes, annotation.difficult):
        coordinates = " ".join(format_pixels(value) for value in box)
        if label == IGNORE_LABEL:
            lines.extend(f"{name} {coordinates} difficult" for name in class_names)
            continue
        lines.append(f"{label} {coordinates}" + (" difficult" if difficult else ""))
    return "".join(f"{line}\n" for line in lines)


def detection_text(detections):
    """Detection file content: ``<class> <score> <left> <top> <right> <bottom>`` per detection."""
    return "".join(f"{label} {score:.6f} " + " ".join(format_pixels(value) for value in box) + "\n"
                   for label, score, box in zip(detections.labels(), detections.scores, detections.boxes))


def load_example(dataset_path, name, label_aliases):
    """(RGB image uint8 [H, W, 3], Annotation clipped to the image) of ``name``; raises VOCError."""
    xml_path = os.path.join(dataset_path, "Annotations", f"{name}.xml")
    image_path = find_image(dataset_path, name)
    if image_path is None:
        raise VOCError(f"{os.path.join(dataset_path, 'JPEGImages', name)}.*: image not found")
    if not os.path.isfile(xml_path):
        raise VOCError(f"{xml_path}: annotation not found")
    annotation = parse_annotation(xml_path, label_aliases)
    image_bgr = read_image_bgr(image_path)
    clip_boxes(annotation, image_bgr.shape[1], image_bgr.shape[0])
    annotation.skipped = [f"{xml_path}: {reason}" for reason in annotation.skipped]
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB), annotation


def remove_text_files(folder):
    """Delete the ``*.txt`` files directly in ``folder`` (results of an earlier run); returns how many."""
    names = [name for name in os.listdir(folder) if name.endswith(".txt")]
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            os.remove(path)
    return len(names)


def move_files(source, destination):
    """Move every file of ``source`` into ``destination``, replacing files of the same name."""
    for name in os.listdir(source):
        os.replace(os.path.join(source, name), os.path.join(destination, name))


def detect_into(detector, dataset_path, names, detection_dir, ground_truth_dir, score_threshold,
                images_per_batch, progress):
    """Detect in every image of ``names`` and write its files to the two folders; returns a DetectReport."""
    report = DetectReport()
    with tqdm(total=len(names), desc="detect", unit="img", disable=not progress) as bar:
        for start in range(0, len(names), images_per_batch):
            batch_names, batch_images, batch_annotations = [], [], []
            for name in names[start:start + images_per_batch]:
                try:
                    image_rgb, annotation = load_example(dataset_path, name, detector.cfg["label_aliases"])
                except VOCError as error:
                    report.skipped_images.append(str(error))
                    continue
                batch_names.append(name)
                batch_images.append(image_rgb)
                batch_annotations.append(annotation)
            if batch_images:
                results = detector.detect_batch(batch_images, score_threshold)
                for name, annotation, detections in zip(batch_names, batch_annotations, results):
                    write_text_atomically(os.path.join(detection_dir, f"{name}.txt"), detection_text(detections))
                    write_text_atomically(os.path.join(ground_truth_dir, f"{name}.txt"), 
                                         ground_truth_text(annotation, detector.cfg["labels_list"][1:]))
                    report.images += 1
                    report.detections += len(detections)
                    report.ground_truth_boxes += len(annotation.labels)
                    report.skipped_objects.extend(annotation.skipped)
            bar.update(len(names[start:start + images_per_batch]))
    return report


def write_split_results(detector, dataset_path, names, output_dir, score_threshold,
                        images_per_batch=DEFAULT_IMAGES_PER_BATCH, progress=True):
    """Detect in every image of ``names`` and write its detection and ground-truth files.

    The files are written to a staging folder inside ``output_dir`` first; only once every image was processed
    are the ``*.txt`` files of ``<output_dir>/detection-results`` and ``<output_dir>/ground-truth`` replaced
    by them, so an error or Ctrl-C leaves the earlier results as they were.
    Returns a DetectReport; unreadable images or annotations are skipped and listed in it.
    """
    detection_dir = os.path.join(output_dir, DETECTION_DIR_NAME)
    ground_truth_dir = os.path.join(output_dir, GROUND_TRUTH_DIR_NAME)
    for folder in (detection_dir, ground_truth_dir):
        os.makedirs(folder, exist_ok=True)
    staging = tempfile.mkdtemp(dir=output_dir, prefix=".detect-")
    try:
        staged_detection_dir = os.path.join(staging, DETECTION_DIR_NAME)
        staged_ground_truth_dir = os.path.join(staging, GROUND_TRUTH_DIR_NAME)
        os.mkdir(staged_detection_dir)
        os.mkdir(staged_ground_truth_dir)
        report = detect_into(detector, dataset_path, names, staged_detection_dir, staged_ground_truth_dir,
                             score_threshold, images_per_batch, progress)
        # ground truth is removed first and moved in last: a run stopped during the swap leaves detection files
        # without their ground truth, which compute_mAP.py refuses, never ground truth silently scored as missed
        remove_text_files(ground_truth_dir)
        remove_text_files(detection_dir)
        move_files(staged_detection_dir, detection_dir)
        move_files(staged_ground_truth_dir, ground_truth_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def next_command(output_dir):
    """The compute_mAP.py command that reads what was written to ``output_dir``."""
    script = os.path.relpath(os.path.join(REPO_ROOT, "mAP", "compute_mAP.py"))
    if os.path.abspath(output_dir) == os.path.abspath(DEFAULT_OUTPUT_DIR):
        return f"python {script}"
    return (f"python {script} --gt_dir {os.path.join(output_dir, GROUND_TRUTH_DIR_NAME)} "
            f"--det_dir {os.path.join(output_dir, DETECTION_DIR_NAME)} "
            f"--output_dir {os.path.join(output_dir, 'map-results')}")


def voc_split(args):
    """(VOC folder, split) to evaluate: ``--dataset_path`` and ``--split``, or the data file's source for
    ``--split`` (its val: list by default; one source)."""
    if not args.data:
        if not args.dataset_path:
            raise ValueError("--dataset_path or --data is required")
        if not os.path.isdir(args.dataset_path):
            raise VOCError(f"{args.dataset_path}: dataset folder not found")
        return args.dataset_path, args.split
    if args.dataset_path:       # the data file's classes and aliases on another folder
        return args.dataset_path, args.split
    from components.data_file import load_data_file
    spec = load_data_file(args.data, args.root)
    sources = spec.sources.get(args.split) or []
    if len(sources) != 1:
        raise ValueError(f"--data: {args.data} {args.split}: lists {len(sources)} sources; evaluate one at a time "
                         "with --dataset_path DIR --split NAME (and --data for the classes)")
    spec.check_root()
    return sources[0].voc_path, sources[0].split


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_path", default=DEFAULT_MODEL_PATH,
                        help="a .keras, .tflite or .onnx model, a SavedModel folder, or a folder holding a .keras "
                             "model (default: checkpoints/mask_detector.keras of the repository)")
    parser.add_argument("--dataset_path", default=None,
                        help="VOC folder (Annotations/, JPEGImages/, ImageSets/); or --data")
    parser.add_argument("--split", default="val", help="name of a file in ImageSets/Main, without .txt")
    parser.add_argument("--skip_unknown_labels", action="store_true",
                        help="leave out boxes whose label maps to no class instead of stopping")
    parser.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR,
                        help="gets detection-results/ and ground-truth/ (default: mAP/ of the repository)")
    parser.add_argument("--score_threshold", type=float, default=DEFAULT_SCORE_THRESHOLD,
                        help="lowest score kept (low, so the precision/recall curve is complete)")
    parser.add_argument("--images_per_batch", type=int, default=DEFAULT_IMAGES_PER_BATCH,
                        help="images run through the model at once")
    add_config_arguments(parser, keys=DATA_KEYS + DETECTION_KEYS, skip=("score_threshold",), data=True)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        if args.images_per_batch < 1:
            raise ValueError(f"--images_per_batch: must be at least 1, got {args.images_per_batch}")
        dataset_path, split = voc_split(args)
        names = read_split(dataset_path, split)
        if not os.path.exists(args.model_path):
            raise FileNotFoundError(f"{args.model_path}: model not found")
        from components.detector import Detector  # imports TensorFlow: only once the cheap checks passed
        detector = Detector.from_path(args.model_path, cfg, input_size=given_settings(args).get("input_size"))
        if args.data or given_settings(args).get("labels_list"):
            check_classes(cfg["labels_list"], detector.cfg["labels_list"], args.data or "--labels_list",
                          args.model_path, "evaluate the model on data of its classes (another --data file or "
                          "--model_path)")
        counts = count_labels(dataset_path, names)
        print(format_label_table(counts, cfg["label_aliases"], title=f"{dataset_path} ({split}):"))
        if not args.skip_unknown_labels:
            check_known_labels(counts, cfg["label_aliases"], f"{dataset_path} ({split})", args.data)
        check_aliases({label: cfg["label_aliases"][label] for label in counts if label in cfg["label_aliases"]},
                      detector.cfg["labels_list"])
        report = write_split_results(detector, dataset_path, names, args.output_dir, args.score_threshold,
                                     args.images_per_batch)
        for reason in report.skipped_images:
            print(f"skipped image: {reason}", file=sys.stderr)
        for reason in report.skipped_objects:
            print(f"skipped object: {reason}", file=sys.stderr)
        if report.images == 0:
            raise VOCError(f"{dataset_path}: none of the {len(names)} images of split {split!r} could be read")
    except (VOCError, ValueError, OSError) as error:  # ModelLoadError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(f"wrote {report.images} detection files ({report.detections} detections) and {report.images} "
          f"ground-truth files ({report.ground_truth_boxes} boxes) under {args.output_dir}; "
          f"skipped {len(report.skipped_images)} images, {len(report.skipped_objects)} objects "
          f"(unknown label or empty box); flip test {'on' if detector.flip_test else 'off'}")
    print(f"next: {next_command(args.output_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
