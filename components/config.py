"""Every setting of the detector in one dict, plus helpers to override it from the command line.

Scripts call :func:`add_config_arguments` on their parser and :func:`config_from_args` on the parsed
namespace: any key of ``cfg`` can then be overridden with ``--<key> VALUE`` (lists and tuples are written
as Python literals, e.g. ``--steps "[8, 16, 32, 64]"``).
"""
import ast
import copy

cfg = {
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
    "save_freq": 1,           # epochs between checkpoints
    "val_map_freq": 1,        # epochs between validation mAP evaluations (0 = never)
    "mixed_precision": False, # bfloat16 compute where the CPU supports it
    "cache_dataset": True,    # keep decoded training images in memory (about 1 MB each)
    "checkpoint_dir": "checkpoints/train",
    "log_dir": "logs/train",
    "seed": 0,

    # inference
    "keep_aspect": True,      # pad images at the bottom / right to the input aspect ratio instead of stretching
    "flip_test": True,        # also run each image mirrored and average the two predictions (2x the compute;
                              # only where every step divides the input width, else a single pass)
    "score_threshold": 0.5,
    "nms_threshold": 0.4,
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


def tfrecord_paths(value):
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
        raise ValueError(f"expected a boolean, got {text!r}")
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
        raise ValueError(f"expected {type(default).__name__}, got {type(value).__name__} {value!r}")
    return value


def add_config_arguments(parser, skip=()):
    """Add an optional ``--<key>`` flag for every config key not in ``skip``."""
    group = parser.add_argument_group("config overrides (components/config.py)")
    for key, default in cfg.items():
        if key in skip:
            continue
        group.add_argument(f"--{key}", dest=f"cfg_{key}", metavar="VALUE", default=None,
                           help=f"default: {default!r}")
    return parser


POSITIVE_KEYS = ("batch_size", "epoch", "save_freq", "init_lr", "base_channel", "max_number_keep", "serve_workers",
                 "serve_max_pending", "serve_max_request_mb", "serve_max_image_pixels")
UNIT_INTERVAL_KEYS = ("match_thresh", "min_positive_iou", "nms_threshold", "score_threshold", "crop_prob",
                      "expand_prob", "export_score_threshold")


def validate_config(config):
    """Raise ValueError naming the key when a setting is out of range."""
    for key in POSITIVE_KEYS:
        if not config[key] > 0:
            raise ValueError(f"--{key}: must be > 0, got {config[key]!r}")
    for key in UNIT_INTERVAL_KEYS:
        if not 0.0 <= config[key] <= 1.0:
            raise ValueError(f"--{key}: must be between 0 and 1, got {config[key]!r}")
    if config["min_positives"] < 0:
        raise ValueError(f"--min_positives: must be >= 0, got {config['min_positives']!r}")
    for key in ("stream_reconnect_attempts", "stream_reconnect_delay"):
        if not config[key] >= 0:
            raise ValueError(f"--{key}: must be >= 0, got {config[key]!r}")
    if not config["stream_timeout"] > 0:
        raise ValueError(f"--stream_timeout: must be > 0, got {config['stream_timeout']!r}")
    if config["expand_max_ratio"] < 1.0:
        raise ValueError(f"--expand_max_ratio: must be >= 1, got {config['expand_max_ratio']!r}")
    for key in ("train_tfrecord", "val_tfrecord"):
        config[key] = tfrecord_paths(config[key])
    size = config["input_size"]
    if len(size) != 2 or not all(isinstance(side, int) and side > 0 for side in size):
        raise ValueError(f"--input_size: must be (height, width) in pixels, got {size!r}")
    if len(config["min_sizes"]) != len(config["steps"]):
        raise ValueError(f"--min_sizes: needs one group per step ({len(config['steps'])}), "
                         f"got {len(config['min_sizes'])}")
    return config


def config_from_args(args):
    """Return a copy of ``cfg`` with every ``--<key>`` given on the command line applied.

    Raises ValueError naming the key when a value cannot be parsed.
    """
    config = copy.deepcopy(cfg)
    for key, default in cfg.items():
        text = getattr(args, f"cfg_{key}", None)
        if text is None:
            continue
        try:
            config[key] = _parse_value(text, default)
        except (ValueError, SyntaxError) as error:
            raise ValueError(f"--{key}: cannot parse {text!r} ({error})") from None
    return validate_config(config)
