"""Speed and accuracy of every deployment format of one model.

The command line is cli/benchmark.py (``facemask-benchmark`` once installed)."""
import sys

from cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
