"""Score detection files against ground truth: VOC AP per class and mAP (the command line is cli/compute_map.py;
``facemask-compute-map`` once installed)."""
import sys

from cli.compute_map import main

if __name__ == "__main__":
    sys.exit(main())
