"""Detect masked and unmasked faces in an image, a folder, a video file or a camera stream.

The command line is cli/inference.py (``facemask-inference`` once installed)."""
import sys

from cli.inference import main

if __name__ == "__main__":
    sys.exit(main())
