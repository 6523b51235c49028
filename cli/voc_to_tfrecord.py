"""Convert a VOC split to a TFRecord file.

    python dataset/voc_to_tfrecord.py --dataset_path Maskdata/ --split train --output_file dataset/train_mask.tfrecord

See ``dataset/voc_to_tfrecord.py`` for what a record holds and which items are skipped; the output is
written to a temporary name and renamed when complete.
"""
import sys

import cli
from dataset.voc_to_tfrecord import MAX_IMAGE_SIDE, convert_split


def build_parser():
    parser = cli.parser(__doc__)
    parser.add_argument("--dataset_path", required=True, help="VOC folder (Annotations/, JPEGImages/, ImageSets/)")
    parser.add_argument("--split", default="train", help="name of a file in ImageSets/Main, without .txt")
    parser.add_argument("--output_file", default=None, help="default: dataset/<split>_mask.tfrecord of the repository")
    parser.add_argument("--max_image_side", type=int, default=MAX_IMAGE_SIDE,
                        help=f"downscale larger images to this longer side (default {MAX_IMAGE_SIDE}; 0: never)")
    return parser


def body(args, cfg):
    output_file = args.output_file or cli.repo_path("dataset", f"{args.split}_mask.tfrecord")
    if args.max_image_side < 0:
        raise ValueError(f"--max_image_side: must be 0 (no limit) or positive, got {args.max_image_side}")
    cli.check_exists(args.dataset_path, "dataset folder", "folder")
    try:
        report = convert_split(args.dataset_path, args.split, output_file, cfg, max_image_side=args.max_image_side)
    except KeyboardInterrupt:
        raise cli.Interrupted(f"{output_file} was not changed") from None
    for reason in report.skipped_images:
        print(f"skipped image: {reason}", file=sys.stderr)
    for reason in report.skipped_objects:
        print(f"skipped object: {reason}", file=sys.stderr)
    print(f"{output_file}: {report.summary()}")


def main(argv=None):
    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
