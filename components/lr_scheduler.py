"""Learning-rate schedule: linear warm-up, then step decay at given epochs."""
from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from components.config import TrainSettings


class WarmupMultiStepLR(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate as a function of the optimizer step.

    Rises linearly from ``min_lr`` to ``init_lr`` over ``warmup_epoch`` epochs, then is multiplied by
    ``lr_rate`` at each epoch of ``lr_decay_epoch``; never falls below ``min_lr``.
    """

    def __init__(self, init_lr: float, lr_decay_epoch: Sequence[int], lr_rate: float, warmup_epoch: float,
                 min_lr: float, steps_per_epoch: int) -> None:
        super().__init__()
        self.init_lr = float(init_lr)
        self.lr_decay_epoch = [int(epoch) for epoch in lr_decay_epoch]
        self.lr_rate = float(lr_rate)
        self.warmup_epoch = float(warmup_epoch)
        self.min_lr = float(min_lr)
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step):
        epoch = tf.cast(step, tf.float32) / float(self.steps_per_epoch)
        decays = tf.add_n([tf.cast(epoch >= boundary, tf.float32) for boundary in self.lr_decay_epoch]) \
            if self.lr_decay_epoch else 0.0
        lr = self.init_lr * tf.pow(self.lr_rate, decays)
        if self.warmup_epoch > 0:
            warm = self.min_lr + (self.init_lr - self.min_lr) * epoch / self.warmup_epoch
            lr = tf.where(epoch < self.warmup_epoch, warm, lr)
        return tf.maximum(lr, self.min_lr)

    def get_config(self) -> dict[str, Any]:
        return {"init_lr": self.init_lr, "lr_decay_epoch": self.lr_decay_epoch, "lr_rate": self.lr_rate,
                "warmup_epoch": self.warmup_epoch, "min_lr": self.min_lr, "steps_per_epoch": self.steps_per_epoch}


def schedule_from_config(train: TrainSettings, steps_per_epoch: int) -> WarmupMultiStepLR:
    """The schedule of the training settings ``train`` for an epoch of ``steps_per_epoch`` optimizer steps."""
    return WarmupMultiStepLR(train.init_lr, train.lr_decay_epoch, train.lr_rate, train.warmup_epoch,
                             train.min_lr, steps_per_epoch)
