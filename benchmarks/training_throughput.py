"""Training throughput on this machine (``benchmark_training.py``): the input pipeline alone, the compiled
train step alone (float32 and, where the CPU has bfloat16 instructions, mixed_bfloat16), and both together."""
from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING

from benchmarks.report import Report, Table
from benchmarks.timing import time_call

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any

    from components.config import Settings

WARMUP_STEPS = 3


def cpu_has_bfloat16() -> bool:
    """True when /proc/cpuinfo lists AVX512_BF16 or AMX_BF16 (Linux; False elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def time_pipeline(iterator: Iterator[Any], steps: int, batch_size: int) -> float:
    """Images/s a dataset's ``iterator`` delivers (after warm-up batches)."""
    return time_call(lambda: next(iterator), steps, WARMUP_STEPS).per_second(batch_size)


def compiled_train_step(settings: Settings) -> Callable[..., Any]:
    """The compiled train step (``training.trainer.make_train_step``) of a fresh model at ``settings``' precision."""
    import tensorflow as tf

    from training.trainer import build_optimizer, build_training_model, make_train_step
    tf.keras.utils.set_random_seed(0)
    model = build_training_model(settings)
    return make_train_step(model, build_optimizer(settings, steps_per_epoch=100), settings)


def time_train_steps(train_step: Callable[..., Any], batch_size: int, steps: int,
                     next_batch: Callable[[int], Any]) -> float:
    """Images/s of ``train_step`` on the batches ``next_batch(index)`` returns (after warm-up steps, the first
    of which traces the step unless it ran before); each step's loss is fetched, so a step is timed whole."""
    indices = itertools.chain(range(WARMUP_STEPS), range(steps))   # the batch index of each call, warm-up first

    def step() -> float:
        return float(train_step(*next_batch(next(indices)))[0])

    return time_call(step, steps, WARMUP_STEPS).per_second(batch_size)


def run(settings: Settings, steps: int) -> list[tuple[str, float]]:
    """[(row, images/s)] for the pipeline, each precision's train step, and pipeline + float32 step (the float32
    step is compiled once, for both of its rows)."""
    from dataset.tf_dataset_preprocess import load_dataset
    batch_size = settings.train.batch_size

    def pipeline():
        return iter(load_dataset(settings.data.train_tfrecord, settings, training=True, batch_size=batch_size,
                                 repeat=True, seed=0))

    iterator = pipeline()
    rows = [("tf.data pipeline alone (decode, augment, encode targets)", time_pipeline(iterator, steps, batch_size))]
    batches = [next(iterator) for _ in range(4)]
    del iterator   # its prefetching stops: nothing else runs while the steps are timed

    def in_memory(index):
        return batches[index % len(batches)]

    float32_step = compiled_train_step(settings.replace(mixed_precision=False))
    rows.append(("train step alone, float32", time_train_steps(float32_step, batch_size, steps, in_memory)))
    if cpu_has_bfloat16():
        mixed_step = compiled_train_step(settings.replace(mixed_precision=True))
        rows.append(("train step alone, mixed_bfloat16", time_train_steps(mixed_step, batch_size, steps, in_memory)))
    source = pipeline()   # a fresh one: batches prefetched while the steps above ran would flatter this row
    rows.append(("pipeline + train step, float32 (as train.py)",
                 time_train_steps(float32_step, batch_size, steps, lambda index: next(source))))
    return rows


def throughput_report(rows: Sequence[tuple[str, float]], settings: Settings, load_before: str,
                      load_after: str) -> Report:
    """The Report of :func:`run`'s rows under a line naming the batch, input, network and machine."""
    spec = settings.model
    title = (f"Training throughput, batch {settings.train.batch_size}, input {spec.input_size[0]}x"
             f"{spec.input_size[1]}, network {spec.network} (base_channel {spec.base_channel}), {os.cpu_count()} "
             f"CPU threads; bfloat16 instructions: {'yes' if cpu_has_bfloat16() else 'no'}; "
             f"load average {load_before} before, {load_after} after")
    return Report(tables=[Table(("what", "images/s"), [(row, f"{rate:.1f}") for row, rate in rows], [title],
                                right=("images/s",))])
