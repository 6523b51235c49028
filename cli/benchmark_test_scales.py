"""Time per image of each multi-scale test setting (``--test_scales``) of one .keras model, in one table.

    python benchmark_test_scales.py [--model_path checkpoints/mask_detector.keras]
                                    [--settings "[1];[1, 2];[1, 2, 0.5]"] [--runs 20] [--output FILE.md]

Each setting runs ``Detector.detect`` on the sample photos of assets/ (preprocessing, every pass with its flip
test, post-processing and the merge: what ``inference.py`` and ``mAP/detect.py`` pay per image), one image at a
time, 2 threads; the settings are timed in turn, round by round. Other inference flags (``--flip_test``,
``--input_size``, ...) apply to every row. Their accuracy: ``mAP/detect.py --test_scales ...`` (README, Results).
The table is printed (aligned text on a terminal, else Markdown) and, with ``--output``, written in Markdown.
"""
import ast

import cli
from components.config import DEFAULT_SETTINGS, DETECTION_KEYS, flag_type
from components.errors import ProjectError

DEFAULT_SCALE_SETTINGS = "[1];[1, 2];[1, 2, 0.5]"


def parse_settings(text):
    """``--settings``: ``test_scales`` lists separated by ``;`` -> [[1], [1, 2], ...], each checked as the
    settings check ``--test_scales``."""
    scale_lists = []
    for part in (part.strip() for part in text.split(";")):
        if not part:
            continue
        try:
            scales = ast.literal_eval(part)
        except (ValueError, SyntaxError):
            scales = None
        if not isinstance(scales, (list, tuple)):
            raise ProjectError(f"--settings: {part!r} is not a list such as [1, 2]")
        try:
            DEFAULT_SETTINGS.replace(test_scales=scales)
        except ValueError as error:
            raise ProjectError(f"--settings: {part!r}: {str(error).split(': ', 1)[-1]}") from None
        scale_lists.append(list(scales))
    if not scale_lists:
        raise ProjectError(f"--settings: expected test_scales lists separated by ';', got {text!r}")
    return scale_lists


def build_parser():
    parser = cli.parser(__doc__, keys=tuple(key for key in DETECTION_KEYS if key != "test_scales"))
    parser.add_argument("--model_path", default=cli.DEFAULT_MODEL_PATH,
                        help=f"a .keras model or a folder holding one ({cli.DEFAULT_MODEL_HELP})")
    parser.add_argument("--settings", default=DEFAULT_SCALE_SETTINGS,
                        help=f"test_scales lists to time, separated by ';' (default: {DEFAULT_SCALE_SETTINGS!r})")
    parser.add_argument("--runs", type=flag_type("runs"), default=20,
                        help="timed rounds over the sample photos per setting")
    parser.add_argument("--output", default=None, help="also write the table to this Markdown file")
    return parser


def body(args, settings):
    scale_settings = parse_settings(args.settings)
    cli.check_at_least("--runs", args.runs, 1)
    cli.check_exists(args.model_path, "model")
    from runtime.adapters import model_format
    from runtime.model_files import resolve_model_path
    model_file = resolve_model_path(args.model_path)
    if model_format(model_file) != "keras":
        raise ProjectError(f"--model_path: {model_file}: the multi-scale test runs .keras models only")
    from benchmarks.report import Report
    from benchmarks.test_scales import measure_test_scales, scales_table
    written = Report(tables=[scales_table(measure_test_scales(model_file, scale_settings, settings, args.runs))])
    written.show()
    if args.output:
        written.write(args.output)


def main(argv=None):
    return cli.run(build_parser(), body, argv)

