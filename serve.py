"""Serve the web demo and the REST API of a face-mask detector.

The command line is cli/serve.py (``facemask-serve`` once installed)."""
import sys

from cli.serve import main

if __name__ == "__main__":
    sys.exit(main())
