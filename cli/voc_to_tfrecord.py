"""Convert VOC splits to TFRecord files.

    python dataset/voc_to_tfrecord.py --data data/ilc2021.yaml [--root /path/to/ILC2021] [--split train]
    python dataset/voc_to_tfrecord.py --dataset_path Maskdata/ --split train --output_file dataset/train_mask.tfrecord

With ``--data`` every source of the data file's train: and val: lists (or of ``--split`` only) becomes
``dataset/<source>_<split>.tfrecord``. Each TFRecord gets its class list beside it (``<name>.classes.json``),
which training, validation and check_dataset.py compare with theirs. ``--extra_ignore FILE`` adds the boxes
of that file (``mAP/unlabelled_faces.py``: faces the annotation leaves out) as ``ignore`` boxes. Before
anything is written the labels of each split are counted and shown per class; labels that map to no class
stop the conversion (exit 2) unless ``--skip_unknown_labels`` is given. See ``dataset/voc_to_tfrecord.py``
for what a record holds and which items are skipped; each output is written to a temporary name and renamed
when complete.
"""
import os
import sys

import cli
from components.config import DATA_KEYS, flag_type
from components.errors import ProjectError
from dataset.extra_ignore import read_extra_ignore
from dataset.label_counts import SKIP_FLAG, report_splits_labels
from dataset.tfrecord_writer import MAX_IMAGE_SIDE, convert_split
from dataset.voc import VOCError


def build_parser():
    parser = cli.parser(__doc__, keys=DATA_KEYS, data=True)
    parser.add_argument("--dataset_path", default=None, help="VOC folder (Annotations/, JPEGImages/, ImageSets/)")
    parser.add_argument("--split", default=None,
                        help="name of a file in ImageSets/Main, without .txt (default train; with --data: all)")
    parser.add_argument("--output_file", default=None, help="default: dataset/<split>_mask.tfrecord of the repository")
    parser.add_argument("--max_image_side", type=flag_type("max_image_side"), default=MAX_IMAGE_SIDE,
                        help=f"downscale larger images to this longer side (default {MAX_IMAGE_SIDE}; 0: never)")
    parser.add_argument("--extra_ignore", default=None,
                        help="JSON file of boxes to add as ignore boxes, per image (faces the annotation leaves "
                             "out; written by mAP/unlabelled_faces.py); with --dataset_path only")
    parser.add_argument(SKIP_FLAG, action="store_true",
                        help="leave out boxes whose label maps to no class instead of stopping")
    return parser


def conversion_jobs(args):
    """[(VOC folder, split, output file)] to convert: the data file's sources, or the one split of the flags."""
    if args.data:
        if args.dataset_path or args.output_file:
            raise ProjectError("--data: names the VOC folders and outputs itself; drop --dataset_path / --output_file")
        from components.data_file import load_data_file
        spec = load_data_file(args.data, args.root)
        jobs = [(source.voc_path, source.split, source.tfrecord) for split, sources in spec.sources.items()
                for source in sources if args.split in (None, split)]
        if not jobs:
            raise ProjectError(f"--split: {args.data} has no {args.split}: sources")
        spec.check_root()
        return jobs
    if not args.dataset_path:
        raise ProjectError("--dataset_path or --data is required")
    cli.check_exists(args.dataset_path, "dataset folder", "folder")
    split = args.split or "train"
    output_file = args.output_file or cli.repo_path("dataset", f"{split}_mask.tfrecord")
    if os.path.isdir(output_file):
        raise VOCError(f"{output_file}: is a folder; --output_file must name a file")
    return [(args.dataset_path, split, output_file)]


def body(args, settings):
    if args.max_image_side < 0:
        raise ProjectError(f"--max_image_side: must be 0 (no limit) or positive, got {args.max_image_side}")
    if args.extra_ignore and args.data:
        raise ProjectError("--extra_ignore: give it with --dataset_path (one VOC folder), not with --data")
    jobs = conversion_jobs(args)
    extra_ignore = read_extra_ignore(args.extra_ignore) if args.extra_ignore else None
    report_splits_labels([(dataset_path, split) for dataset_path, split, _ in jobs], settings.data.label_aliases,
                         args.skip_unknown_labels, args.data, print)
    for dataset_path, split, output_file in jobs:
        try:
            report = convert_split(dataset_path, split, output_file, settings, max_image_side=args.max_image_side,
                                   extra_ignore=extra_ignore)
        except KeyboardInterrupt:
            raise cli.Interrupted(f"{output_file} was not changed") from None
        for reason in report.skipped_images:
            print(f"skipped image: {reason}", file=sys.stderr)
        for reason in report.skipped_objects:
            print(f"skipped object: {reason}", file=sys.stderr)
        print(f"{output_file}: {report.summary()}")


def main(argv=None):
    return cli.run(build_parser(), body, argv)

