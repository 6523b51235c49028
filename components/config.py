"""Every setting of the detector, declared once: typed, frozen groups, each used by one part of the code.

:class:`Settings` holds one object per group: ``model`` (:class:`ModelSpec`, what every model file carries),
``data``, ``augment``, ``match``, ``train``, ``detect``, ``serve``, ``stream`` and ``export``. Each field is
declared with :func:`setting`: its default, the one line ``--help`` shows and, where it has one, its check. A
field's name is its flag (``--score_threshold``) and its key in ``run_config.json``; names are unique across
the groups, so ``settings.replace(score_threshold=0.3)`` finds the group itself.

Scripts call :func:`add_config_arguments` on their parser (with the ``groups`` or ``keys`` they use;
``data=True`` adds ``--data FILE`` / ``--root DIR``) and :func:`config_from_args` on the parsed namespace: the
defaults here, then the data file (components/data_file.py), then each ``--<key> VALUE`` given (lists and tuples
written as Python literals, e.g. ``--steps "[8, 16, 32, 64]"``; paths comma-separated).
"""
from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from components.errors import ProjectError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterable, Mapping, Sequence

IGNORE_LABEL = "ignore"   # the canonical name of boxes left out of training and evaluation (see label_aliases)
IGNORE_ID = -1            # its class id in TFRecords and training targets
TTA_SCALES = (1, 2, 0.5)  # the scales --tta runs (with the flip test)


# --- checks: value -> the problem (``must be ...``) or None ---------------------------------------------------

def positive(value: Any) -> str | None:
    return None if value > 0 else "must be > 0"


def not_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be >= 0"


def unit_interval(value: Any) -> str | None:
    return None if 0.0 <= value <= 1.0 else "must be between 0 and 1"


def _check_input_size(size: Any) -> str | None:
    if len(size) == 2 and all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in size):
        return None
    return "must be (height, width) in pixels"


def _check_test_scales(scales: Any) -> str | None:
    if scales and scales[0] == 1 and all(
            isinstance(scale, int) and scale >= 1 or isinstance(scale, float) and 0 < scale < 1 for scale in scales):
        return None
    return "must be a list of input_size multiples starting with 1, whole above 1 or fractions below (e.g. [1, 2, 0.5])"


def _check_ema(value: Any) -> str | None:
    return None if 0.0 <= value < 1.0 else "must be >= 0 and < 1 (0: no average)"


def _check_expand_ratio(value: Any) -> str | None:
    return None if value >= 1.0 else "must be >= 1"


def setting(default: Any, help: str, check: Callable[[Any], str | None] | None = None, flag: bool = True) -> Any:
    """A field of a settings group: its default, its one-line help, its check (value -> problem or None) and
    whether scripts take it as a ``--<name>`` flag."""
    metadata = {"help": help, "check": check, "flag": flag}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


# --- values: frozen on the way in, plain (JSON) on the way out -------------------------------------------------

def _frozen(value: Any) -> Any:
    """Lists (also nested) as tuples, so that settings are hashable and cannot change under their user."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(item) for item in value)
    return value


def plain(value: Any) -> Any:
    """A setting as JSON writes it: tuples (also nested) as lists, mappings as dicts."""
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def tfrecord_paths(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """A ``train_tfrecord`` / ``val_tfrecord`` setting as a tuple of paths (a single path is a tuple of one)."""
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class _Group:
    """What every settings group shares: values frozen and checked on creation, one line per problem."""

    NORMALISE: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = self.NORMALISE.get(item.name, _frozen)(getattr(self, item.name))
            if isinstance(item.default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            object.__setattr__(self, item.name, value)
            check = item.metadata.get("check")
            problem = check(value) if check else None
            if problem:
                shown = value if item.name == "input_size" else plain(value)
                raise ProjectError(f"--{item.name}: {problem}, got {shown!r}")
        self.check()

    def check(self) -> None:
        """Checks of several fields together (a group's own; ProjectError naming the flag)."""

    def as_dict(self) -> dict[str, Any]:
        """{field: value} in JSON form."""
        return {item.name: plain(getattr(self, item.name)) for item in dataclasses.fields(self)}


@dataclass(frozen=True)
class ModelSpec(_Group):
    """What rebuilds a model and reads its outputs: classes, input size, anchors, box coding, network.
    Every model file carries it (runtime/model_files.py); a resumed run cannot change it."""
    input_size: tuple[int, int] = setting((240, 320), "(height, width) in pixels the network runs at",
                                          _check_input_size)
    labels_list: tuple[str, ...] = setting(("background", "mask", "unmask"),
                                           "class names, 'background' first (or names: in a --data file)")
    min_sizes: tuple[tuple[int, ...], ...] = setting(((10, 16, 24), (32, 48), (64, 96), (128, 192, 256)),
                                                     "anchor sizes per head, pixels at input_size")
    steps: tuple[int, ...] = setting((8, 16, 32, 64), "stride of each head in pixels")
    variances: tuple[float, float] = setting((0.1, 0.2), "box-coding variances (centre, size)")
    clip: bool = setting(False, "clip priors to the image")
    network: str = setting("rfb_pan", "backbone: slim, rfb or rfb_pan (rfb with a top-down + bottom-up neck)")
    base_channel: int = setting(16, "width of the network (channels of its first layer)", positive)
    head_context: bool = setting(False, "residual dilated context block before the stride-8 and stride-16 heads "
                                        "(+23,744 parameters)")
    training_data: tuple[str, ...] = setting((), "file names of the TFRecords the model was trained on (a model "
                                                 "file's record; set by training, not a flag)", flag=False)

    def check(self) -> None:
        labels = self.labels_list
        if not labels or labels[0] != "background" or len(labels) < 2:
            raise ProjectError(f"--labels_list: must be 'background' followed by the class names, got {list(labels)!r}")
        if len(self.min_sizes) != len(self.steps):
            raise ProjectError(f"--min_sizes: needs one group per step ({len(self.steps)}), got {len(self.min_sizes)}")

    @property
    def num_classes(self) -> int:
        """Classes the network scores, background included."""
        return len(self.labels_list)


DEFAULT_ALIASES = {
    "face_mask": "mask", "HaveMask": "mask", "with_mask": "mask", "mask": "mask",
    "face": "unmask", "NoMask": "unmask", "without_mask": "unmask", "unmask": "unmask",
    "with_incorrect_mask": "ignore", "mask_weared_incorrect": "ignore",
}


@dataclass(frozen=True)
class DataSettings(_Group):
    """Where training and validation read from, and how VOC labels map to the classes. A label mapped to
    'ignore' is a box that is neither a face of any class nor background: left out of the loss, difficult
    for mAP."""
    NORMALISE: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "label_aliases": dict, "train_tfrecord": tfrecord_paths, "val_tfrecord": tfrecord_paths}
    label_aliases: dict[str, str] = setting(DEFAULT_ALIASES,
                                            "VOC label -> class name, or 'ignore' (or aliases: in a --data file)")
    train_tfrecord: tuple[str, ...] = setting(("dataset/train_mask.tfrecord", "dataset/train_ilc.tfrecord"),
                                              "training TFRecords, comma-separated (or train: in a --data file)")
    val_tfrecord: tuple[str, ...] = setting(("dataset/val_mask.tfrecord", "dataset/val_ilc.tfrecord"),
                                            "validation TFRecords, comma-separated (or val: in a --data file)")

    def __hash__(self) -> int:
        return hash((tuple(sorted(self.label_aliases.items())), self.train_tfrecord, self.val_tfrecord))


@dataclass(frozen=True)
class AugmentSettings(_Group):
    """Training-time augmentation (dataset/tf_dataset_preprocess.py)."""
    using_crop: bool = setting(True, "random crops that keep whole faces")
    crop_prob: float = setting(0.8, "share of training images cropped", unit_interval)
    expand_prob: float = setting(0.3, "share of training images zoomed out onto a grey canvas", unit_interval)
    expand_max_ratio: float = setting(3.0, "largest zoom-out factor", _check_expand_ratio)
    using_bin: bool = setting(True, "pad images to the input aspect ratio before resizing")
    using_flip: bool = setting(True, "random horizontal flips")
    using_distort: bool = setting(True, "photometric distortion (brightness, contrast, saturation, hue)")


@dataclass(frozen=True)
class MatchSettings(_Group):
    """How priors are matched to faces for training targets (components/box_utils.match_priors)."""
    match_thresh: float = setting(0.45, "IoU from which a prior is matched to a face", unit_interval)
    min_positives: int = setting(4, "priors each face gets at least (small-face matching)", not_negative)
    min_positive_iou: float = setting(0.2, "lowest IoU of those extra priors (0: plain SSD matching)", unit_interval)


@dataclass(frozen=True)
class TrainSettings(_Group):
    """The optimisation, the loss and the run's bookkeeping (training/trainer.py)."""
    batch_size: int = setting(32, "images per optimizer step", positive)
    epoch: int = setting(150, "epochs to train in all", positive)
    init_lr: float = setting(1e-2, "learning rate after the warm-up", positive)
    lr_decay_epoch: tuple[int, ...] = setting((100, 130), "epochs at which the learning rate is multiplied by lr_rate")
    lr_rate: float = setting(0.1, "learning-rate decay factor")
    warmup_epoch: float = setting(5, "epochs of linear warm-up (shortened when longer than the run)")
    min_lr: float = setting(1e-4, "lowest learning rate")
    weights_decay: float = setting(5e-4, "decoupled weight decay")
    momentum: float = setting(0.9, "SGD (Nesterov) momentum")
    neg_pos_ratio: int = setting(3, "hard negatives per positive prior in the loss")
    focal_gamma: float = setting(0.0, "softmax focal loss on every prior with this gamma instead of hard negative "
                                      "mining (0 = off)", lambda value: None if value >= 0 else
                                 "must be >= 0 (0: hard negative mining)")
    quality_targets: bool = setting(False, "a positive prior's class target is its decoded box's IoU with its face "
                                           "instead of 1")
    diou_loss_weight: float = setting(0.0, "weight of a 1 - DIoU term on positive priors' decoded boxes, added to "
                                           "smooth L1 (0 = off)",
                                      lambda value: None if value >= 0 else "must be >= 0 (0: smooth L1 alone)")
    distill_teacher: str = setting("", "a .keras model of the same classes and input size whose flip test (its "
                                       "outputs on each training batch and on the batch mirrored, averaged) gives "
                                       "soft class targets ('': none)")
    distill_weight: float = setting(1.0, "weight of the distillation term (cross-entropy to the teacher's class "
                                         "probabilities on the priors the class loss uses)",
                                    lambda value: None if value >= 0 else "must be >= 0")
    ema_decay: float = setting(0.0, "decay of the weights' moving average that validation and export use (0: none)",
                               _check_ema)
    save_freq: int = setting(1, "epochs between checkpoints", positive)
    val_map_freq: int = setting(1, "epochs between validation mAP evaluations (0: never)")
    mixed_precision: bool = setting(False, "bfloat16 compute where the CPU supports it")
    cache_dataset: bool = setting(True, "keep decoded training images in memory")
    checkpoint_dir: str = setting("checkpoints/train", "folder of checkpoints, run settings, history and plot")
    log_dir: str = setting("logs/train", "TensorBoard log folder")
    seed: int = setting(0, "random seed")

    def check(self) -> None:
        if self.quality_targets and self.focal_gamma > 0:
            raise ProjectError("--quality_targets: works with hard negative mining, not with --focal_gamma > 0")
        if self.distill_teacher and self.focal_gamma > 0:
            raise ProjectError("--distill_teacher: works with hard negative mining, not with --focal_gamma > 0")


@dataclass(frozen=True)
class DetectSettings(_Group):
    """How an image becomes detections: letterbox, test-time augmentation, thresholds, NMS (runtime/).
    The default is one network pass per image (what every export and app runs); ``tta`` turns on the flip
    test and ``TTA_SCALES`` unless those two are given."""
    keep_aspect: bool = setting(True, "pad images to the input aspect ratio instead of stretching")
    tta: bool = setting(False, "test-time augmentation: the flip test and test_scales [1, 2, 0.5], up to six network "
                               "passes per image (default: one pass)")
    flip_test: bool = setting(False, "also run each image mirrored and average (2x compute)")
    test_scales: tuple[float, ...] = setting(
        (1,), "multi-scale test: input_size multiples each image also runs at, whole ones above 1 or fractions below "
              "([1]: one scale; .keras only)", _check_test_scales)
    test_small_face: int = setting(64, "a pass at a larger scale keeps faces smaller than this (pixels at input_size)",
                                   positive)
    test_large_face: int = setting(96, "a pass at a smaller scale keeps faces of at least this (pixels at input_size)",
                                   positive)
    score_threshold: float = setting(0.5, "lowest score of a detection kept", unit_interval)
    nms_threshold: float = setting(0.4, "IoU above which NMS drops the weaker of two boxes", unit_interval)
    box_voting: float = setting(0.0, "box voting after NMS: IoU of the candidates averaged into each kept box "
                                     "(0 = off)", unit_interval)
    soft_nms_sigma: float = setting(0.0, "Gaussian soft-NMS: sigma of the score decay exp(-IoU^2 / sigma) "
                                         "(0 = NMS at nms_threshold)",
                                    lambda value: None if value >= 0 else "must be >= 0 (0: NMS)")
    max_number_keep: int = setting(200, "most detections per image", positive)


@dataclass(frozen=True)
class ServeSettings(_Group):
    """Bounds of the web demo and REST API (serve.py's --workers, --max_pending, --max_request_mb,
    --max_image_pixels set them)."""
    serve_workers: int = setting(1, "inference threads of the server", positive)
    serve_max_pending: int = setting(32, "requests admitted at once, running or waiting (503 beyond)", positive)
    serve_max_request_mb: float = setting(10.0, "largest request body in MiB (413 beyond)", positive)
    serve_max_image_pixels: int = setting(40_000_000, "largest image, width x height (413 beyond)", positive)

    @property
    def max_request_bytes(self) -> int:
        """``serve_max_request_mb`` in whole bytes."""
        return int(self.serve_max_request_mb * 1024 * 1024)

    @property
    def max_pending(self) -> int:
        """Requests admitted at once: ``serve_max_pending``, but at least one per worker."""
        return max(self.serve_max_pending, self.serve_workers)


@dataclass(frozen=True)
class StreamSettings(_Group):
    """Live video sources (inference.py --video / --camera with a URL or camera index)."""
    stream_reconnect_attempts: int = setting(5, "reopenings of a live video source that stops giving frames",
                                             not_negative)
    stream_reconnect_delay: float = setting(0.5, "seconds before the first reopening (doubled each time)",
                                            not_negative)
    stream_timeout: float = setting(10.0, "seconds a stream URL may take to open or to give the next frame", positive)


@dataclass(frozen=True)
class ExportSettings(_Group):
    """End-to-end exports (export.py --end_to_end)."""
    export_score_threshold: float = setting(0.01, "lowest score an end-to-end export keeps (at most max_number_keep "
                                                  "per image; apps filter higher)", unit_interval)


GROUPS: dict[str, type[_Group]] = {
    "model": ModelSpec, "data": DataSettings, "augment": AugmentSettings, "match": MatchSettings,
    "train": TrainSettings, "detect": DetectSettings, "serve": ServeSettings, "stream": StreamSettings,
    "export": ExportSettings,
}
GROUP_OF = {item.name: group for group, kind in GROUPS.items() for item in dataclasses.fields(kind)}


def group_keys(*groups: str) -> tuple[str, ...]:
    """The field names (flags) of ``groups``, in declaration order."""
    return tuple(item.name for group in groups for item in dataclasses.fields(GROUPS[group]))


def check_aliases(label_aliases: Mapping[str, str], labels_list: Sequence[str]) -> None:
    """Raise ProjectError when an alias maps to a class that ``labels_list`` lacks (nor 'ignore')."""
    missing = sorted({target for target in label_aliases.values()
                      if target != IGNORE_LABEL and target not in labels_list})
    if missing:
        sources = ", ".join(sorted(label for label, target in label_aliases.items() if target in missing))
        raise ProjectError(f"--label_aliases: {sources} map to {', '.join(map(repr, missing))}, which "
                           f"--labels_list {list(labels_list)} lacks: add the class there (names: in a data file) "
                           f"or map the label to 'ignore'")


def flat_settings(content: Mapping[str, Any]) -> dict[str, Any]:
    """{setting: value} of saved settings, grouped (``Settings.as_dict``) or flat (older run_config.json
    files); names no group declares any more are left out."""
    flat: dict[str, Any] = {}
    for key, value in content.items():
        if key in GROUPS and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return {key: value for key, value in flat.items() if key in GROUP_OF}


@dataclass(frozen=True)
class Settings:
    """All the settings, one frozen object per group (``settings.detect.score_threshold``)."""
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSettings = field(default_factory=DataSettings)
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    match: MatchSettings = field(default_factory=MatchSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    detect: DetectSettings = field(default_factory=DetectSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    stream: StreamSettings = field(default_factory=StreamSettings)
    export: ExportSettings = field(default_factory=ExportSettings)

    def __post_init__(self) -> None:
        check_aliases(self.data.label_aliases, self.model.labels_list)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` ({field name: value}, any groups) applied and checked.
        Raises ProjectError naming an unknown setting."""
        by_group: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            if key not in GROUP_OF:
                raise ProjectError(f"--{key}: unknown setting")
            by_group.setdefault(GROUP_OF[key], {})[key] = value
        groups = {group: dataclasses.replace(getattr(self, group), **values) for group, values in by_group.items()}
        return dataclasses.replace(self, **groups)

    def value(self, key: str) -> Any:
        """The value of the setting ``key`` (its flag name), wherever its group."""
        return getattr(getattr(self, GROUP_OF[key]), key)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """{group: {field: value}} in JSON form: what ``run_config.json`` stores."""
        return {group: getattr(self, group).as_dict() for group in GROUPS}

    def flat(self) -> dict[str, Any]:
        """{field: value} of every group in JSON form."""
        return {key: value for values in self.as_dict().values() for key, value in values.items()}

    @classmethod
    def from_dict(cls, content: Mapping[str, Any], base: Settings | None = None) -> Settings:
        """Settings from ``as_dict()``'s form or a flat {field: value} (older run_config.json files), over
        ``base`` (default: the defaults). Keys no group declares any more are left out."""
        return (base or cls()).replace(**flat_settings(content))

    def with_tta(self, given: Iterable[str] = ()) -> Settings:
        """These settings with test-time augmentation switched on where ``detect.tta``: the flip test and
        ``TTA_SCALES``, each unless its own flag is in ``given`` (an explicit flag wins)."""
        if not self.detect.tta:
            return self
        changes: dict[str, Any] = {}
        if "flip_test" not in given:
            changes["flip_test"] = True
        if "test_scales" not in given:
            changes["test_scales"] = TTA_SCALES
        return self.replace(**changes)


DEFAULT_SETTINGS = Settings()
# the flags each kind of script takes (``add_config_arguments(parser, keys=...)``) beside whole groups
DATA_KEYS = ("labels_list", "label_aliases")
ANCHOR_KEYS = ("input_size", "min_sizes", "steps", *group_keys("match"), "variances", "clip")
AUGMENTATION_KEYS = group_keys("augment")
DETECTION_KEYS = ("input_size", *group_keys("detect"))
STREAM_KEYS = group_keys("stream")
DEFAULTS = {item.name: getattr(getattr(DEFAULT_SETTINGS, group), item.name)
            for group, kind in GROUPS.items() for item in dataclasses.fields(kind)}
CONFIG_HELP = {item.name: item.metadata["help"] for kind in GROUPS.values() for item in dataclasses.fields(kind)}
FLAGS = tuple(item.name for kind in GROUPS.values() for item in dataclasses.fields(kind) if item.metadata["flag"])


# --- the command line -------------------------------------------------------------------------------------------

def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ProjectError(f"expected a boolean, got {text!r}")


def parse_value(text: str, default: Any) -> Any:
    """A command-line string as a value of the type of ``default`` (lists and tuples as Python literals; a
    sequence of strings also comma-separated)."""
    if isinstance(default, bool):
        return _parse_bool(text)
    if isinstance(default, str):
        return text
    if isinstance(default, tuple) and all(isinstance(item, str) for item in default) \
            and not text.lstrip().startswith(("[", "(")):
        return tuple(path.strip() for path in text.split(",") if path.strip())   # comma-separated paths
    value = _frozen(ast.literal_eval(text))
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not type(default):
        raise ProjectError(f"expected {type(plain(default)).__name__}, got {type(plain(value)).__name__} "
                           f"{plain(value)!r}")
    return value


def add_config_arguments(parser: argparse.ArgumentParser, skip: Iterable[str] = (), keys: Iterable[str] | None = None,
                         data: bool = False, groups: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """Add a ``--<key> VALUE`` flag with its help line for every setting of ``groups`` and ``keys`` (neither:
    all) and not in ``skip``; with ``data`` also ``--data FILE`` and ``--root DIR`` (a data-set description
    file, components/data_file.py)."""
    if data:
        group = parser.add_argument_group("data set")
        group.add_argument("--data", default=None, metavar="FILE",
                           help="data-set file (YAML, e.g. data/ilc2021.yaml): VOC folders, splits, classes, aliases")
        group.add_argument("--root", default=None, metavar="DIR",
                           help="folder the data file's VOC paths are relative to (overrides its root:)")
    wanted = None if keys is None and groups is None else set(keys or ()) | set(group_keys(*(groups or ())))
    group = parser.add_argument_group("settings (defaults in components/config.py)")
    for key, default in DEFAULTS.items():
        if key in skip or (wanted is not None and key not in wanted) or key not in FLAGS:
            continue
        # a boolean flag alone means true (--tta); with a value it takes it (--flip_test False)
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if isinstance(default, bool) else {}
        shown = tuple(default) if key == "input_size" else plain(default)
        group.add_argument(f"--{key}", dest=f"cfg_{key}", metavar="VALUE", default=None, **extra,
                           help=f"{CONFIG_HELP[key]} (default: {shown!r})")
    return parser


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """{key: parsed value} of the ``--<key>`` flags given on the command line (none of the defaults).

    Raises ProjectError naming the key when a value cannot be parsed."""
    given = {}
    for key in FLAGS:
        default = DEFAULTS[key]
        text = getattr(args, f"cfg_{key}", None)
        if text is None:
            continue
        try:
            given[key] = parse_value(text, default)
        except (ValueError, SyntaxError) as error:
            raise ProjectError(f"--{key}: cannot parse {text!r} ({error})") from None
        except ProjectError as error:
            raise ProjectError(f"--{key}: {error}") from None
    return given


def config_from_args(args: argparse.Namespace, data_file: Mapping[str, Any] | None = None) -> Settings:
    """The defaults with ``data_file`` (the settings a ``--data`` file sets, ``DataFile.settings()``) and then
    every ``--<key>`` given on the command line applied, test-time augmentation expanded.

    Raises ProjectError naming the key when a value cannot be parsed or is out of range.
    """
    settings = DEFAULT_SETTINGS.replace(**data_file) if data_file else DEFAULT_SETTINGS
    given = given_settings(args)
    return settings.replace(**given).with_tta(given)


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
