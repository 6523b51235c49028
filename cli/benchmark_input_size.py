"""Accuracy against speed of one model at several input sizes: val mAP per validation set, model-only ms.

    python benchmark_input_size.py [--model_path checkpoints/mask_detector.keras] [--sizes 240x320,360x480,480x640]
                                   [--val_tfrecord dataset/val_mask.tfrecord,dataset/val_ilc.tfrecord]
                                   [--output FILE.md]

The Keras model runs at each size directly; TFLite is exported at each size (``export.py --input_size``).
Latency: median of ``--runs`` calls, batch 1, 2 threads; mAP with the default inference settings (flip test
where the priors are mirror-symmetric at that size, letterbox). The table is printed (aligned text on a
terminal, else Markdown) and, with ``--output``, written in Markdown.
"""
import argparse
import sys

import cli
from components.config import flag_type
from components.errors import ProjectError


def build_parser():
    parser = cli.parser(__doc__, config=False)
    parser.add_argument("--model_path", default=cli.DEFAULT_MODEL_PATH,
                        help=f"a .keras model or a folder holding one ({cli.DEFAULT_MODEL_HELP})")
    parser.add_argument("--sizes", default="240x320,360x480,480x640",
                        help="comma-separated HEIGHTxWIDTH input sizes")
    parser.add_argument("--val_tfrecord", default=",".join(cli.repo_path("dataset", name) for name in
                                                           ("val_mask.tfrecord", "val_ilc.tfrecord")),
                        help="comma-separated validation TFRecords (default: Maskdata and ILC2021 val)")
    parser.add_argument("--runs", type=flag_type("runs"), default=50, help="timed runs per size and runtime")
    parser.add_argument("--output", default=None, help="also write the table to this Markdown file")
    return parser


def body(args, settings):
    try:
        sizes = [cli.image_size(text) for text in args.sizes.split(",") if text.strip()]
    except argparse.ArgumentTypeError as error:
        raise ProjectError(f"--sizes: {error}") from None
    tfrecords = [path for path in args.val_tfrecord.split(",") if path.strip()]
    cli.check_at_least("--runs", args.runs, 1)
    for path in tfrecords:
        cli.check_exists(path, "validation TFRecord", "file")
    cli.check_exists(args.model_path, "model")
    from benchmarks.input_size import measure_sizes, sizes_table
    from benchmarks.report import Report
    from runtime.model_files import resolve_model_path
    results = measure_sizes(resolve_model_path(args.model_path), sizes, tfrecords, args.runs,
                            log=lambda message: print(message, file=sys.stderr))
    written = Report(tables=[sizes_table(results)])
    written.show()
    if args.output:
        written.write(args.output)


def main(argv=None):
    return cli.run(build_parser(), body, argv)

