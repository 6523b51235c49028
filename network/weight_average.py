"""Exponential moving average (EMA) of a model's weights during training, as in Polyak averaging and the
EMA of YOLO-style trainers: validation and the exported model use the averaged weights, which move less
from step to step than the weights the optimizer leaves."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import tensorflow as tf

if TYPE_CHECKING:
    from collections.abc import Iterator

    import keras


class WeightAverage(tf.Module):
    """An average of every weight of ``model`` (trainable ones and batch-norm statistics).

    After step ``n`` of the optimizer: average = d * average + (1 - d) * weight, d = min(decay, (1 + n) / (10 + n)),
    so the first steps follow the weights closely. Its variables are tracked (checkpoint it as an attribute
    of ``tf.train.Checkpoint``); :meth:`reset` copies the weights in (a run resumed from a checkpoint saved
    without an average)."""

    def __init__(self, model: keras.Model, decay: float, name: str = "weight_average") -> None:
        super().__init__(name=name)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be between 0 and 1, got {decay!r}")
        self.decay = float(decay)
        # held through a function, so that the checkpoint tracks the averages here and the weights in the model
        self._model_weights = lambda: list(model.weights)
        self.averages = [tf.Variable(tf.convert_to_tensor(weight), trainable=False, name=f"average_{index}")
                         for index, weight in enumerate(self._weights)]

    @property
    def _weights(self):
        return self._model_weights()

    def update(self, step: tf.Tensor) -> None:
        """Move the averages towards the weights; ``step`` the optimizer's iteration count (a tensor)."""
        step = tf.cast(step, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + step) / (10.0 + step))
        for average, weight in zip(self.averages, self._weights):
            value = tf.convert_to_tensor(weight)
            average.assign(decay * average + (1.0 - decay) * tf.cast(value, average.dtype))

    def reset(self) -> None:
        """Set every average to its weight."""
        for average, weight in zip(self.averages, self._weights):
            average.assign(tf.convert_to_tensor(weight))

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Inside the block the model holds the averaged weights; its own are put back on leaving."""
        saved = [tf.identity(tf.convert_to_tensor(weight)) for weight in self._weights]
        for weight, average in zip(self._weights, self.averages):
            weight.assign(tf.convert_to_tensor(average))
        try:
            yield
        finally:
            for weight, value in zip(self._weights, saved):
                weight.assign(value)
