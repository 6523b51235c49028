"""Batch mode: annotate every image of a folder, with detections.json and summary.csv, resumable.

Each finished image is appended (and flushed) to ``detections.part.jsonl``; on Ctrl-C the results so far are
assembled into the two outputs, and a later run resumes: images already in the part file are not redone
(unless the model or the score threshold changed). A run that finishes removes the part file. One run at a
time per output folder: a second one is refused while the first holds the folder's lock file.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
from typing import TYPE_CHECKING

import cv2
from tqdm import tqdm

from components.atomic_io import process_runs, remove_stale_temporaries, write_text_atomically
from components.drawing import draw_detections
from components.errors import ProjectError, os_error
from components.images import ImageError, read_image_bgr
from runtime.media import write_image_atomically

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any

    import numpy as np

    from runtime.detector import Detector
    from runtime.end_to_end_models import EndToEndModel
    from runtime.postprocessing import Detections

DETECTIONS_JSON = "detections.json"
SUMMARY_CSV = "summary.csv"
PART_FILE = "detections.part.jsonl"
LOCK_FILE = ".batch.lock"


def list_image_files(img_dir: str) -> list[str]:
    """Names of the regular, non-hidden files directly in ``img_dir``, sorted."""
    return sorted(name for name in os.listdir(img_dir)
                  if not name.startswith(".") and os.path.isfile(os.path.join(img_dir, name)))


def batch_header(detector: Detector | EndToEndModel, score_threshold: float) -> dict[str, Any]:
    """What a part file's results depend on: the model file (path, size, modification time) and threshold."""
    path = getattr(detector, "model_path", None)
    path = os.path.abspath(path) if path else None
    stat = os.stat(path) if path and os.path.exists(path) else None
    return {"model": path, "model_bytes": stat.st_size if stat else None,
            "model_mtime": stat.st_mtime if stat else None, "score_threshold": float(score_threshold)}


def image_record(name: str, image_bgr: np.ndarray, detections: Detections) -> dict[str, Any]:
    """One image's entry of detections.json."""
    height, width = image_bgr.shape[:2]
    return {"image": name, "width": int(width), "height": int(height),
            "boxes": [[round(float(value), 2) for value in box] for box in detections.boxes],
            "classes": detections.labels(), "scores": [round(float(score), 6) for score in detections.scores]}


def read_part_file(path: str, header: dict[str, Any]) -> dict[str, dict[str, Any]]:
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


def write_batch_outputs(output_dir: str, header: dict[str, Any], records: dict[str, dict[str, Any]],
                        skipped: Sequence[tuple[str, str]], class_names: Sequence[str]) -> None:
    """(Re)write detections.json and summary.csv from ``records`` (image name -> record), atomically."""
    ordered = [records[name] for name in sorted(records)]
    skipped_rows = [{"image": name, "reason": reason} for name, reason in skipped]
    # one image per line: readable, and still one JSON document
    text = (f'{{"model": {json.dumps(header["model"])}, "score_threshold": {json.dumps(header["score_threshold"])},\n'
            ' "images": [\n  ' + ",\n  ".join(json.dumps(record) for record in ordered) + '\n ],\n'
            ' "skipped": [\n  ' + ",\n  ".join(json.dumps(item) for item in skipped_rows) + '\n ]\n}\n')
    write_text_atomically(os.path.join(output_dir, DETECTIONS_JSON), text, newline="")
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["image", "faces", *class_names])
    for record in ordered:
        writer.writerow([record["image"], len(record["classes"]),
                         *(record["classes"].count(name) for name in class_names)])
    write_text_atomically(os.path.join(output_dir, SUMMARY_CSV), table.getvalue(), newline="")


def annotated_path(output_dir: str, name: str) -> str:
    """Where the annotated copy of ``name`` goes: same name, or ``<name>.jpg`` when OpenCV cannot write
    that extension."""
    path = os.path.join(output_dir, name)
    try:
        if cv2.haveImageWriter(path):
            return path
    except cv2.error:
        pass
    return path + ".jpg"


@contextlib.contextmanager
def output_folder_lock(output_dir: str) -> Iterator[None]:
    """Hold ``output_dir/.batch.lock`` (holding this process id) inside the block. Raises ProjectError when
    another running process holds it; a lock left by a process that no longer runs is taken over."""
    path = os.path.join(output_dir, LOCK_FILE)
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            owner = _lock_owner(path)
            if owner is not None and process_runs(owner):
                raise ProjectError(f"{output_dir}: another batch run (process {owner}) is writing here; wait for "
                                   "it to finish or choose another --output_dir") from None
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)                  # stale: its process is gone
            continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(str(os.getpid()))
        break
    else:
        raise ProjectError(f"{path}: cannot take the lock of this output folder")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _lock_owner(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return int(handle.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def run_batch(detector: Detector | EndToEndModel, img_dir: str, output_dir: str, progress: bool = True,
              log: Callable[[str], None] | None = None) -> tuple[int, int, list[tuple[str, str]]]:
    """Annotate every file of ``img_dir`` into ``output_dir`` and write detections.json and summary.csv.

    Resumes from ``output_dir/detections.part.jsonl`` when it was written with the same model and threshold.
    On KeyboardInterrupt the outputs are assembled from the finished images and the interrupt re-raised.
    Returns (images done in this run, images resumed, [(name, reason)] skipped).
    """
    log = log or (lambda message: tqdm.write(message, file=sys.stderr))
    os.makedirs(output_dir, exist_ok=True)
    with output_folder_lock(output_dir):
        remove_stale_temporaries(output_dir)   # images a killed run was writing
        try:
            return _run_batch(detector, img_dir, output_dir, progress, log)
        except OSError as error:   # a write to the part file carries no file name
            raise os_error(error, error.filename or os.path.join(output_dir, PART_FILE)) from None


def _run_batch(detector, img_dir, output_dir, progress, log):
    """:func:`run_batch` once the output folder is locked."""
    header = batch_header(detector, detector.settings.detect.score_threshold)
    part_path = os.path.join(output_dir, PART_FILE)
    records = read_part_file(part_path, header)
    resumed = len(records)
    names = list_image_files(img_dir)
    todo = [name for name in names if name not in records]
    if resumed:
        log(f"resuming: {resumed} images already done ({part_path})")
    skipped = []
    class_names = list(detector.settings.model.labels_list[1:])
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
                except ImageError as error:
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
