"""Write detection and ground-truth text files of a VOC split for mAP/compute_mAP.py.

    python mAP/detect.py [--model_path checkpoints/mask_detector.keras] --dataset_path VOC_DIR [--split val]
                         [--output_dir mAP] [--score_threshold 0.01]
    python mAP/detect.py --model_path checkpoints/mask_detector_3class.keras --data data/ilc2021.yaml [--root DIR]

With ``--data`` the images are those of the data file's val: sources (``--split`` names another of its lists,
e.g. train), its aliases map the labels, and its class names must be the model's (else a one-line error).
Labels that map to no class stop the run (exit 2) after a table of boxes per label, unless
``--skip_unknown_labels`` is given. ``--input_size`` runs a .keras model at another input size.

For every image of ``ImageSets/Main/<split>.txt`` writes ``<output_dir>/detection-results/NAME.txt`` and
``<output_dir>/ground-truth/NAME.txt`` (see ``mAP/detect.py``); a failed or interrupted run keeps the earlier
files. ``--model_path`` takes any format ``inference.py`` takes.
"""
import sys

import cli
from components.class_list import check_classes
from components.config import DATA_KEYS, DETECTION_KEYS, check_aliases
from dataset.label_counts import SKIP_FLAG, report_split_labels
from dataset.voc import VOCError, read_split
from mAP.detect import (
    DEFAULT_IMAGES_PER_BATCH,
    DEFAULT_OUTPUT_DIR,
    DEFAULT_SCORE_THRESHOLD,
    next_command,
    write_split_results,
)


def build_parser():
    parser = cli.parser(__doc__, skip=("score_threshold",), keys=DATA_KEYS + DETECTION_KEYS, data=True)
    parser.add_argument("--model_path", default=cli.DEFAULT_MODEL_PATH,
                        help="a .keras, .tflite or .onnx model, a SavedModel folder, or a folder holding a .keras "
                             f"model ({cli.DEFAULT_MODEL_HELP})")
    parser.add_argument("--dataset_path", default=None,
                        help="VOC folder (Annotations/, JPEGImages/, ImageSets/); or --data")
    parser.add_argument("--split", default="val", help="name of a file in ImageSets/Main, without .txt")
    parser.add_argument(SKIP_FLAG, action="store_true",
                        help="leave out boxes whose label maps to no class instead of stopping")
    parser.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR,
                        help="gets detection-results/ and ground-truth/ (default: mAP/ of the repository)")
    parser.add_argument("--score_threshold", type=float, default=DEFAULT_SCORE_THRESHOLD,
                        help="lowest score kept (low, so the precision/recall curve is complete)")
    parser.add_argument("--images_per_batch", type=int, default=DEFAULT_IMAGES_PER_BATCH,
                        help="images run through the model at once")
    return parser


def voc_split(args):
    """(VOC folder, split) to evaluate: ``--dataset_path`` and ``--split``, or the data file's source for
    ``--split`` (its val: list by default; one source)."""
    if args.dataset_path or not args.data:     # with --data too: its classes and aliases on another folder
        if not args.dataset_path:
            raise ValueError("--dataset_path or --data is required")
        cli.check_exists(args.dataset_path, "dataset folder", "folder")
        return args.dataset_path, args.split
    from components.data_file import load_data_file
    spec = load_data_file(args.data, args.root)
    sources = spec.sources.get(args.split) or []
    if len(sources) != 1:
        raise ValueError(f"--data: {args.data} {args.split}: lists {len(sources)} sources; evaluate one at a time "
                         "with --dataset_path DIR --split NAME (and --data for the classes)")
    spec.check_root()
    return sources[0].voc_path, sources[0].split


def body(args, cfg):
    cli.check_at_least("--images_per_batch", args.images_per_batch, 1)
    dataset_path, split = voc_split(args)
    names = read_split(dataset_path, split)
    cli.check_exists(args.model_path, "model")
    from components.detector import Detector  # imports TensorFlow: only once the cheap checks passed
    detector = Detector.from_path(args.model_path, cfg, cli.inference_size(args, cfg))
    if args.data or cli.given(args, "labels_list"):
        check_classes(cfg["labels_list"], detector.cfg["labels_list"], args.data or "--labels_list",
                      args.model_path, "evaluate the model on data of its classes (another --data file or "
                      "--model_path)")
    counts = report_split_labels(dataset_path, split, cfg["label_aliases"], args.skip_unknown_labels, args.data,
                                 print)
    check_aliases({label: cfg["label_aliases"][label] for label in counts if label in cfg["label_aliases"]},
                  detector.cfg["labels_list"])
    report = write_split_results(detector, dataset_path, names, args.output_dir, args.score_threshold,
                                 args.images_per_batch)
    for reason in report.skipped_images:
        print(f"skipped image: {reason}", file=sys.stderr)
    for reason in report.skipped_objects:
        print(f"skipped object: {reason}", file=sys.stderr)
    if report.images == 0:
        raise VOCError(f"{dataset_path}: none of the {len(names)} images of split {split!r} could be read")
    print(f"wrote {report.images} detection files ({report.detections} detections) and {report.images} "
          f"ground-truth files ({report.ground_truth_boxes} boxes) under {args.output_dir}; "
          f"skipped {len(report.skipped_images)} images, {len(report.skipped_objects)} objects "
          f"(unknown label or empty box); flip test {'on' if detector.flip_test else 'off'}, "
          f"scales {getattr(detector, 'test_scales', [1])}")
    print(f"next: {next_command(args.output_dir)}")


def main(argv=None):
    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
