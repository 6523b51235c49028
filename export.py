"""Export a trained .keras model for deployment.

The command line is cli/export.py (``facemask-export`` once installed)."""
import sys

from cli.export import main

if __name__ == "__main__":
    sys.exit(main())
