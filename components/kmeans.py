"""k-means anchors from the boxes of VOC folders (the command line is cli/kmeans.py;
``facemask-kmeans`` once installed)."""
import sys

from cli.kmeans import main

if __name__ == "__main__":
    sys.exit(main())
