"""How sure a mAP is, and whether a run beats a baseline: the bootstrap over the images of each set.

    python mAP/bootstrap.py --set_dirs runs/A/Maskdata,runs/A/ILC2021 [--samples 1000] [--output_dir R]
    python mAP/bootstrap.py --set_dirs runs/A/Maskdata,runs/A/ILC2021 --baseline_dirs runs/B/Maskdata,runs/B/ILC2021

Reads the folders compute_mAP.py reads (``ground-truth/`` and ``detection-results/`` per set, as mAP/detect.py
writes them), draws each set's images again with replacement ``--samples`` times and scores every draw (see
``mAP/bootstrap.py``). Prints, per set and for the mean over the sets, the mAP with its 95% interval; with
``--baseline_dirs`` (the same sets scored for another model or setting, the same images) also the baseline's,
the difference on the same draws with its interval, and the share of draws where the run is ahead. Writes the
table to ``<output_dir>/bootstrap.txt`` and histograms of the draws to ``<output_dir>/bootstrap.png``.
"""

import cli
from components.config import flag_type
from components.errors import ProjectError
from mAP.bootstrap_ci import (
    DEFAULT_SAMPLES,
    DEFAULT_SEED,
    PLOT_FILE_NAME,
    TABLE_FILE_NAME,
    compare_sets,
    read_set_outcomes,
    write_comparison,
)
from mAP.sets import named_set_dirs


def build_parser():
    parser = cli.parser(__doc__, config=False)
    parser.add_argument("--set_dirs", type=cli.path_list, required=True,
                        help="comma-separated set folders of the run, each holding ground-truth/ and "
                             "detection-results/")
    parser.add_argument("--baseline_dirs", type=cli.path_list, default=None,
                        help="the same sets scored for the baseline, in the same order (optional)")
    parser.add_argument("--samples", type=flag_type("samples"), default=DEFAULT_SAMPLES,
                        help=f"draws per set (default {DEFAULT_SAMPLES})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    parser.add_argument("--iou", type=flag_type("iou"), default=0.5, help="IoU needed for a true positive")
    parser.add_argument("--output_dir", default=cli.repo_path("mAP", "map-results"),
                        help=f"where {TABLE_FILE_NAME} and {PLOT_FILE_NAME} go (default: mAP/map-results "
                             "of the repository)")
    return parser


def read_sets(set_dirs, iou):
    """{set name: SetOutcomes} of set folders, named by the folders."""
    return {name: read_set_outcomes(folder, iou) for name, folder in named_set_dirs(set_dirs).items()}


def body(args, settings):
    if args.samples < 2:
        raise ProjectError(f"--samples: expected at least 2 draws, got {args.samples}")
    if args.baseline_dirs is not None and len(args.baseline_dirs) != len(args.set_dirs):
        raise ProjectError(f"--baseline_dirs: {len(args.baseline_dirs)} folders for "
                           f"{len(args.set_dirs)} in --set_dirs (one per set, in the same order)")
    runs = read_sets(args.set_dirs, args.iou)
    baselines = read_sets(args.baseline_dirs, args.iou) if args.baseline_dirs else None
    if baselines is not None:
        baselines = dict(zip(runs, baselines.values()))   # paired by position, named as the run's sets
    rows = compare_sets(runs, baselines, args.samples, args.seed)
    print("\n".join(write_comparison(rows, args.samples, args.output_dir)))
    print(f"results written to {args.output_dir} ({TABLE_FILE_NAME}, {PLOT_FILE_NAME})")


def main(argv=None):
    return cli.run(build_parser(), body, argv)

