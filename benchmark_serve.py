"""Load benchmark of the REST API: requests/s and latency of ``POST /detect`` at several concurrencies.

    python benchmark_serve.py [--model_path checkpoints/] [--concurrency 1,4,16] [--requests 200]
                              [--image assets/test_00002330.jpg] [--workers 1] [--output FILE.md]

Starts ``serve.py`` in its own process on a free port of 127.0.0.1, waits for ``GET /health``, sends
``--warmup`` untimed requests, then for each concurrency C runs C client threads (one keep-alive connection
each) that post the image until ``--requests`` answers are in, and prints a Markdown table: requests/s
(answered requests over the wall time), p50 / p99 latency of one request (client side: upload, decode,
detection with the model's default flip test, JSON) and the failed count (any answer but 200; serve.py runs with
its default bounds, so more than ``--max_pending`` 32 clients would get 503s). The clients run
on the same machine as the server, so they share its cores; the table records the load average before and
after. Exit status 1 when a request failed.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, REPO_ROOT)

from tqdm import tqdm  # noqa: E402

from components.atomic_io import write_text_atomically  # noqa: E402
from serving.load import run_load  # noqa: E402
from serving.server import bind_socket  # noqa: E402

DEFAULT_MODEL_PATH = os.path.join(REPO_ROOT, "checkpoints")
DEFAULT_IMAGE = os.path.join(REPO_ROOT, "assets", "test_00002330.jpg")
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 180
COLUMNS = ("concurrency", "requests", "failed", "requests/s", "p50 ms", "p99 ms")


def free_port():
    with bind_socket(HOST, 0) as probe:
        return probe.getsockname()[1]


def start_server(model_path, port, workers):
    """``serve.py`` (its default bounds) as a subprocess; returns (process, /health answer) once it answers."""
    command = [sys.executable, os.path.join(REPO_ROOT, "serve.py"), "--model_path", model_path, "--host", HOST,
               "--port", str(port), "--workers", str(workers)]
    # the server's output goes to a file, not a pipe that nobody reads while it runs; stop_server closes it
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    process.log = log
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            lines = [line for line in log.read().splitlines() if line.strip()]
            log.close()
            raise RuntimeError(f"serve.py exited with status {process.returncode}: {lines[-1] if lines else ''}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as response:
                return process, json.loads(response.read())
        except OSError:
            time.sleep(0.5)
    stop_server(process)
    raise RuntimeError(f"serve.py did not answer /health within {STARTUP_TIMEOUT_S} s")


def stop_server(process):
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.log.close()


def load_average():
    try:
        return "/".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def format_table(rows):
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---:"] * len(COLUMNS)) + "|"]
    for row in rows:
        cells = [f"{row[key]:.1f}" if isinstance(row[key], float) else str(row[key]) for key in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def parse_concurrency(text):
    try:
        levels = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers >= 1, got {text!r}")
    return levels


def run(args, log=print):
    """Start the server, load it at each concurrency, stop it; returns the report lines."""
    with open(args.image, "rb") as handle:
        body = handle.read()
    load_before = load_average()
    port = args.port or free_port()
    process, health = start_server(args.model_path, port, args.workers)
    rows = []
    try:
        run_load(HOST, port, body, "image/jpeg", 1, args.warmup)
        for concurrency in args.concurrency:
            with tqdm(total=args.requests, desc=f"concurrency {concurrency}", unit="req", leave=False) as bar:
                result = run_load(HOST, port, body, "image/jpeg", concurrency, args.requests, on_done=bar.update)
            for failure in result.failures:
                log(f"failed request at concurrency {concurrency}: {failure}")
            rows.append(result.summary())
    finally:
        stop_server(process)
    heading = (f"`POST /detect` of {os.path.relpath(args.image, REPO_ROOT)} ({len(body) / 1024:.0f} KiB JPEG), "
               f"model {os.path.relpath(health['model'], REPO_ROOT)} ({health['format']}, flip test "
               f"{health['flip_test']}), {args.workers} inference worker(s), {args.requests} requests per row after "
               f"{args.warmup} warm-up requests; load average {load_before} before, {load_average()} after")
    return [heading, "", *format_table(rows)], rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_path", default=DEFAULT_MODEL_PATH, help="model served (default: checkpoints/)")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="image posted (default: assets/test_00002330.jpg)")
    parser.add_argument("--concurrency", type=parse_concurrency, default=[1, 4, 16],
                        help="comma-separated client counts (default 1,4,16)")
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed requests first (default 10)")
    parser.add_argument("--workers", type=int, default=1, help="serve.py --workers (default 1)")
    parser.add_argument("--port", type=int, default=0, help="port for the server (default: a free one)")
    parser.add_argument("--output", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.image):
        print(f"error: --image: {args.image}: file not found", file=sys.stderr)
        return 2
    if not os.path.exists(args.model_path):
        print(f"error: --model_path: {args.model_path}: model not found", file=sys.stderr)
        return 2
    if args.requests < 1 or args.workers < 1 or args.warmup < 0:
        print("error: --requests and --workers must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    try:
        lines, rows = run(args)
    except (RuntimeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    if args.output:
        write_text_atomically(args.output, "\n".join(lines) + "\n")
    return 1 if any(row["failed"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
