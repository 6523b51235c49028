"""Convert VOC folders to a TFRecord (the command line is cli/voc_to_tfrecord.py;
``facemask-voc-to-tfrecord`` once installed)."""
import sys

from cli.voc_to_tfrecord import main

if __name__ == "__main__":
    sys.exit(main())
