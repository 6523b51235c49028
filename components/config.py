"""Every setting of the detector in one dict, plus helpers to override it from the command line.

Scripts call :func:`add_config_arguments` on their parser (with the ``keys`` they use, each described in
``CONFIG_HELP``; ``data=True`` adds ``--data FILE`` / ``--root DIR``) and :func:`config_from_args` on the
parsed namespace: the defaults here, then the data file (components/data_file.py), then each ``--<key> VALUE``
given (lists and tuples are written as Python literals, e.g. ``--steps "[8, 16, 32, 64]"``).
"""
from __future__ import annotations

import ast
import copy
from typing import TYPE_CHECKING

from components.errors import ProjectError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any

cfg: dict[str, Any] = {
    # data
    "input_size": (240, 320),  # (height, width) the network is trained at
    "labels_list": ["background", "mask", "unmask"],
    # names other data sets use for our classes; mapped when VOC xml is read. A label mapped to "ignore"
    # is kept as a box that is neither a face of any class nor background: priors matched to it are left
    # out of the loss, and mAP treats it as difficult for every class.
    "label_aliases": {
        "face_mask": "mask", "HaveMask": "mask", "with_mask": "mask", "mask": "mask",
        "face": "unmask", "NoMask": "unmask", "without_mask": "unmask", "unmask": "unmask",
        "with_incorrect_mask": "ignore", "mask_weared_incorrect": "ignore",
    },
    # training and validation sources: lists of TFRecords (on the command line a Python list or
    # comma-separated paths); training reads all of them, validation reports each and their mean
    "train_tfrecord": ["dataset/train_mask.tfrecord", "dataset/train_ilc.tfrecord"],
    "val_tfrecord": ["dataset/val_mask.tfrecord", "dataset/val_ilc.tfrecord"],

    # augmentation switches
    "using_crop": True,
    "crop_prob": 0.8,         # share of training images that are cropped (the rest stay whole)
    "expand_prob": 0.3,       # share of training images zoomed out instead: placed on a grey canvas of
    "expand_max_ratio": 3.0,  # 1x to this many times their size (so small faces are common in training)
    "using_bin": True,        # pad half of the training images to the input aspect ratio (4:3 at 240x320) at a
                              # random place before resizing, as inference letterboxes (keeps faces' shape)
    "using_flip": True,
    "using_distort": True,    # photometric distortion (brightness, contrast, saturation, hue)

    # anchors (pixels at input_size) and box coding
    "min_sizes": [[10, 16, 24], [32, 48], [64, 96], [128, 192, 256]],
    "steps": [8, 16, 32, 64],
    "match_thresh": 0.45,
    "min_positives": 4,       # a face with fewer priors at match_thresh also takes its best ones down to
    "min_positive_iou": 0.2,  # this IoU (S3FD's scale-compensated matching, for small faces); 0 = plain SSD
    "variances": [0.1, 0.2],
    "clip": False,

    # network
    "network": "rfb_pan",     # "slim", "rfb" or "rfb_pan" (rfb with a top-down + bottom-up neck)
    "base_channel": 16,
    "head_context": False,    # a residual dilated depthwise-separable block on the stride-8 and stride-16
                              # features before their heads (identity at the start; +23,744 parameters)

    # training
    "batch_size": 32,
    "epoch": 150,
    "init_lr": 1e-2,
    "lr_decay_epoch": [100, 130],
    "lr_rate": 0.1,
    "warmup_epoch": 5,
    "min_lr": 1e-4,
    "weights_decay": 5e-4,
    "momentum": 0.9,
    "neg_pos_ratio": 3,
    "focal_gamma": 0.0,       # softmax focal loss on every prior (Lin et al. 2017) instead of hard negative mining
                              # at neg_pos_ratio (0 = cross-entropy with mining)
    "quality_targets": False, # a positive prior's class target is the IoU of its decoded box with its face (the
                              # rest on background) instead of 1: IoU-aware scores (with hard negative mining)
    "diou_loss_weight": 0.0,  # adds this times (1 - DIoU) of each positive prior's decoded box to the smooth L1
                              # localisation loss (Zheng et al. 2020; 0 = smooth L1 alone)
    "ema_decay": 0.0,         # weight EMA for validation and export (0 = off; 0.998 ~ 500 steps)
    "save_freq": 1,           # epochs between checkpoints
    "val_map_freq": 1,        # epochs between validation mAP evaluations (0 = never)
    "mixed_precision": False, # bfloat16 compute where the CPU supports it
    "cache_dataset": True,    # keep decoded training images in memory (about 1 MB each)
    "checkpoint_dir": "checkpoints/train",
    "log_dir": "logs/train",
    "seed": 0,

    # inference
    "keep_aspect": True,      # pad images at the bottom / right to the input aspect ratio instead of stretching
    # the default is one network pass per image (what every export and app runs); tta turns on test-time
    # augmentation: the flip test and test_scales TTA_SCALES (six passes where each scale has its flip test),
    # unless those two are given
    "tta": False,
    "flip_test": False,       # also run each image mirrored and average the two predictions (2x the compute;
                              # only where every step divides the input width, else a single pass)
    "test_scales": [1],       # multi-scale test (.keras models): also run each image at these multiples of
    "test_small_face": 64,    # input_size, keeping from a larger scale the faces smaller than this and from a
    "test_large_face": 96,    # smaller scale those of at least this (pixels at input_size)
    "score_threshold": 0.5,
    "nms_threshold": 0.4,
    "box_voting": 0.0,        # box voting after NMS: each kept box becomes the score-weighted mean of the
                              # candidates overlapping it by at least this IoU (0 = off)
    "soft_nms_sigma": 0.0,    # Gaussian soft-NMS (Bodla et al. 2017): an overlapping box's score is multiplied by
                              # exp(-IoU^2 / sigma) instead of the box being dropped; 0 = NMS at nms_threshold
    "max_number_keep": 200,

    # serving (serve.py: web demo and REST API; its flags --workers, --max_pending, --max_request_mb and
    # --max_image_pixels set these)
    "serve_workers": 1,                    # inference threads (TensorFlow already uses every core)
    "serve_max_pending": 32,               # requests admitted at once, running or waiting (503 beyond)
    "serve_max_request_mb": 10.0,          # largest request body in MiB (413 beyond)
    "serve_max_image_pixels": 40_000_000,  # largest image, width x height, read from its header (413 beyond)
    # video streams (inference.py --video / --camera with a URL or camera index)
    "stream_reconnect_attempts": 5,  # reopenings of a live source that stops giving frames, then give up
    "stream_reconnect_delay": 0.5,   # seconds before the first reopening, doubled before each further one
    "stream_timeout": 10.0,          # seconds a URL may take to open or to give the next frame

    # export
    "export_score_threshold": 0.01,  # end-to-end exports (export.py --end_to_end) keep detections down to
                                     # this score, at most max_number_keep per image; apps filter higher
}


IGNORE_LABEL = "ignore"   # the canonical name of boxes left out of training and evaluation (see label_aliases)
IGNORE_ID = -1            # its class id in TFRecords and training targets


def tfrecord_paths(value: str | Sequence[str] | None) -> list[str]:
    """A ``train_tfrecord`` / ``val_tfrecord`` setting as a list of paths (a single path is a list of one)."""
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def _parse_value(text, default):
    """Parse a command-line string into the type of ``default``."""
    if isinstance(default, bool):
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ProjectError(f"expected a boolean, got {text!r}")
    if isinstance(default, str):
        return text
    if isinstance(default, list) and all(isinstance(item, str) for item in default) \
            and not text.lstrip().startswith("["):
        return [path.strip() for path in text.split(",") if path.strip()]   # comma-separated paths
    value = ast.literal_eval(text)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(default, tuple) and isinstance(value, list):
        value = tuple(value)
    if isinstance(default, list) and isinstance(value, tuple):
        value = list(value)
    if default is not None and type(value) is not type(default):
        raise ProjectError(f"expected {type(default).__name__}, got {type(value).__name__} {value!r}")
    return value


# one line per key for ``--help``: what the setting does
CONFIG_HELP = {
    "input_size": "(height, width) in pixels the network runs at",
    "labels_list": "class names, 'background' first (or names: in a --data file)",
    "label_aliases": "VOC label -> class name, or 'ignore' (or aliases: in a --data file)",
    "train_tfrecord": "training TFRecords, comma-separated (or train: in a --data file)",
    "val_tfrecord": "validation TFRecords, comma-separated (or val: in a --data file)",
    "using_crop": "random crops that keep whole faces",
    "crop_prob": "share of training images cropped",
    "expand_prob": "share of training images zoomed out onto a grey canvas",
    "expand_max_ratio": "largest zoom-out factor",
    "using_bin": "pad images to the input aspect ratio before resizing",
    "using_flip": "random horizontal flips",
    "using_distort": "photometric distortion (brightness, contrast, saturation, hue)",
    "min_sizes": "anchor sizes per head, pixels at input_size",
    "steps": "stride of each head in pixels",
    "match_thresh": "IoU from which a prior is matched to a face",
    "min_positives": "priors each face gets at least (small-face matching)",
    "min_positive_iou": "lowest IoU of those extra priors (0: plain SSD matching)",
    "variances": "box-coding variances (centre, size)",
    "clip": "clip priors to the image",
    "network": "backbone: slim, rfb or rfb_pan",
    "base_channel": "width of the network (channels of its first layer)",
    "head_context": "residual dilated context block before the stride-8 and stride-16 heads",
    "batch_size": "images per optimizer step",
    "epoch": "epochs to train in all",
    "init_lr": "learning rate after the warm-up",
    "lr_decay_epoch": "epochs at which the learning rate is multiplied by lr_rate",
    "lr_rate": "learning-rate decay factor",
    "warmup_epoch": "epochs of linear warm-up (shortened when longer than the run)",
    "min_lr": "lowest learning rate",
    "weights_decay": "decoupled weight decay",
    "momentum": "SGD (Nesterov) momentum",
    "neg_pos_ratio": "hard negatives per positive prior in the loss",
    "focal_gamma": "softmax focal loss on every prior with this gamma instead of hard negative mining (0 = off)",
    "quality_targets": "a positive prior's class target is its decoded box's IoU with its face instead of 1",
    "diou_loss_weight": "weight of a 1 - DIoU term on positive priors' decoded boxes, added to smooth L1 (0 = off)",
    "ema_decay": "decay of the weights' moving average that validation and export use (0: none)",
    "save_freq": "epochs between checkpoints",
    "val_map_freq": "epochs between validation mAP evaluations (0: never)",
    "mixed_precision": "bfloat16 compute where the CPU supports it",
    "cache_dataset": "keep decoded training images in memory",
    "checkpoint_dir": "folder of checkpoints, run settings, history and plot",
    "log_dir": "TensorBoard log folder",
    "seed": "random seed",
    "keep_aspect": "pad images to the input aspect ratio instead of stretching",
    "tta": "test-time augmentation: the flip test and test_scales [1, 2, 0.5], up to six network passes per "
           "image (default: one pass)",
    "flip_test": "also run each image mirrored and average (2x compute)",
    "test_scales": "multi-scale test: input_size multiples each image also runs at, whole ones above 1 or "
                   "fractions below ([1]: one scale; .keras only)",
    "test_small_face": "a pass at a larger scale keeps faces smaller than this (pixels at input_size)",
    "test_large_face": "a pass at a smaller scale keeps faces of at least this (pixels at input_size)",
    "score_threshold": "lowest score of a detection kept",
    "nms_threshold": "IoU above which NMS drops the weaker of two boxes",
    "max_number_keep": "most detections per image",
    "box_voting": "box voting after NMS: IoU of the candidates averaged into each kept box (0 = off)",
    "soft_nms_sigma": "Gaussian soft-NMS: sigma of the score decay exp(-IoU^2 / sigma) (0 = NMS at nms_threshold)",
    "serve_workers": "inference threads of the server",
    "serve_max_pending": "requests admitted at once, running or waiting (503 beyond)",
    "serve_max_request_mb": "largest request body in MiB (413 beyond)",
    "serve_max_image_pixels": "largest image, width x height (413 beyond)",
    "stream_reconnect_attempts": "reopenings of a live video source that stops giving frames",
    "stream_reconnect_delay": "seconds before the first reopening (doubled each time)",
    "stream_timeout": "seconds a stream URL may take to open or to give the next frame",
    "export_score_threshold": "lowest score an end-to-end export keeps",
}

# the settings each group of scripts uses (for ``add_config_arguments(parser, keys=...)``)
DATA_KEYS = ("labels_list", "label_aliases")
ANCHOR_KEYS = ("input_size", "min_sizes", "steps", "match_thresh", "min_positives", "min_positive_iou",
               "variances", "clip")
AUGMENTATION_KEYS = ("using_crop", "crop_prob", "expand_prob", "expand_max_ratio", "using_bin", "using_flip",
                     "using_distort")
TTA_SCALES = [1, 2, 0.5]   # the scales --tta runs (with the flip test)
DETECTION_KEYS = ("input_size", "keep_aspect", "tta", "flip_test", "test_scales", "test_small_face", "test_large_face",
                  "score_threshold",
                  "nms_threshold", "max_number_keep", "box_voting", "soft_nms_sigma")
STREAM_KEYS = ("stream_reconnect_attempts", "stream_reconnect_delay", "stream_timeout")
SERVE_KEYS = ("serve_workers", "serve_max_pending", "serve_max_request_mb", "serve_max_image_pixels")


def add_config_arguments(parser: argparse.ArgumentParser, skip: Iterable[str] = (), keys: Iterable[str] | None = None,
                         data: bool = False) -> argparse.ArgumentParser:
    """Add an optional ``--<key>`` flag, described by ``CONFIG_HELP``, for every config key in ``keys``
    (default: all) and not in ``skip``; with ``data`` also ``--data FILE`` and ``--root DIR`` (a data-set
    description file, see components/data_file.py)."""
    if data:
        group = parser.add_argument_group("data set")
        group.add_argument("--data", default=None, metavar="FILE",
                           help="data-set file (YAML, e.g. data/ilc2021.yaml): VOC folders, splits, classes, aliases")
        group.add_argument("--root", default=None, metavar="DIR",
                           help="folder the data file's VOC paths are relative to (overrides its root:)")
    group = parser.add_argument_group("settings (defaults in components/config.py)")
    for key, default in cfg.items():
        if key in skip or (keys is not None and key not in keys):
            continue
        # a boolean flag alone means true (--tta); with a value it takes it (--flip_test False)
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if isinstance(default, bool) else {}
        group.add_argument(f"--{key}", dest=f"cfg_{key}", metavar="VALUE", default=None, **extra,
                           help=f"{CONFIG_HELP.get(key, key)} (default: {default!r})")
    return parser


def check_aliases(label_aliases: Mapping[str, str], labels_list: Sequence[str]) -> None:
    """Raise ProjectError when ``labels_list`` does not start with background or an alias maps to a class
    that is not in it (nor 'ignore')."""
    if not labels_list or labels_list[0] != "background" or len(labels_list) < 2:
        raise ProjectError(f"--labels_list: must be 'background' followed by the class names, got {labels_list!r}")
    missing = sorted({target for target in label_aliases.values()
                      if target != IGNORE_LABEL and target not in labels_list})
    if missing:
        sources = ", ".join(sorted(label for label, target in label_aliases.items() if target in missing))
        raise ProjectError(f"--label_aliases: {sources} map to {', '.join(map(repr, missing))}, which "
                           f"--labels_list {list(labels_list)} lacks: add the class there (names: in a data file) "
                           f"or map the label to 'ignore'")


POSITIVE_KEYS = ("batch_size", "epoch", "save_freq", "init_lr", "base_channel", "max_number_keep", "serve_workers",
                 "serve_max_pending", "serve_max_request_mb", "serve_max_image_pixels")
UNIT_INTERVAL_KEYS = ("match_thresh", "min_positive_iou", "nms_threshold", "score_threshold", "crop_prob",
                      "expand_prob", "export_score_threshold", "box_voting")


# the ranges of the scripts' own numeric flags (those that are not config keys), declared once so that every
# script refuses the same values: flag name -> (type, lowest, highest, lowest allowed?); None: no bound
FLAG_RANGES = {
    "score_threshold": (float, 0.0, 1.0, True),   # mAP/detect.py's (the config key: validate_config)
    "score": (float, 0.0, 1.0, True),
    "review_score": (float, 0.0, 1.0, True),
    "min_score": (float, 0.0, 1.0, True),
    "iou": (float, 0.0, 1.0, False),
    "max_iou": (float, 0.0, 1.0, False),
    "images_per_batch": (int, 1, None, True),
    "steps_per_epoch": (int, 1, None, True),
    "val_steps": (int, 1, None, True),
    "num_calibration": (int, 1, None, True),
    "num_images": (int, 1, None, True),
    "k": (int, 1, None, True),
    "runs": (int, 1, None, True),
    "steps": (int, 1, None, True),
    "requests": (int, 1, None, True),
    "workers": (int, 1, None, True),
    "warmup": (int, 0, None, True),
    "video_frames": (int, 2, None, True),
    "samples": (int, 2, None, True),
    "sheet_count": (int, 1, None, True),
    "max_image_side": (int, 0, None, True),
}


def flag_type(name: str) -> Callable[[str], Any]:
    """The argparse ``type`` of the script flag ``--<name>``: parses its number and refuses it outside
    ``FLAG_RANGES[name]`` with one line (``error: argument --<name>: ...``)."""
    import argparse
    kind, low, high, low_allowed = FLAG_RANGES[name]

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        too_low = low is not None and (value < low or (value == low and not low_allowed))
        if too_low or (high is not None and value > high) or value != value:
            if high is None:
                wanted = f"at least {low:g}" if low_allowed else f"above {low:g}"
            else:
                wanted = f"in [{low:g}, {high:g}]" if low_allowed else f"in ({low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Raise ProjectError naming the key when a setting is out of range."""
    for key in POSITIVE_KEYS:
        if not config[key] > 0:
            raise ProjectError(f"--{key}: must be > 0, got {config[key]!r}")
    for key in UNIT_INTERVAL_KEYS:
        if not 0.0 <= config[key] <= 1.0:
            raise ProjectError(f"--{key}: must be between 0 and 1, got {config[key]!r}")
    if config["min_positives"] < 0:
        raise ProjectError(f"--min_positives: must be >= 0, got {config['min_positives']!r}")
    for key in ("stream_reconnect_attempts", "stream_reconnect_delay"):
        if not config[key] >= 0:
            raise ProjectError(f"--{key}: must be >= 0, got {config[key]!r}")
    if not config["stream_timeout"] > 0:
        raise ProjectError(f"--stream_timeout: must be > 0, got {config['stream_timeout']!r}")
    if not 0.0 <= config["ema_decay"] < 1.0:
        raise ProjectError(f"--ema_decay: must be >= 0 and < 1 (0: no average), got {config['ema_decay']!r}")
    scales = config["test_scales"]
    if not (isinstance(scales, (list, tuple)) and scales and scales[0] == 1
            and all(isinstance(scale, int) and scale >= 1 or isinstance(scale, float) and 0 < scale < 1
                    for scale in scales)):
        raise ProjectError(f"--test_scales: must be a list of input_size multiples starting with 1, whole above 1 "
                           f"or fractions below (e.g. [1, 2, 0.5]), got {scales!r}")
    if not config["focal_gamma"] >= 0:
        raise ProjectError(f"--focal_gamma: must be >= 0 (0: hard negative mining), got {config['focal_gamma']!r}")
    if config["quality_targets"] and config["focal_gamma"] > 0:
        raise ProjectError("--quality_targets: works with hard negative mining, not with --focal_gamma > 0")
    if not config["diou_loss_weight"] >= 0:
        raise ProjectError(f"--diou_loss_weight: must be >= 0 (0: smooth L1 alone), got {config['diou_loss_weight']!r}")
    if not config["soft_nms_sigma"] >= 0:
        raise ProjectError(f"--soft_nms_sigma: must be >= 0 (0: NMS), got {config['soft_nms_sigma']!r}")
    for key in ("test_small_face", "test_large_face"):
        if not config[key] > 0:
            raise ProjectError(f"--{key}: must be > 0, got {config[key]!r}")
    if config["expand_max_ratio"] < 1.0:
        raise ProjectError(f"--expand_max_ratio: must be >= 1, got {config['expand_max_ratio']!r}")
    for key in ("train_tfrecord", "val_tfrecord"):
        config[key] = tfrecord_paths(config[key])
    check_aliases(config["label_aliases"], config["labels_list"])
    size = config["input_size"]
    if len(size) != 2 or not all(isinstance(side, int) and side > 0 for side in size):
        raise ProjectError(f"--input_size: must be (height, width) in pixels, got {size!r}")
    if len(config["min_sizes"]) != len(config["steps"]):
        raise ProjectError(f"--min_sizes: needs one group per step ({len(config['steps'])}), "
                           f"got {len(config['min_sizes'])}")
    return config


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """{key: parsed value} of the ``--<key>`` flags given on the command line (none of the defaults).

    Raises ProjectError naming the key when a value cannot be parsed."""
    given = {}
    for key, default in cfg.items():
        text = getattr(args, f"cfg_{key}", None)
        if text is None:
            continue
        try:
            given[key] = _parse_value(text, default)
        except (ValueError, SyntaxError) as error:
            raise ProjectError(f"--{key}: cannot parse {text!r} ({error})") from None
    return given


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Return a copy of ``cfg`` with the ``--data`` file (when the parser has one and it was given) and then
    every ``--<key>`` given on the command line applied.

    Raises ProjectError naming the key (or the data file) when a value cannot be parsed.
    """
    config = copy.deepcopy(cfg)
    data_path = getattr(args, "data", None)
    if data_path:
        from components.data_file import load_data_file
        config.update(load_data_file(data_path, getattr(args, "root", None)).settings())
    elif getattr(args, "root", None):
        raise ProjectError("--root: only used with --data FILE")
    settings = given_settings(args)
    config.update(settings)
    return validate_config(apply_tta(config, settings))


def apply_tta(config: dict[str, Any], given: Iterable[str] = ()) -> dict[str, Any]:
    """``config`` with test-time augmentation switched on where ``config['tta']``: the flip test and
    ``TTA_SCALES``, each unless its own key is in ``given`` (an explicit flag wins)."""
    if config.get("tta"):
        if "flip_test" not in given:
            config["flip_test"] = True
        if "test_scales" not in given:
            config["test_scales"] = list(TTA_SCALES)
    return config
