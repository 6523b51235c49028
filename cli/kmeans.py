"""Anchor sizes for the SSD heads by k-means on the training boxes, with distance 1 - IoU.

    python components/kmeans.py --data data/ilc2021.yaml [--root /path/to/ILC2021] [--k 10]
    python components/kmeans.py --dataset_path VOC_DIR [--split train] [--k 10] [--eval_split val]
                                [--output runs/kmeans_anchors.png] [--<config key> VALUE ...]

With ``--data`` the boxes are those of the data file's train: sources (and ``--eval_split val`` scores its
val: sources). Labels are counted per class first: labels that map to no class stop the run (exit 2) unless
``--skip_unknown_labels`` is given.

Prints the anchors grouped per head in the format of ``min_sizes`` in components/config.py, the mean best IoU
of those anchors and of the config's anchors, and writes a scatter plot of the box sizes (see
``components/kmeans.py``).
"""
import os
import sys

import cli
from components.config import DATA_KEYS, flag_type
from components.errors import ProjectError
from dataset.anchor_kmeans import format_min_sizes, plot_anchors, study_anchors
from dataset.label_counts import SKIP_FLAG

DEFAULT_OUTPUT = os.path.join("runs", "kmeans_anchors.png")   # the README's figure (assets/) only when asked
KMEANS_KEYS = (*DATA_KEYS, "input_size", "min_sizes", "steps", "seed")   # the classes, the anchors, k-means' seed


def build_parser():
    parser = cli.parser(__doc__, keys=KMEANS_KEYS, data=True)
    parser.add_argument("--dataset_path", default=None,
                        help="VOC folder (Annotations/, JPEGImages/, ImageSets/); or --data: its sources")
    parser.add_argument("--split", default="train", help="name of a file in ImageSets/Main, without .txt")
    parser.add_argument("--k", type=flag_type("k"), default=None,
                        help="number of anchors (default: the config's anchors per cell summed, 10)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help=f"scatter plot PNG (default {DEFAULT_OUTPUT})")
    parser.add_argument("--eval_split", default=None,
                        help="also score both anchor sets on this split's boxes (e.g. val), which k-means did not see")
    parser.add_argument(SKIP_FLAG, action="store_true",
                        help="leave out boxes whose label maps to no class instead of stopping")
    return parser


def box_sources(args, splits):
    """[(VOC folder, split)] per split of ``splits`` (None: none): the data file's train: / val: sources for
    the splits called train / val, else ``--dataset_path`` (or the data file's root) with that split."""
    spec = None
    if args.data:
        from components.data_file import load_data_file
        spec = load_data_file(args.data, args.root)
        spec.check_root()
    elif not args.dataset_path:
        raise ProjectError("--dataset_path or --data is required")
    result = []
    for split in splits:
        if split is None:
            result.append([])
        elif spec is not None and split in spec.sources:
            result.append([(source.voc_path, source.split) for source in spec.sources[split]])
        else:
            result.append([(args.dataset_path if spec is None else spec.root, split)])
    return result


def print_study(study, args, spec):
    """Print ``study`` (an AnchorStudy) with the heads of ``spec`` (the ModelSpec: input size, steps)."""
    input_h, input_w = spec.input_size
    of_data = f" of {args.data}" if args.data else ""
    print(f"boxes: {len(study.boxes_wh)} (split {args.split!r}{of_data}, pixels at input {input_w}x{input_h} w x h)")
    if study.groups is not None:
        print("k-means anchors (w, h) per head, min_sizes format:")
        print(f"  {format_min_sizes(study.groups)}")
        for step, group in zip(spec.steps, study.groups):
            print(f"  stride {step:>3}: {format_min_sizes([group])[1:-1]}")
    else:
        print(f"k-means anchors (w, h), not grouped: k={len(study.anchors)} differs from the config's "
              f"{len(study.default_anchors)} anchors")
        print(f"  {format_min_sizes([[tuple(anchor) for anchor in study.anchors]])[1:-1]}")
    print(f"mean IoU: k-means {study.kmeans_iou:.4f} | config min_sizes {study.default_iou:.4f}")
    if study.held_out is not None:
        count, eval_kmeans, eval_default = study.held_out
        print(f"mean IoU on {args.eval_split!r} ({count} boxes): k-means {eval_kmeans:.4f} | "
              f"config min_sizes {eval_default:.4f}")
    print(f"plot written to {args.output}")


def body(args, settings):
    skipped = []
    train_sources, eval_sources = box_sources(args, [args.split, args.eval_split])
    study = study_anchors(train_sources, settings, args.k, eval_sources, skipped, progress=True,
                          skip_unknown=args.skip_unknown_labels, fix_file=args.data, log=print)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    plot_anchors(study.boxes_wh, study.anchors, study.default_anchors, args.output,
                 title=f"{args.split}: {len(study.boxes_wh)} boxes, mean IoU k-means {study.kmeans_iou:.3f} "
                       f"vs config {study.default_iou:.3f}")
    for reason in skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    if skipped:
        print(f"skipped {len(skipped)} images/objects (reasons above)", file=sys.stderr)
    print_study(study, args, settings.model)


def main(argv=None):
    return cli.run(build_parser(), body, argv)

