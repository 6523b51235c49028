"""Time per image of each multi-scale test setting of one model.

The command line is cli/benchmark_test_scales.py (``facemask-benchmark-test-scales`` once installed)."""
import sys

from cli.benchmark_test_scales import main

if __name__ == "__main__":
    sys.exit(main())
