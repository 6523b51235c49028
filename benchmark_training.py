"""Training throughput on this machine.

The command line is cli/benchmark_training.py (``facemask-benchmark-training`` once installed)."""
import sys

from cli.benchmark_training import main

if __name__ == "__main__":
    sys.exit(main())
