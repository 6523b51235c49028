"""tf.distribute for training: the strategy by name, which process is the chief, the scaled settings."""
from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

from training.errors import TrainingError

if TYPE_CHECKING:
    from components.config import Settings

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy called ``name``: default (one device), mirrored (all local GPUs, or the
    logical devices configured), multi_worker (several hosts described by the TF_CONFIG variable)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise TrainingError(f"unknown strategy {name!r}: expected one of {', '.join(STRATEGIES)}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes checkpoints and logs: always, except on non-chief workers."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker"
                                             and resolver.task_id == 0)


def distributed_config(settings: Settings, num_replicas: int) -> Settings:
    """``settings`` for ``num_replicas`` replicas: ``batch_size`` stays per replica, the learning rates scale
    linearly with the global batch."""
    return settings.replace(init_lr=settings.train.init_lr * num_replicas)
