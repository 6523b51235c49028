"""Draw a grid of augmented training samples with their boxes decoded back from the SSD targets.

    python dataset/check_dataset.py [--data data/ilc2021.yaml | --tfrecord dataset/train_mask.tfrecord]
                                    [--num_images 16] [--output runs/check_dataset.png]
    python dataset/check_dataset.py --matching_stats [--tfrecord ...] [--min_positives 0]

``--matching_stats`` instead prints how many positive priors the matching gives a face, by face size
(un-augmented images, letterboxed to the input size as at inference).

Works headless: the grid is written as a PNG (default runs/check_dataset.png), boxes coloured by class as
inference draws them, with a legend from the class list. Boxes are drawn from the encoded targets (positive priors
decoded with the priors), so the picture checks augmentation, matching and box coding at once. A missing,
empty or unreadable TFRecord is a one-line error (exit status 2); a file with fewer records than
``--num_images`` shows the records it has.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from components.atomic_io import save_figure_atomically
from components.drawing import class_color_rgb
from components.errors import ProjectError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from components.config import Settings


def decoded_positive_boxes(targets: np.ndarray, priors: np.ndarray,
                           variances: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (normalised corner form) and class ids of the positive priors of one image's targets [P, 5]."""
    from components.box_utils import decode_boxes
    positive = targets[:, 4] > 0
    boxes = decode_boxes(targets[positive, :4], priors[positive], variances).numpy()
    return boxes, targets[positive, 4].astype(int)


SIZE_BUCKETS = (8, 16, 32, 64)   # face side sqrt(w * h) in input pixels: <8, 8-16, 16-32, 32-64, >=64
FEW_POSITIVES = 4                # matching_stats reports the share of faces with fewer positives than this


def size_bucket_name(side: float) -> str:
    """'<8', '8-16', ..., '>=64' for a face side in input pixels."""
    for low, high in zip((0,) + SIZE_BUCKETS, SIZE_BUCKETS):
        if side < high:
            return f"<{high}" if low == 0 else f"{low}-{high}"
    return f">={SIZE_BUCKETS[-1]}"


def matching_stats(tfrecord: str, settings: Settings,
                   limit: int | None = None) -> dict[str, tuple[int, float, float]]:
    """Positive priors per face, by face size, under the matching settings of ``settings.match``.

    Returns {bucket name: (faces, mean positive priors per face, share with fewer than FEW_POSITIVES)}, buckets
    in size order. Images are letterboxed to ``settings.model.input_size`` as at inference, not augmented; each prior's
    face comes from ``components.box_utils.match_priors``.
    """
    import tensorflow as tf

    from components.box_utils import match_priors
    from components.prior_box import priors_from_config
    from dataset.tf_dataset_preprocess import parse_example, prepare_for_evaluation

    spec, match = settings.model, settings.match
    priors = tf.constant(priors_from_config(spec))
    height, width = spec.input_size
    counts: dict[str, list[int]] = {}
    records = tf.data.TFRecordDataset(tfrecord).map(parse_example)
    try:
        for image, boxes, labels, _ in (records.take(limit) if limit else records):
            if labels.shape[0] == 0:
                continue
            _, boxes = prepare_for_evaluation(image, boxes, spec.input_size, settings.detect.keep_aspect)
            matched, positive = match_priors(boxes, priors, match.match_thresh, match.min_positives,
                                             match.min_positive_iou)
            face = tf.where(positive & (tf.gather(labels, matched) > 0), matched, -1).numpy()
            for index, box in enumerate(boxes.numpy()):
                side = np.sqrt(max(box[2] - box[0], 0) * width * max(box[3] - box[1], 0) * height)
                counts.setdefault(size_bucket_name(side), []).append(int(np.sum(face == index)))
    except tf.errors.OpError as error:
        raise DatasetError(f"{tfrecord}: not a readable TFRecord of this project's records "
                           f"({error.message.splitlines()[0][:200]})") from None
    if not counts:
        raise DatasetError(f"{tfrecord}: holds no faces")
    order = [size_bucket_name(side) for side in (0,) + SIZE_BUCKETS]
    return {name: (len(counts[name]), float(np.mean(counts[name])),
                   float(np.mean(np.array(counts[name]) < FEW_POSITIVES))) for name in order if name in counts}


def format_matching_stats(stats: Mapping[str, tuple[int, float, float]]) -> str:
    """The table printed by ``--matching_stats``."""
    lines = [f"{'face side (px)':>14} {'faces':>6} {'positives / face':>17} {f'under {FEW_POSITIVES}':>8}"]
    lines += [f"{name:>14} {faces:6d} {mean:17.2f} {under:8.1%}" for name, (faces, mean, under) in stats.items()]
    return "\n".join(lines)


class DatasetError(ProjectError):
    """A TFRecord that cannot be shown; the message names the file and the problem."""


def legend_handles(labels_list: Sequence[str]) -> list[Any]:
    """Matplotlib legend entries, one per class of ``labels_list`` (background left out), in its box colour."""
    from matplotlib.patches import Patch
    return [Patch(facecolor="none", edgecolor=class_color_rgb(class_id), label=name)
            for class_id, name in enumerate(labels_list) if class_id > 0]


def draw_grid(tfrecord: str, settings: Settings, num_images: int, output: str, training: bool = True,
              seed: int = 0) -> str:
    """Write a PNG grid of up to ``num_images`` (augmented when ``training``) samples; returns the output path.

    Raises DatasetError naming ``tfrecord`` when it holds no records or cannot be read as this project's
    records (not a TFRecord, corrupt, or records without the expected features).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tensorflow as tf

    from components.prior_box import priors_from_config
    from dataset.tf_dataset_preprocess import load_dataset

    tf.random.set_seed(seed)
    spec = settings.model
    priors = priors_from_config(spec)
    # batches of one, so that a file with fewer records than num_images still shows them all
    dataset = load_dataset(tfrecord, settings, training=training, batch_size=1).take(num_images)
    try:
        samples = [(image[0], target[0]) for image, target in dataset]
    except tf.errors.OpError as error:
        raise DatasetError(f"{tfrecord}: not a readable TFRecord of this project's records "
                           f"({error.message.splitlines()[0][:200]})") from None
    if not samples:
        raise DatasetError(f"{tfrecord}: holds no records")
    images, targets = tf.stack([image for image, _ in samples]), tf.stack([target for _, target in samples])
    num_images = len(samples)
    columns = int(np.ceil(np.sqrt(num_images)))
    rows = int(np.ceil(num_images / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows))
    height, width = spec.input_size
    for axis, image, target in zip(np.ravel(axes), images.numpy(), targets.numpy()):
        shown = image * 127.5 + 127.5
        axis.imshow(np.clip(shown, 0, 255).astype(np.uint8))
        boxes, classes = decoded_positive_boxes(target, priors, spec.variances)
        for box, label in zip(boxes * [width, height, width, height], classes):
            axis.add_patch(plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False,
                                         edgecolor=class_color_rgb(label), linewidth=0.8))
        axis.set_title(f"{int((target[:, 4] > 0).sum())} positive priors", fontsize=8)
    for axis in np.ravel(axes):
        axis.axis("off")
    figure.suptitle("boxes decoded from the encoded targets", fontsize=9)
    figure.legend(handles=legend_handles(spec.labels_list), loc="lower center", ncol=spec.num_classes - 1,
                  fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    try:
        save_figure_atomically(figure, output, format="png", dpi=90)
    finally:
        plt.close(figure)
    return output

