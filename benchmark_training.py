"""Training throughput on this machine, in one Markdown table: is the input pipeline fast enough, and does
bfloat16 mixed precision pay?

    python benchmark_training.py [--train_tfrecord dataset/train_mask.tfrecord] [--batch_size 32] [--steps 15]
                                 [--output benchmark_training.md]

Rows: the augmenting tf.data pipeline alone (images/s it can deliver), the compiled train step alone on batches
already in memory (float32, and "mixed_bfloat16" when the CPU has bfloat16 instructions), and both together
as ``train.py`` runs them. Each timing follows warm-up steps (tracing); the load average is recorded because
other work on the machine slows every row.
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, REPO_ROOT)

from components.atomic_io import write_text_atomically  # noqa: E402
from components.config import cfg as default_cfg, tfrecord_paths, validate_config  # noqa: E402

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


def main(argv=None):
    parser = argparse.ArgumentParser(description="Measure training throughput (images/s).")
    parser.add_argument("--train_tfrecord", default=os.path.join(REPO_ROOT, tfrecord_paths(default_cfg["train_tfrecord"])[0]))
    parser.add_argument("--batch_size", type=int, default=default_cfg["batch_size"])
    parser.add_argument("--steps", type=int, default=15, help="timed steps per row (after warm-up)")
    parser.add_argument("--output", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.train_tfrecord):
        print(f"error: {args.train_tfrecord}: TFRecord not found (make it with dataset/voc_to_tfrecord.py)",
              file=sys.stderr)
        return 2
    if args.steps < 1:
        print("error: --steps must be at least 1", file=sys.stderr)
        return 2
    cfg = validate_config(dict(default_cfg, train_tfrecord=args.train_tfrecord, batch_size=args.batch_size))
    load_before = os.getloadavg()[0]
    rows = run(cfg, args.steps)
    table = format_table(rows, cfg, load_before, os.getloadavg()[0])
    print(table)
    if args.output:
        write_text_atomically(args.output, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
