"""Speed and accuracy of every deployment format of one model, in one Markdown table.

    python benchmark.py --model_path checkpoints/train/last.keras [--val_tfrecord dataset/val_mask.tfrecord]
                        [--skip_map] [--output benchmark.md] [--export_dir DIR] [--runs 200] [--warmup 20]

The model is exported (``deploy/export.py``'s functions, each export checked against Keras) to saved_model, tflite,
tflite_int8 and onnx in ``--export_dir`` (default: a temporary folder, removed afterwards). For each format:
model-only latency at batch 1 on a 240x320 sample image (``predict_raw``: the runtime call, median and p90 over
``--runs`` runs after ``--warmup`` warm-up runs, timed in 4 rounds that take the formats in turn), images/s,
model size on disk, and the validation mAP (VOC AP@0.5 through the shared preprocessing, ``postprocess`` and
``mAP.compute_mAP.evaluate_detections``), each both as a single pass and with the flip test (the image and its
mirror image as one batch of 2, predictions averaged: the default of ``inference.py`` and ``mAP/detect.py``).
TFLite is timed with and without the XNNPACK delegate. It also times the shared post-processing alone and the
end-to-end video throughput (decode + preprocess + infer + NMS + draw, as ``inference.py --video`` does it) on a
320x240 clip made by panning and zooming over the sample images, for the Keras path and for the fastest path,
single pass and with the flip test.

Every runtime uses 2 threads. Timings depend on what else runs on the machine: the table records the load
average before and after.
"""
import os
import sys

import cli
from components.atomic_io import write_text_atomically
from deploy.benchmark import DEFAULT_VAL_TFRECORD, FORMATS, measure
from deploy.benchmark_report import render
from deploy.export import DEFAULT_CALIBRATION_TFRECORD, DEFAULT_NUM_CALIBRATION
from deploy.reference import DEFAULT_REFERENCE


def build_parser():
    parser = cli.parser(__doc__, config=False)
    parser.add_argument("--model_path", default=cli.DEFAULT_MODEL_PATH,
                        help=f"a .keras model or a folder holding one ({cli.DEFAULT_MODEL_HELP})")
    parser.add_argument("--val_tfrecord", default=DEFAULT_VAL_TFRECORD, help="validation TFRecord for the mAP column")
    parser.add_argument("--skip_map", action="store_true", help="do not compute the validation mAP")
    parser.add_argument("--output", default=cli.repo_path("benchmark.md"),
                        help="where the Markdown report is written (default: benchmark.md of the repository)")
    parser.add_argument("--export_dir", default=None, help="keep the exports here (default: temporary folder)")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help=f"comma-separated subset of {','.join(FORMATS)} (keras is always included)")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per format")
    parser.add_argument("--warmup", type=int, default=20, help="untimed warm-up runs per format")
    parser.add_argument("--video_frames", type=int, default=300, help="frames of the end-to-end video")
    parser.add_argument("--calibration_tfrecord", default=DEFAULT_CALIBRATION_TFRECORD)
    parser.add_argument("--num_calibration", type=int, default=DEFAULT_NUM_CALIBRATION)
    parser.add_argument("--reference", default=DEFAULT_REFERENCE,
                        help="AIZOOTech reference .tflite timed beside ours (default: ../shared/reference/ beside the "
                             "repository; skipped with a note when missing; 'none' to skip)")
    return parser


def body(args, cfg):
    formats = {name.strip() for name in args.formats.split(",") if name.strip()} | {"keras"}
    unknown = formats - set(FORMATS)
    if unknown:
        raise ValueError(f"--formats: unknown {', '.join(sorted(unknown))}; expected {', '.join(FORMATS)}")
    if args.runs < 1 or args.warmup < 0 or args.video_frames < 2:
        raise ValueError("--runs must be >= 1, --warmup >= 0 and --video_frames >= 2")
    cli.check_exists(args.model_path, "model")
    if not args.skip_map:
        cli.check_exists(args.val_tfrecord, "validation TFRecord", "file", "or pass --skip_map")
    reference = None if args.reference.lower() == "none" else args.reference
    if reference is not None and not os.path.isfile(reference):
        print(f"note: {reference}: reference model not found; not timed", file=sys.stderr)
        reference = None
    results = measure(args.model_path, formats, None if args.skip_map else args.val_tfrecord, args.export_dir,
                      args.runs, args.warmup, args.video_frames, args.calibration_tfrecord, args.num_calibration,
                      log=lambda message: print(message, file=sys.stderr), reference=reference)
    report = render(results)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    write_text_atomically(args.output, report)
    print(report)
    print(f"report written to {args.output}")


def main(argv=None):
    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
