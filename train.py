"""Train the face-mask detector (the command line is cli/train.py; ``facemask-train`` once installed)."""
import sys

from cli.train import main

if __name__ == "__main__":
    sys.exit(main())
