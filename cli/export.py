"""Export a trained .keras model for deployment: SavedModel, float TFLite, full-integer TFLite or ONNX.

    python export.py --model_path checkpoints/train/last.keras --format {saved_model,tflite,tflite_int8,onnx}
                     [--output PATH] [--calibration_tfrecord dataset/train_mask.tfrecord] [--num_calibration 300]
                     [--val_tfrecord dataset/val_mask.tfrecord]

What each format is and how an export is checked before it is published: ``deploy/export.py``. A float
export that does not reproduce the Keras model is not written and the exit status is 1.
"""
import sys

import cli
from deploy.export import (
    DEFAULT_CALIBRATION_TFRECORD,
    DEFAULT_NUM_CALIBRATION,
    EXPORT_FORMATS,
    OUTPUT_SUFFIX,
    describe,
    export_model_file,
)


def build_parser():
    parser = cli.parser(__doc__, config=False)
    parser.add_argument("--model_path", required=True, help="a .keras model, or a folder (its newest .keras file)")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS, dest="export_format")
    parser.add_argument("--output", default=None,
                        help="output file (folder for saved_model); default beside the model: "
                             + ", ".join(f"<stem>{suffix}" for suffix in OUTPUT_SUFFIX.values()))
    parser.add_argument("--calibration_tfrecord", default=DEFAULT_CALIBRATION_TFRECORD,
                        help="training TFRecord whose images calibrate tflite_int8")
    parser.add_argument("--num_calibration", type=int, default=DEFAULT_NUM_CALIBRATION,
                        help="calibration images for tflite_int8")
    parser.add_argument("--val_tfrecord", default=None,
                        help="with tflite_int8: print the validation mAP of the Keras and the int8 model")
    parser.add_argument("--input_size", type=cli.image_size, default=None,
                        help="export at this HEIGHTxWIDTH, e.g. 480x640 (default: the size the model was trained at)")
    return parser


def body(args, cfg):
    cli.check_at_least("--num_calibration", args.num_calibration, 1)
    cli.check_exists(args.model_path, "model")
    if args.val_tfrecord:
        cli.check_exists(args.val_tfrecord, "validation TFRecord", "file")
    try:
        report = export_model_file(args.model_path, args.export_format, args.output, args.calibration_tfrecord,
                                   args.num_calibration, args.val_tfrecord, input_size=args.input_size)
    except KeyboardInterrupt:
        raise cli.Interrupted("nothing written") from None
    print("\n".join(describe(report)))


def main(argv=None):
    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
