"""PASCAL VOC average precision from folders of text files (the layout of the Cartucho/mAP tool).

    python mAP/compute_mAP.py [--gt_dir mAP/ground-truth] [--det_dir mAP/detection-results] [--iou 0.5]
                              [--output_dir mAP/map-results] [--no_plot]
    python mAP/compute_mAP.py --set_dirs runs/map_val/Maskdata,runs/map_val/ILC2021 [--output_dir R]

See ``mAP/voc_ap.py`` for the file formats. Prints a per-class table and the mAP, and writes
``results.txt`` and one precision/recall plot per class (``<class>_pr.png``) under ``--output_dir``.
With ``--set_dirs`` (folders holding ``ground-truth/`` and ``detection-results/`` each, as ``mAP/detect.py``
writes them for several sets) each set is scored, its table printed and written to ``<output_dir>/<set name>/``,
then a summary table (a row per set: AP per class and mAP, and their mean) printed and written to
``<output_dir>/summary.txt``.
"""

import cli
from components.config import flag_type
from mAP.sets import SUMMARY_FILE_NAME
from mAP.voc_ap import evaluate_folders, evaluate_set_dirs, write_results, write_set_results


def build_parser():
    parser = cli.parser(__doc__, config=False)
    cli.add_folder_arguments(parser)
    parser.add_argument("--iou", type=flag_type("iou"), default=0.5, help="IoU needed for a true positive")
    parser.add_argument("--output_dir", default=cli.repo_path("mAP", "map-results"),
                        help="where results.txt and the plots go, with --set_dirs one folder per set and "
                             f"{SUMMARY_FILE_NAME} (default: mAP/map-results of the repository)")
    parser.add_argument("--no_plot", action="store_true", help="do not write precision/recall plots")
    return parser


def score_sets(args):
    """--set_dirs: each set's table, then the summary table."""
    tables, summary = write_set_results(evaluate_set_dirs(args.set_dirs, args.iou), args.output_dir,
                                        plots=not args.no_plot)
    for name, lines in tables.items():
        print(f"{name}:")
        print("\n".join(lines) + "\n")
    print("\n".join(summary))
    print(f"results written to {args.output_dir} (a folder per set, {SUMMARY_FILE_NAME})")


def body(args, settings):
    if cli.set_dirs_given(args):
        return score_sets(args)
    lines = write_results(evaluate_folders(args.gt_dir, args.det_dir, args.iou), args.output_dir,
                          plots=not args.no_plot)
    print("\n".join(lines))
    print(f"results written to {args.output_dir}")


def main(argv=None):
    return cli.run(build_parser(), body, argv)

