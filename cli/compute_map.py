"""PASCAL VOC average precision from folders of text files (the layout of the Cartucho/mAP tool).

    python mAP/compute_mAP.py [--gt_dir mAP/ground-truth] [--det_dir mAP/detection-results] [--iou 0.5]
                              [--output_dir mAP/map-results] [--no_plot]

See ``mAP/compute_mAP.py`` for the file formats. Prints a per-class table and the mAP, and writes
``results.txt`` and one precision/recall plot per class (``<class>_pr.png``) under ``--output_dir``.
"""
import sys

import cli
from mAP.compute_mAP import evaluate_folders, write_results


def build_parser():
    parser = cli.parser(__doc__, config=False)
    parser.add_argument("--gt_dir", default=cli.repo_path("mAP", "ground-truth"),
                        help="ground-truth .txt folder (default: mAP/ground-truth of the repository)")
    parser.add_argument("--det_dir", default=cli.repo_path("mAP", "detection-results"),
                        help="detection .txt folder (default: mAP/detection-results of the repository)")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU needed for a true positive")
    parser.add_argument("--output_dir", default=cli.repo_path("mAP", "map-results"),
                        help="where results.txt and the plots go (default: mAP/map-results of the repository)")
    parser.add_argument("--no_plot", action="store_true", help="do not write precision/recall plots")
    return parser


def body(args, cfg):
    lines = write_results(evaluate_folders(args.gt_dir, args.det_dir, args.iou), args.output_dir,
                          plots=not args.no_plot)
    print("\n".join(lines))
    print(f"results written to {args.output_dir}")


def main(argv=None):
    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
