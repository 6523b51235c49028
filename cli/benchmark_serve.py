"""Load benchmark of the REST API: requests/s and latency of ``POST /detect`` at several concurrencies.

    python benchmark_serve.py [--model_path checkpoints/mask_detector.keras] [--concurrency 1,4,16] [--requests 200]
                              [--image assets/test_00002330.jpg] [--workers 1] [--output FILE.md]

Starts ``serve.py`` in its own process on a free port of 127.0.0.1, waits for ``GET /health``, sends
``--warmup`` untimed requests, then for each concurrency C runs C client threads (one keep-alive connection
each) that post the image until ``--requests`` answers are in, and prints a table (aligned text on a terminal,
else Markdown; ``--output``: also written in Markdown): requests/s
(answered requests over the wall time), p50 / p99 latency of one request (client side: upload, decode,
detection with the model's default flip test, JSON) and the failed count (any answer but 200; serve.py runs with
its default bounds, so more clients than its ``--max_pending`` (config key ``serve_max_pending``) would get
503s). The clients run on the same machine as the server, so they share its cores; the table records the load
average before and after. Exit status 1 when a request failed. See ``benchmarks/serving.py``.
"""
import argparse
import sys

import cli
from components.config import flag_type

DEFAULT_IMAGE = cli.repo_path("assets", "test_00002330.jpg")


def concurrency_levels(text):
    """Comma-separated whole numbers >= 1 (argparse type)."""
    try:
        levels = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers >= 1, got {text!r}")
    return levels


def build_parser():
    parser = cli.parser(__doc__, config=False)
    parser.add_argument("--model_path", default=cli.DEFAULT_MODEL_PATH,
                        help=f"model served ({cli.DEFAULT_MODEL_HELP})")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="image posted (default: assets/test_00002330.jpg)")
    parser.add_argument("--concurrency", type=concurrency_levels, default=[1, 4, 16],
                        help="comma-separated client counts (default 1,4,16)")
    parser.add_argument("--requests", type=flag_type("requests"), default=200,
                        help="requests per concurrency (default 200)")
    parser.add_argument("--warmup", type=flag_type("warmup"), default=10, help="untimed requests first (default 10)")
    parser.add_argument("--workers", type=flag_type("workers"), default=1, help="serve.py --workers (default 1)")
    parser.add_argument("--port", type=int, default=0, help="port for the server (default: a free one)")
    parser.add_argument("--output", default=None, help="also write the table to this Markdown file")
    return parser


def body(args, settings):
    cli.check_exists(args.image, "image", "file")
    cli.check_exists(args.model_path, "model")
    cli.check_at_least("--requests", args.requests, 1)
    cli.check_at_least("--workers", args.workers, 1)
    cli.check_at_least("--warmup", args.warmup, 0)
    from benchmarks.serving import measure, report
    result = measure(args.model_path, args.image, args.concurrency, args.requests, args.warmup, args.workers,
                     args.port, log=lambda message: print(message, file=sys.stderr))
    written = report(result, cli.REPO_ROOT)
    written.show()
    if args.output:
        written.write(args.output)
    return 1 if any(row["failed"] for row in result.rows) else 0


def main(argv=None):
    return cli.run(build_parser(), body, argv)

