"""Export a trained .keras model for deployment: SavedModel, float TFLite, full-integer TFLite or ONNX.

    python export.py --model_path checkpoints/train/last.keras --format {saved_model,tflite,tflite_int8,onnx}
                     [--output PATH] [--calibration_images DIR | --calibration_tfrecord FILE] [--num_calibration 300]
                     [--val_tfrecord dataset/val_mask.tfrecord[,...]] [--end_to_end [--flip_test]]

What each format is and how an export is checked before it is published: ``deploy/export.py``. A float
export that does not reproduce the Keras model is not written and the exit status is 1. With ``--end_to_end``
the export is the whole detector, box decoding and NMS inside (``deploy/end_to_end.py``; default output
``runs/export/<stem>_e2e<suffix>``), checked with its runtime against the Python path on the sample images and,
with ``--val_tfrecord`` (comma-separated), in val mAP; a validation TFRecord that does not exist (a fresh clone)
is skipped with a note. Exports go to ``runs/export/`` unless ``--output`` says otherwise.
"""
import os
import sys

import cli
from components.config import flag_type
from components.errors import ProjectError
from deploy.export import describe, export_model_file
from deploy.export_common import DEFAULT_NUM_CALIBRATION, EXPORT_FORMATS, OUTPUT_SUFFIX


def build_parser():
    parser = cli.parser(__doc__, config=False)
    parser.add_argument("--model_path", required=True,
                        help="a .keras model, or a folder (its mask_detector.keras, or its only model)")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS, dest="export_format")
    parser.add_argument("--output", default=None,
                        help="output file (folder for saved_model); default runs/export/ of the repository: "
                             + ", ".join(f"<stem>{suffix}" for suffix in OUTPUT_SUFFIX.values()))
    parser.add_argument("--calibration_images", default=None, metavar="DIR",
                        help="folder of images (.jpg, .png) that calibrate tflite_int8, e.g. some of your training "
                             "images (default: dataset/train_mask.tfrecord where it exists, else the small set "
                             "in assets/calibration/)")
    parser.add_argument("--calibration_tfrecord", default=None, metavar="FILE",
                        help="training TFRecord whose images calibrate tflite_int8 (instead of --calibration_images)")
    parser.add_argument("--num_calibration", type=flag_type("num_calibration"), default=DEFAULT_NUM_CALIBRATION,
                        help="calibration images for tflite_int8")
    parser.add_argument("--val_tfrecord", default=None,
                        help="with tflite_int8: print the validation mAP of the Keras and the int8 model; with "
                             "--end_to_end (any format, comma-separated paths allowed): check the val mAP of "
                             "the export against the Python path on each")
    parser.add_argument("--end_to_end", action="store_true",
                        help="export the whole detector (letterbox for saved_model / onnx, network, box decoding, "
                             "NMS) instead of the raw network; default output <stem>_e2e<suffix>")
    parser.add_argument("--flip_test", action="store_true",
                        help="with --end_to_end: put the flip test into the graph (test-time augmentation, twice "
                             "the compute; default: one pass)")
    parser.add_argument("--no_flip_test", action="store_true",
                        help="with --end_to_end: one pass, no flip test (the default; kept for older commands)")
    parser.add_argument("--input_size", type=cli.image_size, default=None,
                        help="export at this HEIGHTxWIDTH, e.g. 480x640 (default: the size the model was trained at)")
    return parser


def end_to_end_body(args, val_tfrecords):
    """``--end_to_end``: ``deploy.end_to_end.export_end_to_end_file`` (imports TensorFlow: after the checks)."""
    from deploy.end_to_end import describe_end_to_end, export_end_to_end_file
    report = export_end_to_end_file(args.model_path, args.export_format, args.output, args.calibration_tfrecord,
                                    args.num_calibration, val_tfrecords,
                                    flip_test=bool(args.flip_test), input_size=args.input_size,
                                    calibration_images_dir=args.calibration_images)
    print("\n".join(describe_end_to_end(report)))


def body(args, settings):
    cli.check_at_least("--num_calibration", args.num_calibration, 1)
    cli.check_exists(args.model_path, "model")
    val_tfrecords = []
    for path in (path.strip() for path in (args.val_tfrecord or "").split(",") if path.strip()):
        if os.path.isfile(path):
            val_tfrecords.append(path)
        elif os.path.exists(path):
            raise ProjectError(f"{path}: is a folder, not a validation TFRecord (--val_tfrecord)")
        else:
            print(f"note: --val_tfrecord {path}: not found, its val mAP check skipped (make it with "
                  "dataset/voc_to_tfrecord.py)", file=sys.stderr)
    if args.calibration_images and args.calibration_tfrecord:
        raise ProjectError("--calibration_images: not with --calibration_tfrecord (one calibration source)")
    if args.calibration_images:
        cli.check_exists(args.calibration_images, "calibration image folder", "folder")
    if args.calibration_tfrecord:
        cli.check_exists(args.calibration_tfrecord, "calibration TFRecord", "file")
    for flag in ("flip_test", "no_flip_test"):
        if getattr(args, flag) and not args.end_to_end:
            raise ProjectError(f"--{flag}: only with --end_to_end (raw exports have no flip test inside)")
    if args.flip_test and args.no_flip_test:
        raise ProjectError("--flip_test: not with --no_flip_test")
    if len(val_tfrecords) > 1 and not args.end_to_end:
        raise ProjectError("--val_tfrecord: one TFRecord without --end_to_end")
    try:
        if args.end_to_end:
            return end_to_end_body(args, val_tfrecords)
        report = export_model_file(args.model_path, args.export_format, args.output, args.calibration_tfrecord,
                                   args.num_calibration, val_tfrecords[0] if val_tfrecords else None,
                                   input_size=args.input_size, calibration_images_dir=args.calibration_images)
    except KeyboardInterrupt:
        raise cli.Interrupted("nothing written") from None
    print("\n".join(describe(report)))


def main(argv=None):
    return cli.run(build_parser(), body, argv)

