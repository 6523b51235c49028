"""How sure a mAP is: percentile bootstrap intervals over images (the command line is cli/bootstrap_map.py;
``facemask-bootstrap-map`` once installed)."""
import sys

from cli.bootstrap_map import main

if __name__ == "__main__":
    sys.exit(main())
