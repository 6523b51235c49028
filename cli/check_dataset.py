"""Draw a grid of augmented training samples with their boxes decoded back from the SSD targets.

    python dataset/check_dataset.py [--data data/ilc2021.yaml | --tfrecord dataset/train_mask.tfrecord]
                                    [--num_images 16] [--output runs/check_dataset.png]
    python dataset/check_dataset.py --matching_stats [--tfrecord ...] [--min_positives 0]

``--matching_stats`` instead prints how many positive priors the matching gives a face, by face size (see
``dataset/check_dataset.py``).
"""
import os

import cli
from components.class_list import check_tfrecord_classes
from components.config import ANCHOR_KEYS, AUGMENTATION_KEYS, DATA_KEYS, flag_type
from dataset.dataset_report import draw_grid, format_matching_stats, matching_stats

DEFAULT_OUTPUT = os.path.join("runs", "check_dataset.png")   # the README's figure (assets/) only when asked


def build_parser():
    parser = cli.parser(__doc__, keys=DATA_KEYS + ANCHOR_KEYS + AUGMENTATION_KEYS + ("keep_aspect",), data=True)
    parser.add_argument("--tfrecord", default=None, help="default: the first training TFRecord (of --data)")
    parser.add_argument("--num_images", type=flag_type("num_images"), default=16, help="samples in the grid")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help=f"grid PNG (default {DEFAULT_OUTPUT})")
    parser.add_argument("--no_augment", action="store_true", help="show validation-style (resized only) samples")
    parser.add_argument("--matching_stats", action="store_true",
                        help="print positive priors per face by face size instead of drawing")
    return parser


def body(args, settings):
    cli.check_at_least("--num_images", args.num_images, 1)
    tfrecord = args.tfrecord or (settings.data.train_tfrecord or ("",))[0]
    cli.check_exists(tfrecord, "TFRecord", "file", "create it with python dataset/voc_to_tfrecord.py"
                     + (f" --data {args.data}" if args.data else ""))
    check_tfrecord_classes(tfrecord, settings.model.labels_list, "--data / --labels_list")
    if args.matching_stats:
        print(format_matching_stats(matching_stats(tfrecord, settings)))
    else:
        print(draw_grid(tfrecord, settings, args.num_images, args.output, training=not args.no_augment))


def main(argv=None):
    return cli.run(build_parser(), body, argv)

