"""List the faces a VOC split's annotation leaves out, as found by a model, to ignore them in training.

    python mAP/detect.py --dataset_path Maskdata/ --split train --output_dir runs/train_det
    python mAP/unlabelled_faces.py --set_dir runs/train_det --output_file runs/Maskdata_train_unlabelled.json \
        --dataset_path Maskdata/ --sheet runs/Maskdata_train_unlabelled.png
    python dataset/voc_to_tfrecord.py --dataset_path Maskdata/ --split train \
        --extra_ignore runs/Maskdata_train_unlabelled.json --output_file dataset/train_mask.tfrecord

Keeps each detection scoring at least ``--min_score`` whose IoU with every annotated box is below ``--max_iou``
(see ``mAP/unlabelled_face_mining.py``) and writes them, per image, to ``--output_file`` (the format of
``dataset/extra_ignore.py``). With ``--dataset_path`` and ``--sheet``, also a contact sheet (PNG) of the
``--sheet_count`` highest-scoring: look at it before training on the list, since a confident false positive
ignored in training is never corrected.
"""

import cv2

import cli
from components.atomic_io import atomic_path
from components.config import flag_type
from components.errors import ProjectError
from components.images import read_image_bgr
from dataset.extra_ignore import write_extra_ignore
from dataset.voc import VOCError, find_image
from mAP.unlabelled_face_mining import (
    DEFAULT_MAX_IOU,
    DEFAULT_MIN_SCORE,
    contact_sheet,
    face_tile,
    mine_set_dir,
    ranked,
)


def build_parser():
    parser = cli.parser(__doc__, config=False)
    parser.add_argument("--set_dir", required=True,
                        help="folder holding ground-truth/ and detection-results/ of the split (mAP/detect.py)")
    parser.add_argument("--output_file", required=True, help="JSON file to write (for voc_to_tfrecord.py "
                                                             "--extra_ignore)")
    parser.add_argument("--min_score", type=flag_type("min_score"), default=DEFAULT_MIN_SCORE,
                        help=f"lowest score of a detection kept (default {DEFAULT_MIN_SCORE:g})")
    parser.add_argument("--max_iou", type=flag_type("max_iou"), default=DEFAULT_MAX_IOU,
                        help=f"a detection is kept when its IoU with every annotated box is below this "
                             f"(default {DEFAULT_MAX_IOU:g})")
    parser.add_argument("--dataset_path", default=None, help="the VOC folder of the split (for --sheet)")
    parser.add_argument("--sheet", default=None, help="PNG contact sheet of the highest-scoring boxes found")
    parser.add_argument("--sheet_count", type=flag_type("sheet_count"), default=64,
                        help="boxes on the sheet (default 64)")
    return parser


def check_args(args):
    """Raise ProjectError naming the flag when a value is out of range or --sheet lacks --dataset_path."""
    if not 0.0 <= args.min_score <= 1.0:
        raise ProjectError(f"--min_score: expected a score in [0, 1], got {args.min_score}")
    if not 0.0 < args.max_iou <= 1.0:
        raise ProjectError(f"--max_iou: expected an IoU in (0, 1], got {args.max_iou}")
    if args.sheet and not args.dataset_path:
        raise ProjectError("--sheet: needs --dataset_path, the VOC folder the images are in")
    if args.sheet_count < 1:
        raise ProjectError(f"--sheet_count: expected at least 1, got {args.sheet_count}")
    if args.dataset_path:
        cli.check_exists(args.dataset_path, "dataset folder", "folder")


def write_sheet(rows, dataset_path, path):
    """Write the contact sheet of ``rows`` ([(score, image name, box)]) to ``path`` (PNG), atomically."""
    tiles = []
    for score, name, box in rows:
        image_path = find_image(dataset_path, name)
        if image_path is None:
            raise VOCError(f"{dataset_path}: no image called {name!r} in JPEGImages/ (--dataset_path is not the "
                           f"folder the detections were made on?)")
        tiles.append(face_tile(read_image_bgr(image_path), box, score))
    with atomic_path(path, ".png") as temporary:
        if not cv2.imwrite(temporary, contact_sheet(tiles)):
            raise ProjectError(f"{path}: could not write the PNG sheet")


def body(args, settings):
    check_args(args)
    found = mine_set_dir(args.set_dir, args.min_score, args.max_iou)
    write_extra_ignore(args.output_file, found, {"set_dir": args.set_dir, "min_score": args.min_score,
                                                 "max_iou": args.max_iou})
    rows = ranked(found)
    images = sum(1 for boxes, _ in found.values() if len(boxes))
    print(f"{args.output_file}: {len(rows)} boxes in {images} of {len(found)} images (score >= "
          f"{args.min_score:g}, IoU < {args.max_iou:g} with every annotated box)")
    if args.sheet:
        write_sheet(rows[:args.sheet_count], args.dataset_path, args.sheet)
        print(f"{args.sheet}: the {min(len(rows), args.sheet_count)} highest-scoring")


def main(argv=None):
    return cli.run(build_parser(), body, argv)

