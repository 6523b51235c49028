"""Training throughput on this machine (``benchmark_training.py``): the input pipeline alone, the compiled
train step alone (float32 and, where the CPU has bfloat16 instructions, mixed_bfloat16), and both together."""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any

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
    for _ in range(WARMUP_STEPS):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * batch_size / (time.perf_counter() - start)


def compiled_train_step(cfg: dict[str, Any]) -> Callable[..., Any]:
    """The compiled train step (``training.trainer.make_train_step``) of a fresh model at ``cfg``'s precision."""
    import tensorflow as tf

    from training.trainer import build_optimizer, build_training_model, make_train_step
    tf.keras.utils.set_random_seed(0)
    model = build_training_model(cfg)
    return make_train_step(model, build_optimizer(cfg, steps_per_epoch=100), cfg)


def time_train_steps(train_step: Callable[..., Any], batch_size: int, steps: int,
                     next_batch: Callable[[int], Any]) -> float:
    """Images/s of ``train_step`` on the batches ``next_batch(index)`` returns (after warm-up steps, the first
    of which traces the step unless it ran before)."""
    for index in range(WARMUP_STEPS):
        float(train_step(*next_batch(index))[0])
    start = time.perf_counter()
    for index in range(steps):
        losses = train_step(*next_batch(index))
    float(losses[0])
    return steps * batch_size / (time.perf_counter() - start)


def run(cfg: dict[str, Any], steps: int) -> list[tuple[str, float]]:
    """[(row, images/s)] for the pipeline, each precision's train step, and pipeline + float32 step (the float32
    step is compiled once, for both of its rows)."""
    from dataset.tf_dataset_preprocess import load_dataset
    batch_size = cfg["batch_size"]

    def pipeline():
        return iter(load_dataset(cfg["train_tfrecord"], cfg, training=True, batch_size=batch_size, repeat=True,
                                 seed=0))

    iterator = pipeline()
    rows = [("tf.data pipeline alone (decode, augment, encode targets)", time_pipeline(iterator, steps, batch_size))]
    batches = [next(iterator) for _ in range(4)]
    del iterator   # its prefetching stops: nothing else runs while the steps are timed

    def in_memory(index):
        return batches[index % len(batches)]

    float32_step = compiled_train_step(cfg.replace(mixed_precision=False))
    rows.append(("train step alone, float32", time_train_steps(float32_step, batch_size, steps, in_memory)))
    if cpu_has_bfloat16():
        mixed_step = compiled_train_step(cfg.replace(mixed_precision=True))
        rows.append(("train step alone, mixed_bfloat16", time_train_steps(mixed_step, batch_size, steps, in_memory)))
    source = pipeline()   # a fresh one: batches prefetched while the steps above ran would flatter this row
    rows.append(("pipeline + train step, float32 (as train.py)",
                 time_train_steps(float32_step, batch_size, steps, lambda index: next(source))))
    return rows


def format_table(rows: Sequence[tuple[str, float]], cfg: dict[str, Any], load_before: float, load_after: float) -> str:
    lines = [f"Training throughput, batch {cfg['batch_size']}, input {cfg['input_size'][0]}x{cfg['input_size'][1]}, "
             f"network {cfg['network']} (base_channel {cfg['base_channel']}), {os.cpu_count()} CPU threads; "
             f"bfloat16 instructions: {'yes' if cpu_has_bfloat16() else 'no'}; "
             f"load average {load_before:.2f} before, {load_after:.2f} after",
             "", "| what | images/s |", "| --- | ---: |"]
    lines += [f"| {row} | {rate:.1f} |" for row, rate in rows]
    return "\n".join(lines) + "\n"
