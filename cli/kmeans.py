"""Anchor sizes for the SSD heads by k-means on the training boxes, with distance 1 - IoU.

    python components/kmeans.py --dataset_path VOC_DIR [--split train] [--k 10] [--eval_split val]
                                [--output assets/kmeans_anchors.png] [--<config key> VALUE ...]

Prints the anchors grouped per head in the format of ``min_sizes`` in components/config.py, the mean best IoU
of those anchors and of the config's anchors, and writes a scatter plot of the box sizes (see
``components/kmeans.py``).
"""
import os
import sys

import cli
from components.kmeans import format_min_sizes, plot_anchors, study_anchors


def build_parser():
    parser = cli.parser(__doc__)
    parser.add_argument("--dataset_path", required=True, help="VOC folder (Annotations/, JPEGImages/, ImageSets/)")
    parser.add_argument("--split", default="train", help="name of a file in ImageSets/Main, without .txt")
    parser.add_argument("--k", type=int, default=None,
                        help="number of anchors (default: the config's anchors per cell summed, 10)")
    parser.add_argument("--output", default=cli.repo_path("assets", "kmeans_anchors.png"),
                        help="scatter plot PNG (default: assets/kmeans_anchors.png of the repository)")
    parser.add_argument("--eval_split", default=None,
                        help="also score both anchor sets on this split's boxes (e.g. val), which k-means did not see")
    return parser


def print_study(study, args, cfg):
    input_h, input_w = cfg["input_size"]
    print(f"boxes: {len(study.boxes_wh)} (split {args.split!r}, pixels at input {input_w}x{input_h} w x h)")
    if study.groups is not None:
        print("k-means anchors (w, h) per head, min_sizes format:")
        print(f"  {format_min_sizes(study.groups)}")
        for step, group in zip(cfg["steps"], study.groups):
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


def body(args, cfg):
    skipped = []
    study = study_anchors(args.dataset_path, args.split, cfg, args.k, args.eval_split, skipped, progress=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    plot_anchors(study.boxes_wh, study.anchors, study.default_anchors, args.output,
                 title=f"{args.split}: {len(study.boxes_wh)} boxes, mean IoU k-means {study.kmeans_iou:.3f} "
                       f"vs config {study.default_iou:.3f}")
    for reason in skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    if skipped:
        print(f"skipped {len(skipped)} images/objects (reasons above)", file=sys.stderr)
    print_study(study, args, cfg)


def main(argv=None):
    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
