"""Training throughput on this machine, in one Markdown table: does the input pipeline keep up, does bfloat16 pay?

    python benchmark_training.py [--train_tfrecord dataset/train_mask.tfrecord] [--batch_size 32] [--steps 15]
                                 [--input_size "(240, 320)"] [--network rfb_pan] [--output benchmark_training.md]

Rows: the augmenting tf.data pipeline alone (images/s it can deliver), the compiled train step alone on batches
already in memory (float32, and "mixed_bfloat16" when the CPU has bfloat16 instructions), and both together
as ``train.py`` runs them. Each timing follows warm-up steps (tracing); the load average is recorded because
other work on the machine slows every row.
"""
import cli
from components.config import DEFAULT_SETTINGS, flag_type

BENCHMARK_KEYS = ("batch_size", "input_size", "network", "base_channel")   # the settings a throughput depends on


def build_parser():
    parser = cli.parser(__doc__, keys=BENCHMARK_KEYS)
    parser.add_argument("--train_tfrecord", default=cli.repo_path(DEFAULT_SETTINGS.data.train_tfrecord[0]),
                        help="training TFRecord to read (default: the first of the config's train_tfrecord)")
    parser.add_argument("--steps", type=flag_type("steps"), default=15, help="timed steps per row (after warm-up)")
    parser.add_argument("--output", default=None, help="also write the table to this Markdown file")
    return parser


def body(args, settings):
    cli.check_exists(args.train_tfrecord, "TFRecord", "file", "make it with dataset/voc_to_tfrecord.py")
    cli.check_at_least("--steps", args.steps, 1)
    from benchmarks.timing import load_average
    from benchmarks.training_throughput import run, throughput_report  # imports TensorFlow
    settings = settings.replace(train_tfrecord=args.train_tfrecord)
    load_before = load_average()
    rows = run(settings, args.steps)
    written = throughput_report(rows, settings, load_before, load_average())
    written.show()
    if args.output:
        written.write(args.output)


def main(argv=None):
    return cli.run(build_parser(), body, argv)

