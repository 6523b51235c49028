"""Detection errors by face size: recall, its ceiling, wrong-class and localisation misses, box size ratios.

    python mAP/analyse_errors.py [--gt_dir mAP/ground-truth] [--det_dir mAP/detection-results] [--score 0.3]
                                 [--size_bins 16,32,64,128] [--output_dir mAP/map-results] [--no_plot]
    python mAP/analyse_errors.py --set_dirs runs/map_val/Maskdata,runs/map_val/ILC2021 [--output_dir R]

Reads the folders compute_mAP.py reads (see ``mAP/voc_ap.py`` for the file formats; difficult boxes are
left out) and bins faces by their side sqrt(w*h) in image pixels. Prints a table per set (see
``mAP/analyse_errors.py`` for the columns) and writes them to ``<output_dir>/errors.txt``, with a plot of the
recall per size bin of each class and set, ``<output_dir>/recall_by_size.png``, and the faces found with a
score of at least ``--review_score`` only as another class, a list of labels to check, to
``<output_dir>/confusions.txt``. Below each set's table, the AP each kind of false positive costs per class
(background, localisation, wrong class, duplicate; see ``mAP/false_positives.py``), plotted in
``<output_dir>/ap_by_false_positive.png``.
"""
import argparse
import os

import cli
from components.config import flag_type
from mAP.error_analysis import (
    CONFUSIONS_FILE_NAME,
    DEFAULT_REVIEW_SCORE,
    DEFAULT_SCORE,
    DEFAULT_SIZE_BINS,
    ERRORS_FILE_NAME,
    FALSE_POSITIVE_PLOT_FILE_NAME,
    PLOT_FILE_NAME,
    analyse_folders,
    analyse_set_dirs,
    check_size_bins,
    write_errors,
)
from mAP.sets import folder_name


def size_bins(text):
    """argparse type of ``--size_bins``: ``16,32,64`` (pixels, increasing) -> (16.0, 32.0, 64.0)."""
    try:
        return check_size_bins(part for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive increasing pixel sizes, comma-separated, "
                                         f"e.g. 16,32,64,128, got {text!r}") from None


def build_parser():
    parser = cli.parser(__doc__, config=False)
    cli.add_folder_arguments(parser)
    parser.add_argument("--score", type=flag_type("score"), default=DEFAULT_SCORE,
                        help=f"score a detection needs to count (default {DEFAULT_SCORE:g}; the ceiling "
                             "column takes every score in the files)")
    parser.add_argument("--size_bins", type=size_bins, default=DEFAULT_SIZE_BINS,
                        help="edges of the face-size bins, side sqrt(w*h) in pixels (default 16,32,64,128: "
                             "<16, 16-32, 32-64, 64-128, >=128)")
    parser.add_argument("--review_score", type=flag_type("review_score"), default=DEFAULT_REVIEW_SCORE,
                        help=f"score of another class's detection that lists a face in {CONFUSIONS_FILE_NAME} "
                             f"(default {DEFAULT_REVIEW_SCORE:g})")
    parser.add_argument("--output_dir", default=cli.repo_path("mAP", "map-results"),
                        help=f"where {ERRORS_FILE_NAME}, {CONFUSIONS_FILE_NAME}, {PLOT_FILE_NAME} and "
                             f"{FALSE_POSITIVE_PLOT_FILE_NAME} go "
                             "(default: mAP/map-results of the repository)")
    parser.add_argument("--no_plot", action="store_true",
                        help=f"do not write {PLOT_FILE_NAME} and {FALSE_POSITIVE_PLOT_FILE_NAME}")
    return parser


def body(args, settings):
    if cli.set_dirs_given(args):
        analyses = analyse_set_dirs(args.set_dirs, args.score, args.size_bins, args.review_score)
    else:   # one set, named by the folder holding its detection-results/
        name = folder_name(os.path.dirname(os.path.abspath(args.det_dir)))
        analyses = {name: analyse_folders(args.gt_dir, args.det_dir, args.score, args.size_bins,
                                          args.review_score)}
    print(write_errors(analyses, args.output_dir, plots=not args.no_plot))
    for name, analysis in analyses.items():
        print(f"{name}: {len(analysis.confusions)} faces found with a score >= {args.review_score:g} only as "
              f"another class (listed in {CONFUSIONS_FILE_NAME})")
    print(f"results written to {os.path.join(args.output_dir, ERRORS_FILE_NAME)}, {CONFUSIONS_FILE_NAME}"
          + ("" if args.no_plot else f", {PLOT_FILE_NAME} and {FALSE_POSITIVE_PLOT_FILE_NAME}"))


def main(argv=None):
    return cli.run(build_parser(), body, argv)

