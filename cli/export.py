"""Export a trained .keras model for deployment: SavedModel, float TFLite, full-integer TFLite or ONNX.

    python export.py --model_path checkpoints/train/last.keras --format {saved_model,tflite,tflite_int8,onnx}
                     [--output PATH] [--calibration_tfrecord dataset/train_mask.tfrecord] [--num_calibration 300]
                     [--val_tfrecord dataset/val_mask.tfrecord]

Every export takes the model's fixed input size (240x320 by default) and is written atomically (staged in a
temporary folder beside the output, checked, then renamed into place) together with the model config sidecar
(``<output stem>.json``, and for a SavedModel folder also ``model_config.json`` inside it), so that
``inference.py --model_path <output>`` and ``mAP/detect.py`` load it with no other setting.

* ``saved_model``: TensorFlow SavedModel folder (default ``<stem>_saved_model``), any batch size, weights frozen
  into the graph (faster to run; fine-tune from the .keras file).
* ``tflite``: float32 TFLite model (default ``<stem>.tflite``), batch 1.
* ``tflite_int8``: full-integer TFLite model (default ``<stem>_int8.tflite``), batch 1: int8 weights and
  activations calibrated on ``--num_calibration`` training images preprocessed exactly as at inference; the
  input and output stay float32 (a quantize op in, a dequantize op out), which measured as fast as int8
  input/output once the quantisation that int8 I/O needs in Python is counted.
* ``onnx``: ONNX model converted by tf2onnx (default ``<stem>.onnx``), batch 1, for onnxruntime.

Before it is published, the export is loaded with its runtime and run on the sample images
(``assets/*.jpg``); the largest absolute difference to the Keras model is printed for the raw outputs and for
the decoded boxes. Float formats must agree within 1e-3 on the raw outputs and 0.1 pixel (of the network
input) on the decoded boxes, else nothing is written and the exit status is 1. For int8 the differences are
printed for information, with the correlation of the raw outputs, and with ``--val_tfrecord`` the validation
mAP of both models (target: int8 within 1 point of float).
"""
import os
import sys

import cli
from deploy.export import (
    DEFAULT_CALIBRATION_TFRECORD,
    DEFAULT_NUM_CALIBRATION,
    EXPORT_FORMATS,
    OUTPUT_SUFFIX,
    ExportError,
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
    return parser


def body(args, cfg):
    if args.num_calibration < 1:
        raise ExportError(f"--num_calibration: must be at least 1, got {args.num_calibration}")
    if not os.path.exists(args.model_path):
        raise ExportError(f"{args.model_path}: model not found")
    if args.val_tfrecord and not os.path.isfile(args.val_tfrecord):
        raise ExportError(f"{args.val_tfrecord}: validation TFRecord not found")
    try:
        report = export_model_file(args.model_path, args.export_format, args.output, args.calibration_tfrecord,
                                   args.num_calibration, args.val_tfrecord)
    except KeyboardInterrupt:
        raise cli.Interrupted("nothing written") from None
    print("\n".join(describe(report)))


def main(argv=None):
    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
