"""Check a TFRecord: augmentation grid and anchor matching statistics (the command line is cli/check_dataset.py;
``facemask-check-dataset`` once installed)."""
import sys

from cli.check_dataset import main

if __name__ == "__main__":
    sys.exit(main())
