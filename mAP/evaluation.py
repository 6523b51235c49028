"""VOC AP of a detector on a TFRecord: the one ``evaluate`` behind training validation, export checks and
benchmarks.

Records are letterboxed and resized by TensorFlow exactly as the training pipeline prepares validation
images (``dataset.tf_dataset_preprocess.prepare_for_evaluation``), run through the detector's runtime and the
shared ``postprocess``, and scored by ``mAP.voc_ap.evaluate_detections`` in coordinates normalised to the
network input (IoU does not change under that scaling).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import tensorflow as tf
from tqdm import tqdm

from components.class_list import check_tfrecord_classes
from components.errors import ProjectError
from components.prior_box import priors_from_config
from dataset.tf_dataset_preprocess import encode_example_targets, parse_example, prepare_for_evaluation
from mAP.voc_ap import GroundTruth, ScoredBoxes, evaluate_detections

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    import numpy as np

    from components.config import Settings
    from mAP.voc_ap import Evaluation
    from runtime.detector import Detector
    from runtime.end_to_end_models import EndToEndModel

LABEL_PADDING = -100   # fills the label rows of a batch beyond an image's boxes (ignored boxes are -1)
DEFAULT_SCORE_THRESHOLD = 0.01


def read_validation_records(tfrecord_path: str, limit: int | None = None,
                            ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(uint8 RGB image, boxes [N, 4] normalised corner form, labels [N], difficult [N] bool) per record."""
    if not os.path.isfile(tfrecord_path):
        raise ProjectError(f"{tfrecord_path}: TFRecord not found")
    dataset = tf.data.TFRecordDataset(tfrecord_path).map(parse_example, num_parallel_calls=tf.data.AUTOTUNE)
    if limit:
        dataset = dataset.take(limit)
    yield from dataset.prefetch(4).as_numpy_iterator()


def evaluation_batches(tfrecord_path: str, settings: Settings, batch_size: int,
                       with_targets: bool = False) -> tf.data.Dataset:
    """Batches of (network inputs [B, h, w, 3], ground-truth boxes [B, N, 4] normalised to the letterboxed
    input, labels [B, N] padded with LABEL_PADDING, difficult [B, N]) and, ``with_targets``, the training
    targets [B, P, 5] (for a validation loss); no augmentation."""
    priors = tf.constant(priors_from_config(settings.model))

    def prepare(serialized):
        image, boxes, labels, difficult = parse_example(serialized)
        image, boxes = prepare_for_evaluation(image, boxes, settings.model.input_size, settings.detect.keep_aspect)
        item = (image, boxes, labels, difficult)
        return item + (encode_example_targets(boxes, labels, priors, settings),) if with_targets else item

    padding = (0.0, 0.0, LABEL_PADDING, False) + ((0.0,) if with_targets else ())
    dataset = tf.data.TFRecordDataset(tfrecord_path).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.padded_batch(batch_size, padding_values=padding).prefetch(2)


def evaluate(detector: Detector | EndToEndModel, tfrecord_path: str,
             score_threshold: float = DEFAULT_SCORE_THRESHOLD, batch_size: int = 16, limit: int | None = None,
             progress: bool = False, on_batch: Callable[..., Any] | None = None,
             compute_map: bool = True) -> Evaluation | None:
    """VOC AP@0.5 of ``detector`` on the records of ``tfrecord_path``.

    ``detector``: anything with ``settings`` and ``detect_inputs(network inputs, score_threshold)`` -> one
    ``Detections`` per image, boxes normalised to the input: a ``runtime.detector.Detector`` (which
    ``on_batch`` needs: ``predict_raw`` and ``detections``), or an end-to-end model
    (``runtime.end_to_end_models``).

    ``limit``: evaluate on the first ``limit`` batches only. ``on_batch(predictions, targets)``, when given, is
    called with each batch's raw predictions and training targets (training computes its validation loss so).
    Returns a ``mAP.voc_ap.Evaluation`` (``mean_ap`` in [0, 1]), or None when not ``compute_map``.
    Raises ProjectError naming the file when it is missing or holds no records, ClassListError when the
    class list stored beside it is not the detector's.
    """
    if not os.path.isfile(tfrecord_path):
        raise ProjectError(f"{tfrecord_path}: TFRecord not found")
    check_tfrecord_classes(tfrecord_path, detector.settings.model.labels_list,
                           getattr(detector, "model_path", None) or "the model")
    names = list(detector.settings.model.labels_list)
    ground_truth: dict[str, GroundTruth] = {}
    detections: dict[str, ScoredBoxes] = {}
    batches = evaluation_batches(tfrecord_path, detector.settings, batch_size, with_targets=on_batch is not None)
    if limit:
        batches = batches.take(limit)
    count = 0
    for batch in tqdm(batches, desc="mAP", unit="batch", leave=False, disable=not progress):
        images, gt_boxes, gt_labels, difficult = (value.numpy() for value in batch[:4])
        count += len(images)
        if on_batch is not None:   # the validation loss wants the raw predictions: one network pass for both
            predictions = detector.predict_raw(images)  # type: ignore[union-attr]   # a Detector when on_batch is given
            on_batch(predictions, batch[4])
            if not compute_map:
                continue
            found = detector.detections(predictions, None, score_threshold)  # type: ignore[union-attr]
        else:
            found = detector.detect_inputs(images, score_threshold)
        for row, image_detections in enumerate(found):
            key = str(len(ground_truth))
            keep = gt_labels[row] != LABEL_PADDING
            ground_truth[key] = GroundTruth.from_class_ids(gt_labels[row][keep], gt_boxes[row][keep],
                                                           difficult[row][keep], names)
            detections[key] = ScoredBoxes(image_detections.labels(), image_detections.scores,
                                          image_detections.boxes)
    if count == 0:
        raise ProjectError(f"{tfrecord_path}: no records")
    return evaluate_detections(ground_truth, detections, iou_threshold=0.5) if compute_map else None


def map_or_zero(evaluation: Evaluation | None) -> float:
    """``evaluation.mean_ap``, 0.0 when no class had ground truth."""
    return float(evaluation.mean_ap or 0.0) if evaluation is not None else 0.0
