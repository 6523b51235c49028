"""The distillation teacher: a trained model whose flip test (its predictions on a batch and on the batch
mirrored, averaged prior by prior) gives soft class targets, so that one pass of the student learns what two
passes of the teacher see (``distill_teacher``, ``distill_weight``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

from components.prior_box import mirror_index, priors_from_config
from runtime.adapters import ModelLoadError, load_keras_model
from runtime.model_files import load_model_config
from runtime.postprocessing import merge_mirrored_predictions
from training.errors import TrainingError

if TYPE_CHECKING:
    import keras
    import numpy as np

    from components.config import Settings


class FlipTeacher:
    """A frozen ``.keras`` model of the run's classes, input size and anchors; :meth:`probabilities` gives the
    class probabilities of its flip test for a batch of training images."""

    def __init__(self, path: str, settings: Settings) -> None:
        self.path = path
        try:
            spec = load_model_config(path).model
            self.model: keras.Model = load_keras_model(path)
        except ModelLoadError as error:
            raise TrainingError(f"--distill_teacher: {error}") from None
        run = settings.model
        for name in ("labels_list", "input_size", "min_sizes", "steps"):
            if getattr(spec, name) != getattr(run, name):
                raise TrainingError(f"--distill_teacher: {path}: its {name} {list(getattr(spec, name))} differs from "
                                    f"this run's {list(getattr(run, name))}")
        try:
            self.mirror: np.ndarray = mirror_index(priors_from_config(run))
        except ValueError as error:
            raise TrainingError(f"--distill_teacher: the flip test needs mirrored priors: {error}") from None
        self.model.trainable = False

    def probabilities(self, images: tf.Tensor) -> tf.Tensor:
        """Class probabilities [B, P, C] of the teacher's flip test for preprocessed images [B, h, w, 3]."""
        count = tf.shape(images)[0]
        both = self.model(tf.concat([images, tf.reverse(images, axis=[2])], axis=0), training=False)
        merged = merge_mirrored_predictions(both[:count], both[count:], self.mirror)
        return tf.stop_gradient(merged[..., 4:])
