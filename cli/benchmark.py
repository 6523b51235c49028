"""Speed and accuracy of every deployment format of one model, one pass (the default) and TTA (``--tta``)
side by side, in one Markdown report.

    python benchmark.py [--model_path checkpoints/mask_detector.keras]
                        [--val_tfrecord dataset/val_mask.tfrecord,dataset/val_ilc.tfrecord] [--skip_map]
                        [--output runs/benchmark.md] [--export_dir DIR] [--runs 200] [--warmup 20]
                        [--video_frames 300] [--reference FILE|none]

The model is exported (``deploy/export.py``'s functions, each export checked against Keras) to saved_model, tflite,
tflite_int8 and onnx in ``--export_dir`` (default: a temporary folder, removed afterwards). For each format, one
pass and with TTA (``--tta``: the flip test and scales [1, 2, 0.5] for the .keras model; the flip test alone for an
export, which runs one input size): model-only latency at batch 1 (the runtime call on a preprocessed photo), ms
per image of ``detect`` (preprocess, every pass, NMS, merge), model size on disk, and VOC mAP@0.5 on the images of
each validation TFRecord (``--val_tfrecord``, comma-separated; a missing one is skipped with a note). Every call
is timed in 4 rounds taking them all in turn, after ``--warmup`` untimed runs. The AIZOOTech reference
(``--reference``) is timed in the same rounds and scored the same way. TFLite is timed also without XNNPACK. Then
the shared post-processing alone, and the end-to-end video throughput (what ``inference.py --video`` runs: decode,
preprocess, infer, NMS, draw) on a 640x480 clip made by panning and zooming over the sample images: the default
(one pass) and ``--tta`` (the old default) of the .keras model side by side with the speed-up factor, and the
fastest format's one pass.

Every runtime uses 2 threads. Timings depend on what else runs on the machine: the report records the load
average before and after. The report is printed (aligned text on a terminal, else Markdown) and written in
Markdown to ``--output`` (default ``runs/benchmark.md``).
"""
import os
import sys

import cli
from benchmarks.models import DEFAULT_VAL_TFRECORDS, FORMATS, measure
from benchmarks.models_report import report
from benchmarks.reference import DEFAULT_REFERENCE
from components.config import flag_type
from components.errors import ProjectError
from deploy.export_common import DEFAULT_CALIBRATION_TFRECORD, DEFAULT_NUM_CALIBRATION

DEFAULT_OUTPUT = cli.repo_path("runs", "benchmark.md")


def build_parser():
    parser = cli.parser(__doc__, config=False)
    parser.add_argument("--model_path", default=cli.DEFAULT_MODEL_PATH,
                        help=f"a .keras model or a folder holding one ({cli.DEFAULT_MODEL_HELP})")
    parser.add_argument("--val_tfrecord", type=cli.path_list, default=list(DEFAULT_VAL_TFRECORDS),
                        help="validation TFRecords for the mAP columns, comma-separated; a missing one is skipped "
                             "with a note (default: dataset/val_mask.tfrecord,dataset/val_ilc.tfrecord)")
    parser.add_argument("--skip_map", action="store_true", help="do not compute the validation mAP")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help="where the Markdown report is written (default: runs/benchmark.md of the repository)")
    parser.add_argument("--export_dir", default=None, help="keep the exports here (default: temporary folder)")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help=f"comma-separated subset of {','.join(FORMATS)} (keras is always included)")
    parser.add_argument("--runs", type=flag_type("runs"), default=200, help="timed runs of each call")
    parser.add_argument("--warmup", type=flag_type("warmup"), default=20, help="untimed warm-up runs of each call")
    parser.add_argument("--video_frames", type=flag_type("video_frames"), default=300,
                        help="frames of the 640x480 end-to-end video")
    parser.add_argument("--calibration_tfrecord", default=DEFAULT_CALIBRATION_TFRECORD)
    parser.add_argument("--num_calibration", type=flag_type("num_calibration"), default=DEFAULT_NUM_CALIBRATION)
    parser.add_argument("--reference", default=DEFAULT_REFERENCE,
                        help="AIZOOTech reference .tflite timed and scored beside ours (default: ../shared/reference/ "
                             "beside the repository; skipped with a note when missing; 'none' to skip)")
    return parser


def body(args, settings):
    formats = {name.strip() for name in args.formats.split(",") if name.strip()} | {"keras"}
    unknown = formats - set(FORMATS)
    if unknown:
        raise ProjectError(f"--formats: unknown {', '.join(sorted(unknown))}; expected {', '.join(FORMATS)}")
    if args.runs < 1 or args.warmup < 0 or args.video_frames < 2:
        raise ProjectError("--runs must be >= 1, --warmup >= 0 and --video_frames >= 2")
    cli.check_exists(args.model_path, "model")
    val_tfrecords = [] if args.skip_map else args.val_tfrecord
    if val_tfrecords and not any(os.path.isfile(path) for path in val_tfrecords):
        raise ProjectError(f"--val_tfrecord: none of {', '.join(val_tfrecords)} exists (or pass --skip_map)")
    reference = None if args.reference.lower() == "none" else args.reference
    if reference is not None and not os.path.isfile(reference):
        print(f"note: {reference}: reference model not found; not timed", file=sys.stderr)
        reference = None
    results = measure(args.model_path, formats, val_tfrecords, args.export_dir, args.runs, args.warmup,
                      args.video_frames, args.calibration_tfrecord, args.num_calibration,
                      log=lambda message: print(message, file=sys.stderr), reference=reference)
    written = report(results)
    written.write(args.output)
    written.show()
    print(f"report written to {args.output}")


def main(argv=None):
    return cli.run(build_parser(), body, argv)

