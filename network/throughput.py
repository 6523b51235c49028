"""Training throughput on this machine (``benchmark_training.py``): the input pipeline alone, the compiled
train step alone (float32 and, where the CPU has bfloat16 instructions, mixed_bfloat16), and both together."""
import os
import time

WARMUP_STEPS = 3


def cpu_has_bfloat16():
    """True when /proc/cpuinfo lists AVX512_BF16 or AMX_BF16 (Linux; False elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def time_pipeline(dataset, steps, batch_size):
    """Images/s the dataset delivers (after warm-up batches)."""
    iterator = iter(dataset)
    for _ in range(WARMUP_STEPS):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * batch_size / (time.perf_counter() - start)


def time_train_steps(cfg, batches, steps, from_pipeline=None):
    """Images/s of the compiled train step, on ``batches`` held in memory or drawn from ``from_pipeline``."""
    import tensorflow as tf

    from network.trainer import build_optimizer, build_training_model, make_train_step
    tf.keras.utils.set_random_seed(0)
    model = build_training_model(cfg)
    optimizer = build_optimizer(cfg, steps_per_epoch=100)
    train_step = make_train_step(model, optimizer, cfg)
    source = iter(from_pipeline) if from_pipeline is not None else None

    def next_batch(index):
        return next(source) if source is not None else batches[index % len(batches)]

    for index in range(WARMUP_STEPS):
        float(train_step(*next_batch(index))[0])
    start = time.perf_counter()
    for index in range(steps):
        losses = train_step(*next_batch(index))
    float(losses[0])
    return steps * cfg["batch_size"] / (time.perf_counter() - start)


def run(cfg, steps):
    """[(row, images/s)] for the pipeline, each precision's train step, and pipeline + float32 step."""
    from dataset.tf_dataset_preprocess import load_dataset
    batch_size = cfg["batch_size"]

    def pipeline():
        return load_dataset(cfg["train_tfrecord"], cfg, training=True, batch_size=batch_size, repeat=True, seed=0)

    rows = [("tf.data pipeline alone (decode, augment, encode targets)", time_pipeline(pipeline(), steps, batch_size))]
    batches = list(pipeline().take(4))
    precisions = [("float32", False)] + ([("mixed_bfloat16", True)] if cpu_has_bfloat16() else [])
    for label, mixed in precisions:
        rows.append((f"train step alone, {label}", time_train_steps(dict(cfg, mixed_precision=mixed), batches, steps)))
    rows.append(("pipeline + train step, float32 (as train.py)",
                 time_train_steps(dict(cfg, mixed_precision=False), None, steps, from_pipeline=pipeline())))
    return rows


def format_table(rows, cfg, load_before, load_after):
    lines = [f"Training throughput, batch {cfg['batch_size']}, input {cfg['input_size'][0]}x{cfg['input_size'][1]}, "
             f"{os.cpu_count()} CPU threads; bfloat16 instructions: {'yes' if cpu_has_bfloat16() else 'no'}; "
             f"load average {load_before:.2f} before, {load_after:.2f} after",
             "", "| what | images/s |", "| --- | ---: |"]
    lines += [f"| {row} | {rate:.1f} |" for row, rate in rows]
    return "\n".join(lines) + "\n"
