"""Class names travel with the data and the model: a TFRecord's class list is stored beside it
(``<name>.classes.json``, written by dataset/voc_to_tfrecord.py) as a model's is in its sidecar
(runtime/model_files.py). Where two meet, :func:`class_mismatch` says in one line which names differ."""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from components.atomic_io import write_text_atomically
from components.errors import ProjectError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

CLASSES_SUFFIX = ".classes.json"


class ClassListError(ProjectError):
    """Two class lists that should agree do not; the message says which names differ and how to fix it."""


def tfrecord_classes_path(tfrecord: str) -> str:
    """``dataset/x.tfrecord`` -> ``dataset/x.classes.json``."""
    return os.path.splitext(tfrecord)[0] + CLASSES_SUFFIX


def write_tfrecord_classes(tfrecord: str, labels_list: Sequence[str],
                           box_counts: Mapping[str, int] | None = None) -> None:
    """Record ``labels_list`` (background first) and the boxes per class beside ``tfrecord``, atomically."""
    content = {"labels_list": list(labels_list), "boxes": dict(box_counts or {})}
    write_text_atomically(tfrecord_classes_path(tfrecord), json.dumps(content, indent=2) + "\n")


def read_tfrecord_classes(tfrecord: str) -> list[str] | None:
    """The class list stored beside ``tfrecord``, or None for a TFRecord written without one."""
    path = tfrecord_classes_path(tfrecord)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            labels = json.load(handle)["labels_list"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ClassListError(f"{path}: unreadable class list ({error})") from None
    return list(labels)


def class_mismatch(expected: Sequence[str], found: Sequence[str], expected_what: str, found_what: str,
                   fix: str) -> str | None:
    """None when the class lists agree, else one line: where each comes from, which names differ, the fix."""
    if list(expected) == list(found):
        return None
    only_expected = [name for name in expected if name not in found]
    only_found = [name for name in found if name not in expected]
    if only_expected or only_found:
        detail = ", ".join(part for part in (
            f"{' '.join(only_found)} only in {found_what}" if only_found else "",
            f"{' '.join(only_expected)} only in {expected_what}" if only_expected else "") if part)
    else:
        detail = "same names in another order"
    return (f"classes differ: {found_what} has {list(found)[1:]}, {expected_what} has {list(expected)[1:]} "
            f"({detail}); {fix}")


def check_classes(expected: Sequence[str], found: Sequence[str], expected_what: str, found_what: str, fix: str) -> None:
    """Raise ClassListError with :func:`class_mismatch`'s line when the lists differ."""
    message = class_mismatch(expected, found, expected_what, found_what, fix)
    if message:
        raise ClassListError(message)


def check_tfrecord_classes(tfrecord: str, labels_list: Sequence[str], run_what: str = "this run") -> list[str] | None:
    """Raise ClassListError when the class list stored beside ``tfrecord`` differs from ``labels_list``.
    Returns the stored list, or None when there is none (TFRecords of older versions)."""
    stored = read_tfrecord_classes(tfrecord)
    if stored is not None:
        check_classes(labels_list, stored, run_what, tfrecord,
                      "use the --data file (or --labels_list) it was written with, or rewrite it with "
                      "python dataset/voc_to_tfrecord.py --data FILE")
    return stored
