"""Write detection and ground-truth files of a VOC split for the AIZOOTech reference model, as mAP/detect.py
does for ours, so that mAP/compute_mAP.py scores both the same way (benchmark only; the reference is not shipped).

    facemask-detect-reference --dataset_path VOC_DIR [--split val] --output_dir /tmp/ref [--reference FILE]
    python mAP/compute_mAP.py --gt_dir /tmp/ref/ground-truth --det_dir /tmp/ref/detection-results \
        --output_dir /tmp/ref/map-results
    facemask-detect-reference --dataset_path Maskdata/,ILC2021/ --output_dir runs/ref_val

Several folders (comma-separated) each go to ``<output_dir>/<folder name>/`` as with mAP/detect.py; the
``next:`` line scores them all with ``compute_mAP.py --set_dirs``.
"""

import cli
from benchmarks.reference import DEFAULT_REFERENCE
from dataset.voc import read_split
from mAP.detection_files import DEFAULT_SCORE_THRESHOLD, detect_sets, next_command
from mAP.sets import folder_sets


def build_parser():
    parser = cli.parser(__doc__, config=False)
    parser.add_argument("--reference", default=DEFAULT_REFERENCE,
                        help="the reference .tflite file (default: ../shared/reference/ beside the repository)")
    parser.add_argument("--dataset_path", type=cli.path_list, required=True,
                        help="VOC folder (Annotations/, JPEGImages/, ImageSets/), or several, comma-separated")
    parser.add_argument("--split", default="val", help="name of a file in ImageSets/Main, without .txt")
    parser.add_argument("--output_dir", required=True,
                        help="gets detection-results/ and ground-truth/, or one folder holding them per set when "
                             "there are several")
    return parser


def body(args, settings):
    sets = folder_sets(args.dataset_path, args.split)
    image_names = {item.name: read_split(item.dataset_path, item.split) for item in sets}
    cli.check_exists(args.reference, "reference model", "file", "see ../shared/reference/README.md")
    from benchmarks.reference import AizooReference  # imports TensorFlow: only once the cheap checks passed
    output_dirs = detect_sets(AizooReference(args.reference), sets, image_names, args.output_dir,
                              DEFAULT_SCORE_THRESHOLD, echo=print)
    print(f"next: {next_command(args.output_dir, list(output_dirs.values()))}")


def main(argv=None):
    return cli.run(build_parser(), body, argv)

