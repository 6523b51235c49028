"""Error analysis of detection files by face size (the command line is cli/analyse_errors.py;
``facemask-analyse-errors`` once installed)."""
import sys

from cli.analyse_errors import main

if __name__ == "__main__":
    sys.exit(main())
