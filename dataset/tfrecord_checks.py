"""Checks of the TFRecords a run reads before it starts: they exist, can be read and hold records, and were
written for the run's classes (the class list stored beside a TFRecord, components/class_list.py, or for older
TFRecords without one, the largest class id they hold)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from components.class_list import check_tfrecord_classes
from components.errors import ProjectError

if TYPE_CHECKING:
    from collections.abc import Sequence


class TFRecordError(ProjectError):
    """A TFRecord that cannot be used: missing, unreadable, empty or of other classes; the message names it."""


def count_records(tfrecord_path: str | Sequence[str]) -> int:
    """Number of records in a TFRecord file, or summed over a list of files (a file listed twice counts twice).

    Raises TFRecordError naming the file when it is missing, unreadable or empty, or when the list is empty."""
    if not isinstance(tfrecord_path, str):
        if not tfrecord_path:
            raise TFRecordError("--train_tfrecord: no training TFRecord given")
        return sum(count_records(path) for path in tfrecord_path)
    if not os.path.isfile(tfrecord_path):
        raise TFRecordError(f"{tfrecord_path}: TFRecord not found (create it with python dataset/voc_to_tfrecord.py, "
                            "--data FILE for a data file's TFRecords)")
    try:
        count = int(tf.data.TFRecordDataset(tfrecord_path).reduce(np.int64(0), lambda total, _: total + 1))
    except tf.errors.OpError as error:
        message = (error.message or type(error).__name__).splitlines()[0]
        raise TFRecordError(f"{tfrecord_path}: not a readable TFRecord ({message})") from None
    if count == 0:
        raise TFRecordError(f"{tfrecord_path}: holds no records")
    return count


def largest_class_id(tfrecord_path: str) -> int:
    """The largest class id of any box in a TFRecord (-1 when it holds no boxes)."""
    feature = {"image/object/class/label": tf.io.VarLenFeature(tf.int64)}

    def record_max(serialized):
        labels = tf.io.parse_single_example(serialized, feature)["image/object/class/label"].values
        return tf.reduce_max(tf.concat([labels, tf.constant([-1], tf.int64)], axis=0))

    return int(tf.data.TFRecordDataset(tfrecord_path).map(record_max).reduce(
        tf.constant(-1, tf.int64), tf.maximum))


def check_record_classes(tfrecord_path: str, labels_list: Sequence[str]) -> None:
    """Raise ClassListError when the class list stored beside a TFRecord differs from ``labels_list``, or
    TFRecordError when a TFRecord without one holds class ids beyond the list."""
    stored = check_tfrecord_classes(tfrecord_path, labels_list, "this run")
    if stored is None:
        largest = largest_class_id(tfrecord_path)
        if largest >= len(labels_list):
            raise TFRecordError(f"{tfrecord_path}: holds class id {largest} but --labels_list {list(labels_list)} "
                                f"has ids 0-{len(labels_list) - 1}: train with the classes it was written with "
                                "(--data FILE or --labels_list), or rewrite it with dataset/voc_to_tfrecord.py")
