"""Write detection and ground-truth text files of VOC splits (the command line is cli/detect.py;
``facemask-detect`` once installed)."""
import sys

from cli.detect import main

if __name__ == "__main__":
    sys.exit(main())
