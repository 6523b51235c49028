"""Write detection and ground-truth text files of a VOC split for mAP/compute_mAP.py.

    python mAP/detect.py [--model_path checkpoints/] --dataset_path VOC_DIR[,VOC_DIR2...] [--split val]
                         [--output_dir mAP] [--score_threshold 0.01]

For every image of ``ImageSets/Main/<split>.txt`` writes ``<output_dir>/detection-results/NAME.txt``
(``<class> <score> <left> <top> <right> <bottom>``) and ``<output_dir>/ground-truth/NAME.txt``
(``<class> <left> <top> <right> <bottom>``, plus `` difficult`` for difficult objects), in pixels of the
original image with the canonical class names (VOC labels are mapped through ``label_aliases``). The files are
written to a staging folder first; the earlier ``.txt`` files of those two folders are replaced only once every
image was processed, so a failed or interrupted run keeps them. Images that cannot be read are skipped with a reason.
Several sets (VOC folders) get those two folders each, in ``<output_dir>/<set name>/`` (``mAP/sets.py``).
``--model_path`` takes any format ``inference.py`` takes: ``.keras``, a SavedModel folder, ``.tflite`` or ``.onnx``
(the runtime is picked by the file type; see ``export.py``), or a folder: its ``mask_detector.keras`` or only model.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
from tqdm import tqdm

from components.atomic_io import staging_folder, write_text_atomically
from components.config import IGNORE_LABEL
from dataset.voc import VOCError, load_item
from mAP.sets import DETECTION_DIR_NAME, GROUND_TRUTH_DIR_NAME, RESULTS_DIR_NAME, set_output_dirs

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    import numpy as np

    from dataset.voc import Annotation
    from mAP.sets import EvaluationSet
    from runtime.detector import Detector
    from runtime.end_to_end_models import EndToEndModel
    from runtime.postprocessing import Detections

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT_DIR = os.path.join(REPO_ROOT, "mAP")
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


def format_pixels(value: float) -> str:
    """A pixel coordinate as short text: at most 2 decimals, no trailing zeros (``12``, ``12.5``)."""
    text = f"{float(value):.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def ground_truth_text(annotation: Annotation, class_names: Sequence[str] = ()) -> str:
    """Ground-truth file content: ``<class> <left> <top> <right> <bottom>[ difficult]`` per object.

    A box labelled ``ignore`` is written once per name of ``class_names`` (the model's classes, no
    background), each as difficult: a detection of any class on it is neither right nor wrong."""
    lines: list[str] = []
    for label, box, difficult in zip(annotation.labels, annotation.boxes, annotation.difficult):
        coordinates = " ".join(format_pixels(value) for value in box)
        if label == IGNORE_LABEL:
            lines.extend(f"{name} {coordinates} difficult" for name in class_names)
            continue
        lines.append(f"{label} {coordinates}" + (" difficult" if difficult else ""))
    return "".join(f"{line}\n" for line in lines)


def detection_text(detections: Detections) -> str:
    """Detection file content: ``<class> <score> <left> <top> <right> <bottom>`` per detection."""
    return "".join(f"{label} {score:.6f} " + " ".join(format_pixels(value) for value in box) + "\n"
                   for label, score, box in zip(detections.labels(), detections.scores, detections.boxes))


def load_example(dataset_path: str, name: str, label_aliases: Mapping[str, str]) -> tuple[np.ndarray, Annotation]:
    """(RGB image uint8 [H, W, 3], Annotation clipped to the image) of ``name``; raises VOCError."""
    item = load_item(dataset_path, name, label_aliases)
    item.annotation.skipped = item.skipped()
    return cv2.cvtColor(item.image_bgr, cv2.COLOR_BGR2RGB), item.annotation  # type: ignore[arg-type]


def remove_text_files(folder: str) -> int:
    """Delete the ``*.txt`` files directly in ``folder`` (results of an earlier run); returns how many."""
    names = [name for name in os.listdir(folder) if name.endswith(".txt")]
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            os.remove(path)
    return len(names)


def move_files(source: str, destination: str) -> None:
    """Move every file of ``source`` into ``destination``, replacing files of the same name."""
    for name in os.listdir(source):
        os.replace(os.path.join(source, name), os.path.join(destination, name))


def detect_into(detector: Detector | EndToEndModel, dataset_path: str, names: Sequence[str], detection_dir: str,
                ground_truth_dir: str, score_threshold: float | None, images_per_batch: int, progress: bool,
                description: str = "detect") -> DetectReport:
    """Detect in every image of ``names`` and write its files to the two folders; returns a DetectReport."""
    report = DetectReport()
    with tqdm(total=len(names), desc=description, unit="img", disable=not progress) as bar:
        for start in range(0, len(names), images_per_batch):
            batch_names, batch_images, batch_annotations = [], [], []
            for name in names[start:start + images_per_batch]:
                try:
                    image_rgb, annotation = load_example(dataset_path, name, detector.settings.data.label_aliases)
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
                                         ground_truth_text(annotation, detector.settings.model.labels_list[1:]))
                    report.images += 1
                    report.detections += len(detections)
                    report.ground_truth_boxes += len(annotation.labels)
                    report.skipped_objects.extend(annotation.skipped)
            bar.update(len(names[start:start + images_per_batch]))
    return report


def write_split_results(detector: Detector | EndToEndModel, dataset_path: str, names: Sequence[str], output_dir: str,
                        score_threshold: float | None, images_per_batch: int = DEFAULT_IMAGES_PER_BATCH,
                        progress: bool = True, description: str = "detect") -> DetectReport:
    """Detect in every image of ``names`` and write its detection and ground-truth files.

    The files are written to a staging folder inside ``output_dir`` first; only once every image was processed
    are the ``*.txt`` files of ``<output_dir>/detection-results`` and ``<output_dir>/ground-truth`` replaced
    by them, so an error or Ctrl-C leaves the earlier results as they were.
    Returns a DetectReport; unreadable images or annotations are skipped and listed in it. ``description``
    labels the progress bar.
    """
    detection_dir = os.path.join(output_dir, DETECTION_DIR_NAME)
    ground_truth_dir = os.path.join(output_dir, GROUND_TRUTH_DIR_NAME)
    for folder in (detection_dir, ground_truth_dir):
        os.makedirs(folder, exist_ok=True)
    with staging_folder(output_dir) as staging:
        staged_detection_dir = os.path.join(staging, DETECTION_DIR_NAME)
        staged_ground_truth_dir = os.path.join(staging, GROUND_TRUTH_DIR_NAME)
        os.mkdir(staged_detection_dir)
        os.mkdir(staged_ground_truth_dir)
        report = detect_into(detector, dataset_path, names, staged_detection_dir, staged_ground_truth_dir,
                             score_threshold, images_per_batch, progress, description)
        # ground truth is removed first and moved in last: a run stopped during the swap leaves detection files
        # without their ground truth, which compute_mAP.py refuses, never ground truth silently scored as missed
        remove_text_files(ground_truth_dir)
        remove_text_files(detection_dir)
        move_files(staged_detection_dir, detection_dir)
        move_files(staged_ground_truth_dir, ground_truth_dir)
    return report


def next_command(output_dir: str, set_dirs: Sequence[str] | None = None) -> str:
    """The compute_mAP.py command that reads what was written to ``output_dir``: its detection-results/ and
    ground-truth/, or with ``set_dirs`` (several sets, each a folder holding those two) all of them at once,
    their results going to ``<output_dir>/map-results``."""
    script = os.path.relpath(os.path.join(REPO_ROOT, "mAP", "compute_mAP.py"))
    results_dir = os.path.join(output_dir, RESULTS_DIR_NAME)
    if set_dirs and len(set_dirs) > 1:
        return f"python {script} --set_dirs {','.join(set_dirs)} --output_dir {results_dir}"
    if os.path.abspath(output_dir) == os.path.abspath(DEFAULT_OUTPUT_DIR):
        return f"python {script}"
    return (f"python {script} --gt_dir {os.path.join(output_dir, GROUND_TRUTH_DIR_NAME)} "
            f"--det_dir {os.path.join(output_dir, DETECTION_DIR_NAME)} --output_dir {results_dir}")


def skipped_lines(report: DetectReport) -> list[str]:
    """One line per image and per object a run skipped, with the reason (for stderr)."""
    return ([f"skipped image: {reason}" for reason in report.skipped_images]
            + [f"skipped object: {reason}" for reason in report.skipped_objects])


def written_line(report: DetectReport, output_dir: str, detector: Any) -> str:
    """The counts of one set's run, written under ``output_dir``."""
    return (f"wrote {report.images} detection files ({report.detections} detections) and {report.images} "
            f"ground-truth files ({report.ground_truth_boxes} boxes) under {output_dir}; "
            f"skipped {len(report.skipped_images)} images, {len(report.skipped_objects)} objects "
            f"(unknown label or empty box); flip test {'on' if detector.flip_test else 'off'}, "
            f"scales {getattr(detector, 'test_scales', [1])}")


def detect_sets(detector: Any, sets: Sequence[EvaluationSet], image_names: Mapping[str, Sequence[str]],
                output_dir: str, score_threshold: float, images_per_batch: int = DEFAULT_IMAGES_PER_BATCH,
                echo: Callable[..., object] | None = None) -> dict[str, str]:
    """Write each set's files (:func:`write_split_results`) into its folder of ``mAP.sets.set_output_dirs``
    under ``output_dir``; returns {set name: folder}. After each set, ``echo`` (called as ``print``) gets its
    skipped lines (``file=sys.stderr``) and its counts. Raises VOCError, once every set ran, naming the sets of
    which no image could be read. ``detector``: a ``Detector``, an end-to-end model or the reference's adapter."""
    output_dirs = set_output_dirs(output_dir, [item.name for item in sets])
    unreadable = []
    for item in sets:
        names = image_names[item.name]
        report = write_split_results(detector, item.dataset_path, names, output_dirs[item.name],
                                     score_threshold, images_per_batch,
                                     description="detect" if len(sets) == 1 else f"detect {item.name}")
        if echo is not None:
            for line in skipped_lines(report):
                echo(line, file=sys.stderr)
            if report.images:
                echo(written_line(report, output_dirs[item.name], detector))
        if not report.images:
            unreadable.append(f"{item.dataset_path}: none of the {len(names)} images of split {item.split!r} "
                              "could be read")
    if unreadable:
        raise VOCError("; ".join(unreadable))
    return output_dirs
