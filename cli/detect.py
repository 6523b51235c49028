"""Write detection and ground-truth text files of a VOC split for mAP/compute_mAP.py.

    python mAP/detect.py [--model_path checkpoints/] --dataset_path VOC_DIR [--split val] [--output_dir mAP]
                         [--score_threshold 0.01]

For every image of ``ImageSets/Main/<split>.txt`` writes ``<output_dir>/detection-results/NAME.txt`` and
``<output_dir>/ground-truth/NAME.txt`` (see ``mAP/detect.py``); a failed or interrupted run keeps the earlier
files. ``--model_path`` takes any format ``inference.py`` takes.
"""
import sys

import cli
from dataset.voc import VOCError, read_split
from mAP.detect import (
    DEFAULT_IMAGES_PER_BATCH,
    DEFAULT_MODEL_PATH,
    DEFAULT_OUTPUT_DIR,
    DEFAULT_SCORE_THRESHOLD,
    next_command,
    write_split_results,
)


def build_parser():
    parser = cli.parser(__doc__, skip=("score_threshold",))
    parser.add_argument("--model_path", default=DEFAULT_MODEL_PATH,
                        help="a .keras, .tflite or .onnx model, a SavedModel folder, or a folder holding a .keras "
                             "model (default: checkpoints/ of the repository)")
    parser.add_argument("--dataset_path", required=True, help="VOC folder (Annotations/, JPEGImages/, ImageSets/)")
    parser.add_argument("--split", default="val", help="name of a file in ImageSets/Main, without .txt")
    parser.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR,
                        help="gets detection-results/ and ground-truth/ (default: mAP/ of the repository)")
    parser.add_argument("--score_threshold", type=float, default=DEFAULT_SCORE_THRESHOLD,
                        help="lowest score kept (low, so the precision/recall curve is complete)")
    parser.add_argument("--images_per_batch", type=int, default=DEFAULT_IMAGES_PER_BATCH,
                        help="images run through the model at once")
    return parser


def body(args, cfg):
    cli.check_at_least("--images_per_batch", args.images_per_batch, 1)
    cli.check_exists(args.dataset_path, "dataset folder", "folder")
    names = read_split(args.dataset_path, args.split)
    cli.check_exists(args.model_path, "model")
    from components.detector import Detector  # imports TensorFlow: only once the cheap checks passed
    detector = Detector.from_path(args.model_path, cfg, cli.inference_size(args, cfg))
    report = write_split_results(detector, args.dataset_path, names, args.output_dir, args.score_threshold,
                                 args.images_per_batch)
    for reason in report.skipped_images:
        print(f"skipped image: {reason}", file=sys.stderr)
    for reason in report.skipped_objects:
        print(f"skipped object: {reason}", file=sys.stderr)
    if report.images == 0:
        raise VOCError(f"{args.dataset_path}: none of the {len(names)} images of split {args.split!r} could be read")
    print(f"wrote {report.images} detection files ({report.detections} detections) and {report.images} "
          f"ground-truth files ({report.ground_truth_boxes} boxes) under {args.output_dir}; "
          f"skipped {len(report.skipped_images)} images, {len(report.skipped_objects)} objects "
          f"(unknown label or empty box); flip test {'on' if detector.flip_test else 'off'}")
    print(f"next: {next_command(args.output_dir)}")


def main(argv=None):
    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
