"""The one skeleton of every command-line script: environment, flags, config overrides, errors, Ctrl-C.

Each script module in this package has ``build_parser()`` and ``main(argv=None)``, and ``main`` is
``cli.run(build_parser(), body, argv)``: ``body(args, cfg)`` calls library functions and prints what they
return. The skeleton maps a :class:`components.errors.ProjectError` (and an OSError: disk full, permission
denied, ...) to one line ``error: <message>`` and exit status 2; any other exception is a bug and keeps its
traceback (exit status 1). Ctrl-C maps to status 130, and an unknown flag to one line naming the
closest valid flag. Importing this package sets the environment (quiet TensorFlow and OpenCV logs) and, in a
script, filters the start-up lines native libraries write to stderr (``cli/stderr_filter.py``; ``--verbose``
shows them) before any library module imports them, so a script imports ``cli`` first.
"""
import argparse
import difflib
import os
import sys

from cli import stderr_filter
from components.errors import Interrupted, ProjectError, describe_os_error

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("cli", "benchmarks", "components", "dataset", "deploy", "mAP", "network", "runtime", "serving", "training")
ENTRY_POINT_PREFIX = "facemask-"


def repo_path(*parts):
    """A default path of the scripts, inside the repository (``checkpoints/``, ``assets/``, ``mAP/``, ...):
    every default is relative to the repository, whatever the working folder."""
    return os.path.join(REPO_ROOT, *parts)


def runs_path(*parts):
    """A default output path of the scripts: inside ``runs/`` of the repository (git-ignored), so that no
    command changes a tracked file unless told to."""
    return repo_path("runs", *parts)


QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "2",        # TensorFlow: warnings and errors only
    "OPENCV_LOG_LEVEL": "ERROR",        # no WARN lines when a camera index does not exist
    "OPENCV_FFMPEG_LOGLEVEL": "8",      # FFmpeg: fatal only (unreadable videos are reported by us)
}


def launched_as_script(main_module=None):
    """Whether this process runs one of our scripts: a top-level wrapper (``python inference.py``), a script in a
    package folder (``python mAP/detect.py``, ``python components/kmeans.py``) or an entry point
    (``facemask-train``); not a test runner or an interactive session that imports the library."""
    main_module = sys.modules.get("__main__") if main_module is None else main_module
    path = getattr(main_module, "__file__", None)
    if not path:
        return False
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    if os.path.basename(path).startswith(ENTRY_POINT_PREFIX):
        return True
    return folder == REPO_ROOT or (os.path.dirname(folder) == REPO_ROOT and os.path.basename(folder) in PACKAGES)


def setup_environment():
    """Quiet TensorFlow's and OpenCV's logs, unless the caller's environment says otherwise; in a script, keep
    the native libraries' start-up lines off stderr unless ``--verbose`` is given."""
    script = launched_as_script()
    verbose = script and not stderr_filter.wanted()
    if not verbose:
        for key, value in QUIET_ENVIRONMENT.items():
            os.environ.setdefault(key, value)
    if script and not verbose:
        stderr_filter.install()


setup_environment()


def closest_flag(parser, flag):
    """The valid flag of ``parser`` closest to ``flag`` (e.g. ``--scor_threshold``), or None."""
    name = flag.split("=", 1)[0]
    matches = difflib.get_close_matches(name, list(parser._option_string_actions), n=1, cutoff=0.6)
    return matches[0] if matches else None


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes are one line: ``error: <flag>: <problem>``, with the closest valid flag for an
    unknown one (``--help`` still prints the whole usage)."""

    def __init__(self, doc=None, **kwargs):
        kwargs.setdefault("description", (doc or "").strip().split("\n")[0] or None)
        super().__init__(**kwargs)
        self.add_argument(stderr_filter.VERBOSE_FLAG, action="store_true",
                          help="show the start-up and log lines of TensorFlow and the other native libraries")

    def error(self, message):
        if message.startswith("argument "):   # "argument --k: ..." -> "--k: ...", as every other error names it
            message = message[len("argument "):]
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            unknown = message[len(prefix):].split()[0]
            suggestion = closest_flag(self, unknown) if unknown.startswith("-") else None
            message = f"{unknown}: unknown flag" + (f" (did you mean {suggestion}?)" if suggestion
                                                      else f"; see {self.prog} --help")
        self.exit(2, f"error: {message}\n")


DEFAULT_MODEL_PATH = repo_path("checkpoints", "mask_detector.keras")   # the shipped 2-class model
DEFAULT_MODEL_HELP = "default: checkpoints/mask_detector.keras of the repository, the shipped 2-class model"


def parser(doc, config=True, skip=(), keys=None, data=False):
    """An :class:`ArgumentParser` described by the first line of ``doc``; with ``config`` every key of
    ``components/config.py`` in ``keys`` (default: all) and not in ``skip`` is a ``--<key> VALUE`` flag
    described by ``CONFIG_HELP``, and with ``data`` also ``--data FILE`` / ``--root DIR`` (a data-set file,
    components/data_file.py, applied before the flags)."""
    result = ArgumentParser(doc)
    if config:
        from components.config import add_config_arguments
        add_config_arguments(result, skip=skip, keys=keys, data=data)
        result.set_defaults(_config_flags=True)
    return result


def check_at_least(flag, value, minimum):
    """Raise ProjectError naming ``flag`` when ``value`` is below ``minimum``."""
    if value < minimum:
        raise ProjectError(f"{flag}: must be at least {minimum}, got {value}")


def check_exists(path, what, kind="any", hint=""):
    """Raise ProjectError ``<path>: <what> not found[ (<hint>)]`` unless ``path`` is a file (``kind`` "file"),
    a folder ("folder") or either ("any")."""
    found = {"file": os.path.isfile, "folder": os.path.isdir, "any": os.path.exists}[kind](path)
    if not found:
        raise ProjectError(f"{path}: {what} not found" + (f" ({hint})" if hint else ""))


def image_size(text):
    """argparse type of a size flag: ``480x640`` (height x width, pixels) -> (480, 640)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        height, width = (int(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH in pixels, e.g. 480x640, got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"expected a positive HEIGHTxWIDTH, got {text!r}")
    return height, width


def path_list(text):
    """argparse type of a flag taking one or several paths, comma-separated: ``a/,b/`` -> ``["a/", "b/"]``."""
    paths = [part.strip() for part in text.split(",") if part.strip()]
    if not paths:
        raise argparse.ArgumentTypeError(f"expected one or more paths, comma-separated, got {text!r}")
    return paths


DEFAULT_GT_DIR = repo_path("mAP", "ground-truth")
DEFAULT_DET_DIR = repo_path("mAP", "detection-results")


def add_folder_arguments(parser):
    """--gt_dir, --det_dir and --set_dirs: the result folders of mAP/detect.py a scoring script reads
    (compute_mAP.py, analyse_errors.py)."""
    parser.add_argument("--gt_dir", default=DEFAULT_GT_DIR,
                        help="ground-truth .txt folder (default: mAP/ground-truth of the repository)")
    parser.add_argument("--det_dir", default=DEFAULT_DET_DIR,
                        help="detection .txt folder (default: mAP/detection-results of the repository)")
    parser.add_argument("--set_dirs", type=path_list, default=None,
                        help="several sets instead of --gt_dir/--det_dir: comma-separated folders, each holding "
                             "ground-truth/ and detection-results/ (the next: line of mAP/detect.py names them)")


def set_dirs_given(args):
    """Whether the flags of :func:`add_folder_arguments` name several sets (``--set_dirs``); raises ProjectError
    when --gt_dir / --det_dir are given beside it."""
    if args.set_dirs and (args.gt_dir != DEFAULT_GT_DIR or args.det_dir != DEFAULT_DET_DIR):
        raise ProjectError("--set_dirs: not with --gt_dir / --det_dir (each set folder holds its own)")
    return bool(args.set_dirs)


def given(args, key):
    """Whether the config flag ``--<key>`` was given on the command line (not left to the defaults)."""
    return getattr(args, f"cfg_{key}", None) is not None


def inference_size(args, settings):
    """The ``input_size`` to run a model at: the flag's when ``--input_size`` was given, else None (the size
    the model was trained or exported at, from its spec)."""
    return settings.model.input_size if given(args, "input_size") else None


PATH_KEYS = ("train_tfrecord", "val_tfrecord", "checkpoint_dir", "log_dir")   # config keys that are paths


def repo_relative_defaults(settings, args):
    """``settings`` with the relative default paths of ``PATH_KEYS`` taken inside the repository, as every
    default of the scripts is; paths given on the command line stay relative to the working folder."""
    from_data_file = ("train_tfrecord", "val_tfrecord") if getattr(args, "data", None) else ()
    changes = {}
    for key in PATH_KEYS:
        if given(args, key) or key in from_data_file:   # a data file's TFRecords: as the converter writes them
            continue
        value = settings.value(key)
        paths = [value] if isinstance(value, str) else list(value)
        paths = [path if os.path.isabs(path) else repo_path(path) for path in paths]
        changes[key] = paths[0] if isinstance(value, str) else paths
    return settings.replace(**changes)


def settings_from_args(args):
    """The settings of a script: the defaults, the ``--data`` file's (when given), the ``--<key>`` flags given,
    default paths inside the repository."""
    from components.config import config_from_args
    data_file = None
    if getattr(args, "data", None):
        from components.data_file import load_data_file
        data_file = load_data_file(args.data, getattr(args, "root", None)).settings()
    elif getattr(args, "root", None):
        raise ProjectError("--root: only used with --data FILE")
    return repo_relative_defaults(config_from_args(args, data_file), args)


def print_notes(detector):
    """Print, one line each on stderr, the settings ``detector`` could not honour (``Detector.notes``)."""
    for note in getattr(detector, "notes", ()):
        print(note, file=sys.stderr)


def error_line(error):
    """The one ``error: ...`` line for an exception a script reports."""
    if isinstance(error, OSError):
        return f"error: {describe_os_error(error)}"
    return f"error: {error}"


def run(arg_parser, body, argv=None):
    """Parse ``argv``, build the config (when the parser has config flags) and return ``body(args, cfg)``'s
    exit status (None counts as 0); project errors (ProjectError, OSError) and Ctrl-C become one line on stderr
    and status 2 / 130; any other exception (a bug) propagates with its traceback."""
    try:
        args = arg_parser.parse_args(argv)
    except SystemExit as stop:   # a usage error: its one line is printed already (--help exits 0 and goes on)
        if stop.code == 2:
            return 2
        raise
    try:
        cfg = None
        if getattr(args, "_config_flags", False):
            cfg = settings_from_args(args)
        status = body(args, cfg)
    except ProjectError as error:
        print(error_line(error), file=sys.stderr)
        return error.exit_code
    except OSError as error:   # the environment: disk full, permission denied, read-only file system, ...
        print(error_line(error), file=sys.stderr)
        return 2
    except Interrupted as interrupted:
        print(interrupted.line(), file=sys.stderr)
        return interrupted.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0 if status is None else status
