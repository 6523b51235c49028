"""Accuracy against speed of one model at several input sizes.

The command line is cli/benchmark_input_size.py (``facemask-benchmark-input-size`` once installed)."""
import sys

from cli.benchmark_input_size import main

if __name__ == "__main__":
    sys.exit(main())
