"""Load benchmark of the REST API (POST /detect at several concurrencies).

The command line is cli/benchmark_serve.py (``facemask-benchmark-serve`` once installed)."""
import sys

from cli.benchmark_serve import main

if __name__ == "__main__":
    sys.exit(main())
