"""Write detection and ground-truth files of a VOC split for the AIZOOTech reference model, as mAP/detect.py
does for ours, so that mAP/compute_mAP.py scores both the same way (benchmark only; the reference is not shipped).

    python -m cli.detect_reference --dataset_path VOC_DIR [--split val] --output_dir /tmp/ref [--reference FILE]
    python mAP/compute_mAP.py --gt_dir /tmp/ref/ground-truth --det_dir /tmp/ref/detection-results \
        --output_dir /tmp/ref/map-results
"""
import sys

import cli
from dataset.voc import read_split
from deploy.reference import DEFAULT_REFERENCE
from mAP.detect import DEFAULT_SCORE_THRESHOLD, next_command, write_split_results


def build_parser():
    parser = cli.parser(__doc__, config=False)
    parser.add_argument("--reference", default=DEFAULT_REFERENCE,
                        help="the reference .tflite file (default: ../shared/reference/ beside the repository)")
    parser.add_argument("--dataset_path", required=True, help="VOC folder (Annotations/, JPEGImages/, ImageSets/)")
    parser.add_argument("--split", default="val", help="name of a file in ImageSets/Main, without .txt")
    parser.add_argument("--output_dir", required=True, help="gets detection-results/ and ground-truth/")
    return parser


def body(args, cfg):
    cli.check_exists(args.dataset_path, "dataset folder", "folder")
    names = read_split(args.dataset_path, args.split)
    cli.check_exists(args.reference, "reference model", "file", "see ../shared/reference/README.md")
    from deploy.reference import AizooReference  # imports TensorFlow: only once the cheap checks passed
    report = write_split_results(AizooReference(args.reference), args.dataset_path, names, args.output_dir,
                                 DEFAULT_SCORE_THRESHOLD)
    print(f"wrote {report.images} detection files ({report.detections} detections) under {args.output_dir}")
    print(f"next: {next_command(args.output_dir)}")


def main(argv=None):
    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
