"""Mine faces an annotation leaves out (the command line is cli/mine_unlabelled_faces.py;
``facemask-mine-unlabelled-faces`` once installed)."""
import sys

from cli.mine_unlabelled_faces import main

if __name__ == "__main__":
    sys.exit(main())
