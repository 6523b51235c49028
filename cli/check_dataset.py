"""Draw a grid of augmented training samples with their boxes decoded back from the SSD targets.

    python dataset/check_dataset.py [--tfrecord dataset/train_mask.tfrecord] [--num_images 16]
                                    [--output assets/check_dataset.png]
    python dataset/check_dataset.py --matching_stats [--tfrecord ...] [--min_positives 0]

``--matching_stats`` instead prints how many positive priors the matching gives a face, by face size (see
``dataset/check_dataset.py``).
"""
import sys

import cli
from components.config import tfrecord_paths
from dataset.check_dataset import draw_grid, format_matching_stats, matching_stats


def build_parser():
    parser = cli.parser(__doc__)
    parser.add_argument("--tfrecord", default=None, help="default: the first of config train_tfrecord")
    parser.add_argument("--num_images", type=int, default=16)
    parser.add_argument("--output", default=cli.repo_path("assets", "check_dataset.png"),
                        help="grid PNG (default: assets/check_dataset.png of the repository)")
    parser.add_argument("--no_augment", action="store_true", help="show validation-style (resized only) samples")
    parser.add_argument("--matching_stats", action="store_true",
                        help="print positive priors per face by face size instead of drawing")
    return parser


def body(args, cfg):
    cli.check_at_least("--num_images", args.num_images, 1)
    tfrecord = args.tfrecord or (tfrecord_paths(cfg["train_tfrecord"]) or [""])[0]
    cli.check_exists(tfrecord, "TFRecord", "file", "create it with dataset/voc_to_tfrecord.py")
    if args.matching_stats:
        print(format_matching_stats(matching_stats(tfrecord, cfg)))
    else:
        print(draw_grid(tfrecord, cfg, args.num_images, args.output, training=not args.no_augment))


def main(argv=None):
    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
