"""Write detection and ground-truth text files of a VOC split for mAP/compute_mAP.py.

    python mAP/detect.py [--model_path checkpoints/mask_detector.keras] --dataset_path VOC_DIR [--split val]
                         [--output_dir mAP] [--score_threshold 0.01]
    python mAP/detect.py --model_path checkpoints/mask_detector_3class.keras --data data/ilc2021.yaml [--root DIR]
    python mAP/detect.py --dataset_path Maskdata/,ILC2021/ --split val --output_dir runs/map_val

With ``--data`` the images are those of the data file's val: sources (``--split`` names another of its lists,
e.g. train), its aliases map the labels, and its class names must be the model's (else a one-line error).
Several sets (folders of ``--dataset_path``, comma-separated, or the data file's sources) are run through one
loaded model, each into ``<output_dir>/<set name>/`` (the folder's name, made unique, or the source's
``name``); the ``next:`` line then scores them all with ``compute_mAP.py --set_dirs``.
Labels that map to no class stop the run (exit 2) after a table of boxes per label, unless
``--skip_unknown_labels`` is given. ``--input_size`` runs a .keras model at another input size.

For every image of ``ImageSets/Main/<split>.txt`` writes ``<output_dir>/detection-results/NAME.txt`` and
``<output_dir>/ground-truth/NAME.txt`` (see ``mAP/detection_files.py``); a failed or interrupted run keeps the earlier
files. ``--model_path`` takes any format ``inference.py`` takes.
"""

import cli
from components.class_list import check_classes
from components.config import DATA_KEYS, DETECTION_KEYS, check_aliases, flag_type
from components.errors import ProjectError
from dataset.label_counts import SKIP_FLAG, report_splits_labels
from dataset.voc import read_split
from mAP.detection_files import (
    DEFAULT_IMAGES_PER_BATCH,
    DEFAULT_OUTPUT_DIR,
    DEFAULT_SCORE_THRESHOLD,
    detect_sets,
    next_command,
)
from mAP.sets import folder_sets, sets_from_sources


def build_parser():
    parser = cli.parser(__doc__, skip=("score_threshold",), keys=DATA_KEYS + DETECTION_KEYS, data=True)
    parser.add_argument("--model_path", default=cli.DEFAULT_MODEL_PATH,
                        help="a .keras, .tflite or .onnx model, a SavedModel folder, or a folder holding a .keras "
                             f"model ({cli.DEFAULT_MODEL_HELP})")
    parser.add_argument("--dataset_path", type=cli.path_list, default=None,
                        help="VOC folder (Annotations/, JPEGImages/, ImageSets/), or several, comma-separated "
                             "(each gets <output_dir>/<folder name>/); or --data")
    parser.add_argument("--split", default="val", help="name of a file in ImageSets/Main, without .txt")
    parser.add_argument(SKIP_FLAG, action="store_true",
                        help="leave out boxes whose label maps to no class instead of stopping")
    parser.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR,
                        help="gets detection-results/ and ground-truth/, or one folder holding them per set when "
                             "there are several (default: mAP/ of the repository)")
    parser.add_argument("--score_threshold", type=flag_type("score_threshold"), default=DEFAULT_SCORE_THRESHOLD,
                        help="lowest score kept (low, so the precision/recall curve is complete)")
    parser.add_argument("--images_per_batch", type=flag_type("images_per_batch"), default=DEFAULT_IMAGES_PER_BATCH,
                        help="images run through the model at once")
    return parser


def evaluation_sets(args):
    """The sets to evaluate (``mAP.sets.EvaluationSet``): each folder of ``--dataset_path`` (comma-separated)
    with ``--split``, or each source of the data file's list ``--split`` (its val: list by default)."""
    if args.dataset_path or not args.data:     # with --data too: its classes and aliases on other folders
        if not args.dataset_path:
            raise ProjectError("--dataset_path or --data is required")
        return folder_sets(args.dataset_path, args.split)
    from components.data_file import load_data_file
    spec = load_data_file(args.data, args.root)
    sources = spec.sources.get(args.split) or []
    if not sources:
        raise ProjectError(f"--data: {args.data} lists no {args.split}: sources (--split names the list)")
    spec.check_root()
    return sets_from_sources(sources)


def check_labels(sets, args, data, detector):
    """Print each set's boxes per label; raise on labels that map to no class (unless skipped) or to a class
    the model does not have. ``data``: the ``DataSettings`` (its ``label_aliases``)."""
    aliases = data.label_aliases
    every_count = report_splits_labels([(item.dataset_path, item.split) for item in sets], aliases,
                                       args.skip_unknown_labels, args.data, print)
    for counts in every_count:
        check_aliases({label: aliases[label] for label in counts if label in aliases},
                      detector.settings.model.labels_list)


def body(args, settings):
    cli.check_at_least("--images_per_batch", args.images_per_batch, 1)
    sets = evaluation_sets(args)
    image_names = {item.name: read_split(item.dataset_path, item.split) for item in sets}
    cli.check_exists(args.model_path, "model")
    from runtime.detector import Detector  # imports TensorFlow: only once the cheap checks passed
    detector = Detector.from_path(args.model_path, settings, cli.inference_size(args, settings))
    cli.print_notes(detector)
    if args.data or cli.given(args, "labels_list"):
        check_classes(settings.model.labels_list, detector.settings.model.labels_list, args.data or "--labels_list",
                      args.model_path, "evaluate the model on data of its classes (another --data file or "
                      "--model_path)")
    check_labels(sets, args, settings.data, detector)
    output_dirs = detect_sets(detector, sets, image_names, args.output_dir, args.score_threshold,
                              args.images_per_batch, echo=print)
    print(f"next: {next_command(args.output_dir, list(output_dirs.values()))}")


def main(argv=None):
    return cli.run(build_parser(), body, argv)

