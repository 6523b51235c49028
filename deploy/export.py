"""Export a trained .keras model for deployment: SavedModel, float TFLite, full-integer TFLite or ONNX.

    python export.py --model_path checkpoints/train/last.keras --format {saved_model,tflite,tflite_int8,onnx}
                     [--output PATH] [--calibration_images DIR | --calibration_tfrecord FILE] [--num_calibration 300]
                     [--val_tfrecord dataset/val_mask.tfrecord]

Every export takes the model's fixed input size (240x320 by default), goes to ``runs/export/<stem><suffix>``
unless ``--output`` says otherwise, and is written atomically (staged in a temporary folder beside the output,
checked, then renamed into place) with the model spec inside it (``runtime.model_files.embed_spec``:
classes, input size, anchors, normalisation), so that ``inference.py --model_path <output>`` and
``mAP/detect.py`` load it with no other setting.

* ``saved_model``: TensorFlow SavedModel folder (default ``<stem>_saved_model``), any batch size, weights frozen
  into the graph (faster to run; fine-tune from the .keras file).
* ``tflite``: float32 TFLite model (default ``<stem>.tflite``), batch 1.
* ``tflite_int8``: full-integer TFLite model (default ``<stem>_int8.tflite``), batch 1: int8 weights and
  activations calibrated on up to ``--num_calibration`` images preprocessed exactly as at inference (from
  ``--calibration_images DIR``, else ``--calibration_tfrecord``, else ``dataset/train_mask.tfrecord`` where it
  exists, else the small set the repository ships in ``assets/calibration/``: :func:`load_calibration`); the
  input and output stay float32 (a quantize op in, a dequantize op out), which measured as fast as int8
  input/output once the quantisation that int8 I/O needs in Python is counted.
* ``onnx``: ONNX model converted by tf2onnx (default ``<stem>.onnx``), batch 1, for onnxruntime.
* ``onnx_decoded``: ONNX model for OpenCV DNN (4.x and 5.x) and the browser (default ``<stem>_decoded.onnx``):
  NCHW input, decoded boxes and class probabilities out, NMS left to the app (``deploy/decoded_onnx.py``,
  checked with OpenCV DNN and onnxruntime against the Keras model and ``Detector``).

Before it is published, the export is loaded with its runtime and run on the sample images
(``assets/*.jpg``); the largest absolute difference to the Keras model is printed for the raw outputs and for
the decoded boxes. Float formats must agree within 1e-3 on the raw outputs and 0.1 pixel (of the network
input) on the decoded boxes, else nothing is written and the exit status is 1. For int8 the differences are
printed for information, with the correlation of the raw outputs, and with ``--val_tfrecord`` the validation
mAP of both models (target: int8 within 1 point of float).
"""
from __future__ import annotations

import glob
import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from components.drawing import ANNOTATED_PREFIX
from components.errors import ProjectError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    import keras
    import tensorflow as tf

    from runtime.detector import Detector

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EXPORT_FORMATS = ("saved_model", "tflite", "tflite_int8", "onnx", "onnx_decoded")
OUTPUT_SUFFIX = {"saved_model": "_saved_model", "tflite": ".tflite", "tflite_int8": "_int8.tflite", "onnx": ".onnx",
                 "onnx_decoded": "_decoded.onnx"}
DEFAULT_CALIBRATION_TFRECORD = os.path.join(REPO_ROOT, "dataset", "train_mask.tfrecord")   # used where it exists
SHIPPED_CALIBRATION_DIR = os.path.join(REPO_ROOT, "assets", "calibration")   # else these (both training sets)
CALIBRATION_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_EXPORT_DIR = os.path.join(REPO_ROOT, "runs", "export")
DEFAULT_NUM_CALIBRATION = 300
SAMPLE_IMAGES = os.path.join(REPO_ROOT, "assets", "*.jpg")
# the two sample photos of the original project: what exports are checked on (other pictures in assets/, such as
# screenshots, are not)
SAMPLE_IMAGE_NAMES = ("1_Handshaking_Handshaking_1_71.jpg", "test_00002330.jpg")
FLOAT_RAW_TOLERANCE = 1e-3       # max |exported - keras| of the raw outputs (offsets and logits)
FLOAT_BOX_TOLERANCE_PX = 0.1     # max |exported - keras| of the decoded boxes, pixels of the network input
INT8_MAP_TARGET_POINTS = 1.0
ONNX_OPSET = 17
CALIBRATION_SHUFFLE_BUFFER = 1000


class ExportError(ProjectError):
    """An export that cannot be made; the message names the path and the problem."""


class ExportCheckError(ExportError):
    """An exported model that does not reproduce the Keras model; nothing was written (exit status 1)."""

    exit_code = 1


@dataclass
class ExportReport:
    """What :func:`export_model_file` wrote and how the export compares with the Keras model."""
    format: str
    path: str
    config_path: str | None   # older exports' sidecar; None now (the spec is inside the file)
    size_bytes: int
    check_images: int = 0
    raw_max_diff: float | None = None
    box_max_diff_px: float | None = None
    correlation: float | None = None
    map_reference: float | None = None
    map_exported: float | None = None
    notes: list = field(default_factory=list)


def default_output(model_file: str, export_format: str) -> str:
    """Default output path: ``runs/export/<stem><suffix>`` of the repository (e.g. ``last_int8.tflite``), never
    beside the model (which may be a tracked file)."""
    stem = os.path.splitext(os.path.basename(os.path.normpath(model_file)))[0]
    return os.path.join(DEFAULT_EXPORT_DIR, stem + OUTPUT_SUFFIX[export_format])


def path_size(path: str) -> int:
    """Bytes of a file, or of all files under a folder."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)
    return os.path.getsize(path)


def serving_function(model: keras.Model, input_size: Sequence[int],
                     batch: int | None = None) -> tuple[Any, tf.TensorSpec]:
    """(tf.function images -> raw predictions with a fixed input signature [batch, h, w, 3], its TensorSpec)."""
    import tensorflow as tf
    spec = tf.TensorSpec([batch, *input_size, 3], tf.float32, name="images")
    return tf.function(lambda images: model(images, training=False), input_signature=[spec]), spec


def write_saved_model(model: keras.Model, input_size: Sequence[int], path: str, batch: int | None = None,
                      frozen: bool = True) -> None:
    """Write a SavedModel folder at ``path`` whose ``serve`` function (also the ``serving_default``
    signature) takes [batch, h, w, 3] float32 and returns the raw predictions.

    ``frozen``: the weights are constants of the graph (``runtime.adapters.frozen_function``), which
    TensorFlow runs about a third faster; otherwise Keras's own export, with variables.
    """
    import tensorflow as tf

    from runtime.adapters import frozen_function
    spec = tf.TensorSpec([batch, *input_size, 3], tf.float32, name="images")
    if not frozen:
        model.export(path, format="tf_saved_model", input_signature=[spec], verbose=False)
        return
    module = tf.Module()
    module.inference = frozen_function(model, input_size, batch)
    module.serve = tf.function(lambda images: module.inference(images), input_signature=[spec])
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})


def calibration_images(tfrecord_path: str, input_size: Sequence[int], count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` training images [1, h, w, 3] float32, drawn (shuffled with ``seed``) from a TFRecord and
    preprocessed exactly as at inference (``runtime.detector.preprocess_images``)."""
    import tensorflow as tf

    from dataset.tf_dataset_preprocess import parse_example
    from runtime.preprocessing import preprocess_images
    if not os.path.isfile(tfrecord_path):
        raise ExportError(f"{tfrecord_path}: calibration TFRecord not found")
    dataset = tf.data.TFRecordDataset(tfrecord_path).shuffle(CALIBRATION_SHUFFLE_BUFFER, seed=seed).take(count)
    dataset = dataset.map(lambda record: parse_example(record)[0], num_parallel_calls=tf.data.AUTOTUNE)
    images = [preprocess_images([image], input_size) for image in dataset.as_numpy_iterator()]
    if not images:
        raise ExportError(f"{tfrecord_path}: no records to calibrate with")
    return images


def calibration_folder_images(folder: str, input_size: Sequence[int], count: int, seed: int = 0) -> list[np.ndarray]:
    """Up to ``count`` images of ``folder`` (``CALIBRATION_EXTENSIONS``; a seeded draw when it holds more)
    as network inputs [1, h, w, 3] float32, preprocessed exactly as at inference. Raises ExportError naming
    the folder when it is missing or holds no readable image."""
    import cv2

    from runtime.preprocessing import preprocess_images
    if not os.path.isdir(folder):
        raise ExportError(f"{folder}: calibration image folder not found")
    names = sorted(name for name in os.listdir(folder) if name.lower().endswith(CALIBRATION_EXTENSIONS))
    if len(names) > count:
        names = sorted(np.random.default_rng(seed).choice(names, count, replace=False))
    images = []
    for name in names:
        image = cv2.imread(os.path.join(folder, name), cv2.IMREAD_COLOR)
        if image is not None:
            images.append(preprocess_images([cv2.cvtColor(image, cv2.COLOR_BGR2RGB)], input_size))
    if not images:
        raise ExportError(f"{folder}: no readable image ({', '.join(CALIBRATION_EXTENSIONS)}) to calibrate with")
    return images


def calibration_source(images_dir: str | None = None, tfrecord: str | None = None) -> tuple[str, str]:
    """(kind 'images' or 'tfrecord', path) that int8 calibration reads: ``images_dir``, else ``tfrecord``, else
    ``DEFAULT_CALIBRATION_TFRECORD`` where it exists, else the set the repository ships
    (``SHIPPED_CALIBRATION_DIR``)."""
    if images_dir:
        return "images", images_dir
    if tfrecord:
        return "tfrecord", tfrecord
    if os.path.isfile(DEFAULT_CALIBRATION_TFRECORD):
        return "tfrecord", DEFAULT_CALIBRATION_TFRECORD
    return "images", SHIPPED_CALIBRATION_DIR


def load_calibration(input_size: Sequence[int], count: int, images_dir: str | None = None, tfrecord: str | None = None,
                     log: Callable[[str], Any] = print, seed: int = 0) -> list[np.ndarray]:
    """The int8 calibration inputs (list of [1, h, w, 3] float32) from :func:`calibration_source`, with one
    line through ``log`` saying how many images were read and from where."""
    kind, path = calibration_source(images_dir, tfrecord)
    if kind == "images":
        images = calibration_folder_images(path, input_size, count, seed)
    else:
        images = calibration_images(path, input_size, count, seed)
    shipped = " (the set the repository ships; --calibration_images DIR for your own)" \
        if os.path.abspath(path) == os.path.abspath(SHIPPED_CALIBRATION_DIR) else ""
    fewer = f", all it holds (--num_calibration {count})" if len(images) < count else ""
    log(f"calibrating on {len(images)} images of {path}{shipped}{fewer}")
    return images


def tflite_bytes(model: keras.Model, input_size: Sequence[int], calibration: Sequence[np.ndarray] | None = None,
                 int8_io: bool = False) -> bytes:
    """A batch-1 TFLite flatbuffer of ``model``: float32, or full-integer int8 calibrated on ``calibration``
    (a list of [1, h, w, 3] float32 network inputs) with float32 input and output (quantize / dequantize ops
    in the model), or with ``int8_io`` int8 input and output (``TFLiteRuntime`` then applies the scales)."""
    import tensorflow as tf
    with tempfile.TemporaryDirectory(prefix="tflite-export-") as folder:
        saved_model = os.path.join(folder, "saved_model")
        write_saved_model(model, input_size, saved_model, batch=1, frozen=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        if calibration is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([image] for image in calibration)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8 if int8_io else tf.float32
            converter.inference_output_type = tf.int8 if int8_io else tf.float32
        return converter.convert()


def replace_deprecated_resize(proto: Any) -> None:
    """Rewrite tf2onnx's nearest-neighbour ``Resize`` nodes (TensorFlow's half-pixel centres:
    ``tf_half_pixel_for_nn`` with ``floor``, deprecated since opset 13, onnxruntime warns on every load) to the
    same sampling in current terms: floor((x + 0.5) / s) = round_prefer_ceil((x + 0.5) / s - 0.5), i.e.
    ``half_pixel`` with ``round_prefer_ceil``. Edits ``proto`` (an onnx ModelProto) in place."""
    for node in proto.graph.node:
        attributes = {attribute.name: attribute for attribute in node.attribute}
        if (node.op_type == "Resize" and "coordinate_transformation_mode" in attributes
                and attributes["coordinate_transformation_mode"].s == b"tf_half_pixel_for_nn"
                and "nearest_mode" in attributes and attributes["nearest_mode"].s == b"floor"):
            attributes["coordinate_transformation_mode"].s = b"half_pixel"
            attributes["nearest_mode"].s = b"round_prefer_ceil"


def resize_to_sizes(proto: Any) -> None:
    """Give each ``Resize`` that feeds an ``Add`` the output size of the Add's other operand (``sizes``) instead
    of tf2onnx's ``scales``: an upsampling to an odd side (12 -> 23 rows at 368x512) has a scale that is not
    exact in floating point, and floor(12 * 1.91666...) = 22 rows would not add to 23. Edits ``proto`` (an onnx
    ModelProto) in place; resizes whose target cannot be inferred keep their scales."""
    import onnx
    from onnx import numpy_helper, shape_inference
    inferred = shape_inference.infer_shapes(proto)
    shapes = {value.name: [dim.dim_value for dim in value.type.tensor_type.shape.dim]
              for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    consumers: dict[str, list[Any]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in proto.graph.node:
        if node.op_type != "Resize" or len(node.input) != 3:
            continue
        targets = [shapes.get(other) for add in consumers.get(node.output[0], []) if add.op_type == "Add"
                   for other in add.input if other != node.output[0]]
        target = next((shape for shape in targets if shape and len(shape) == 4 and all(shape)), None)
        if target is None:
            continue
        sizes = numpy_helper.from_array(np.array(target, np.int64), name=f"{node.name}_sizes")
        proto.graph.initializer.append(sizes)
        node.input[2] = ""
        node.input.append(sizes.name)
    used = {name for node in proto.graph.node for name in node.input}
    for initializer in [item for item in proto.graph.initializer if item.name not in used]:
        proto.graph.initializer.remove(initializer)   # the scales no node reads (onnxruntime warns of them)
    onnx.checker.check_model(proto)


def onnx_function_bytes(function: Any, input_signature: Sequence[tf.TensorSpec], opset: int = ONNX_OPSET) -> bytes:
    """The ONNX model (tf2onnx) of a tf.function with ``input_signature``, serialised (nearest-neighbour
    resizes in current terms: :func:`replace_deprecated_resize`, to the exact sizes: :func:`resize_to_sizes`)."""
    try:
        import tf2onnx
    except ImportError:
        raise ExportError("onnx export needs tf2onnx (pip install tf2onnx onnx)") from None
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    model_proto, _ = tf2onnx.convert.from_function(function, input_signature=input_signature, opset=opset)
    replace_deprecated_resize(model_proto)
    resize_to_sizes(model_proto)
    return model_proto.SerializeToString()


def onnx_bytes(model: keras.Model, input_size: Sequence[int], opset: int = ONNX_OPSET) -> bytes:
    """A batch-1 ONNX model of ``model`` (tf2onnx), serialised."""
    function, spec = serving_function(model, input_size, batch=1)
    return onnx_function_bytes(function, [spec], opset)


def write_export(model: keras.Model, cfg: dict[str, Any], export_format: str, path: str,
                 calibration: Sequence[np.ndarray] | None = None) -> None:
    """Write ``model`` in ``export_format`` to ``path`` (no sidecar, no check: see :func:`export_model_file`)."""
    input_size = tuple(cfg["input_size"])
    if export_format == "saved_model":
        write_saved_model(model, input_size, path)
        return
    if export_format == "tflite_int8" and calibration is None:
        raise ExportError("tflite_int8 needs calibration images")
    if export_format in ("tflite", "tflite_int8"):
        data = tflite_bytes(model, input_size, calibration if export_format == "tflite_int8" else None)
    elif export_format == "onnx":
        data = onnx_bytes(model, input_size)
    else:
        raise ExportError(f"unknown format {export_format!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    with open(path, "wb") as handle:
        handle.write(data)


def sample_image_paths(pattern: str | None = None) -> list[str]:
    """Paths of the sample images: the two of ``SAMPLE_IMAGE_NAMES`` in assets/ that exist, or with ``pattern`` the
    files it matches, without the annotated copies (``out_*``) that inference.py writes beside them."""
    if pattern is None:
        paths = (os.path.join(REPO_ROOT, "assets", name) for name in SAMPLE_IMAGE_NAMES)
        return [path for path in paths if os.path.isfile(path)]
    return [path for path in sorted(glob.glob(pattern)) if not os.path.basename(path).startswith(ANNOTATED_PREFIX)]


def sample_images(pattern: str | None = None) -> list[np.ndarray]:
    """The sample images (uint8 RGB) used to check an export."""
    import cv2
    images = []
    for path in sample_image_paths(pattern):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is not None:
            images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return images


def compare_outputs(reference: np.ndarray, exported: np.ndarray, priors: np.ndarray,
                    cfg: dict[str, Any]) -> tuple[float, float, float]:
    """(max |diff| of raw outputs, max |diff| of decoded boxes in network-input pixels, correlation)."""
    from components.box_utils import decode_boxes
    height, width = cfg["input_size"]
    scale = np.array([width, height, width, height], np.float32)
    boxes = [decode_boxes(values[..., :4], priors, cfg["variances"]).numpy() * scale
             for values in (reference, exported)]
    correlation = float(np.corrcoef(reference.ravel(), exported.ravel())[0, 1]) if reference.std() > 0 else 1.0
    return float(np.abs(reference - exported).max()), float(np.abs(boxes[0] - boxes[1]).max()), correlation


def load_export_source(model_path: str, export_format: str,
                       input_size: Sequence[int] | None = None) -> tuple[str, dict[str, Any], keras.Model]:
    """(model file, its config, the Keras model) of the ``.keras`` model at ``model_path`` (or the newest in a
    folder) to export as ``export_format``, the config's input size replaced by ``input_size`` (h, w) when
    given, rounded up to the nearest size whose maps sit on the image as at the trained size
    (``components.prior_box.aligned_input_size``); raises ExportError for an unknown format or another kind
    of model."""
    from components.prior_box import aligned_input_size
    from runtime.adapters import is_saved_model_dir, load_keras_model
    from runtime.model_files import load_model_config, resolve_model_path
    if export_format not in EXPORT_FORMATS:
        raise ExportError(f"unknown format {export_format!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    model_file = resolve_model_path(model_path)
    if is_saved_model_dir(model_file) or not model_file.endswith(".keras"):
        raise ExportError(f"{model_file}: export starts from a .keras model")
    cfg = load_model_config(model_file)
    if input_size is not None:
        cfg = cfg.replace(input_size=aligned_input_size(input_size, cfg["input_size"], cfg["steps"]))
    return model_file, cfg, load_keras_model(model_file)


def export_model_file(model_path: str, export_format: str, output: str | None = None,
                      calibration_tfrecord: str | None = None, num_calibration: int = DEFAULT_NUM_CALIBRATION,
                      val_tfrecord: str | None = None, check_images: Sequence[np.ndarray] | None = None,
                      calibration: Sequence[np.ndarray] | None = None, log: Callable[[str], Any] = print,
                      input_size: Sequence[int] | None = None,
                      calibration_images_dir: str | None = None) -> ExportReport:
    """Export the ``.keras`` model at ``model_path`` (or the newest in a folder) as ``export_format``.

    Args:
        output: file (or folder for saved_model); default :func:`default_output`.
        calibration: ready calibration inputs for tflite_int8 (else :func:`load_calibration` from
            ``calibration_images_dir`` or ``calibration_tfrecord``).
        check_images: uint8 RGB images to compare with the Keras model on (default: assets/*.jpg).
        val_tfrecord: with tflite_int8, also compare the validation mAP of both models.
        input_size: (h, w) to export at instead of the size the model was trained at (the export's spec
            records it; the fully convolutional network runs at any size).
    Returns:
        ExportReport. Raises ExportError (ExportCheckError when a float export does not match; nothing is
        written then) or runtime.adapters.ModelLoadError for a model that cannot be loaded.
    """
    from runtime.adapters import KerasRuntime, load_runtime
    from runtime.detector import Detector
    from runtime.model_files import publish_model

    if export_format == "onnx_decoded":
        from deploy.decoded_onnx import export_decoded_onnx_file
        return export_decoded_onnx_file(model_path, output, check_images, log, input_size)
    model_file, cfg, model = load_export_source(model_path, export_format, input_size)
    if input_size is not None and tuple(input_size) != cfg["input_size"]:
        log(f"exporting at {cfg['input_size'][0]}x{cfg['input_size'][1]}: {input_size[0]}x{input_size[1]} rounded up "
            "to a size whose feature maps sit on the image as at the trained size")
    cfg = cfg.replace(test_scales=(1,))   # an export runs one input size: compare it with the Keras model at that size
    reference = Detector(KerasRuntime(model, tuple(cfg["input_size"]), model_file), cfg)
    output = os.path.normpath(output or default_output(model_file, export_format))
    if export_format == "tflite_int8" and calibration is None:
        calibration = load_calibration(tuple(cfg["input_size"]), num_calibration, calibration_images_dir,
                                       calibration_tfrecord, log)
    report = ExportReport(export_format, output, None, 0)
    images = sample_images() if check_images is None else list(check_images)

    def check(staged) -> None:
        report.size_bytes = path_size(staged)
        exported = Detector(load_runtime(staged, tuple(cfg["input_size"])), cfg)
        if images:
            check_outputs(model, reference, exported, images, cfg, export_format, report)
        else:
            report.notes.append(f"no sample images ({SAMPLE_IMAGES}): output check skipped")
        if export_format == "tflite_int8" and val_tfrecord:
            from mAP.evaluation import evaluate
            log(f"validation mAP on {val_tfrecord} (keras and tflite_int8)")
            report.map_reference = evaluate(reference, val_tfrecord).mean_ap  # type: ignore[union-attr]
            report.map_exported = evaluate(exported, val_tfrecord).mean_ap  # type: ignore[union-attr]

    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    publish_model(lambda staged: write_export(model, cfg, export_format, staged, calibration), output, cfg, check)
    return report


def check_outputs(model: keras.Model, reference: Detector, exported: Detector, images: Sequence[np.ndarray],
                  cfg: dict[str, Any], export_format: str, report: ExportReport) -> None:
    """Compare the staged export with the Keras model on ``images`` (into ``report``); raises ExportCheckError
    when a float export differs by more than the tolerances."""
    output = report.path
    batch = reference.preprocess(images)
    # the reference is the Keras model itself (not the frozen graph the keras runtime runs)
    raw_reference = np.asarray(model(batch, training=False), np.float32)
    raw_exported = exported.runtime.predict_raw(batch)   # the model alone, without the flip test
    if raw_exported.shape != raw_reference.shape:
        raise ExportCheckError(f"{output}: exported model gives outputs {raw_exported.shape}, the Keras "
                               f"model {raw_reference.shape}")
    report.check_images = len(images)
    report.raw_max_diff, report.box_max_diff_px, report.correlation = compare_outputs(
        raw_reference, raw_exported, reference.priors, cfg)
    if export_format != "tflite_int8" and (report.raw_max_diff > FLOAT_RAW_TOLERANCE
                                           or report.box_max_diff_px > FLOAT_BOX_TOLERANCE_PX):
        raise ExportCheckError(
            f"{output}: exported model differs from the Keras model on {len(images)} sample images: "
            f"raw outputs max |diff| {report.raw_max_diff:.3g} (tolerance {FLOAT_RAW_TOLERANCE:g}), "
            f"decoded boxes {report.box_max_diff_px:.3g} px (tolerance {FLOAT_BOX_TOLERANCE_PX:g}); "
            "nothing written")


def describe(report: ExportReport) -> list[str]:
    """Human-readable lines about an ExportReport."""
    size = report.size_bytes / 2 ** 20
    lines = [f"exported {report.format} to {report.path} ({size:.2f} MiB), model spec inside"]
    if report.raw_max_diff is not None:
        verdict = ("information only (int8)" if report.format == "tflite_int8" else
                   f"within tolerance {FLOAT_RAW_TOLERANCE:g} / {FLOAT_BOX_TOLERANCE_PX:g} px")
        lines.append(f"check against the Keras model on {report.check_images} sample images: raw outputs max |diff| "
                     f"{report.raw_max_diff:.3g}, decoded boxes max |diff| {report.box_max_diff_px:.3g} px "
                     "(network input pixels)" + ("" if report.correlation is None else
                                                 f", correlation {report.correlation:.5f}") + f": {verdict}")
    if report.map_reference is not None and report.map_exported is not None:
        delta = 100 * (report.map_exported - report.map_reference)
        status = "within" if abs(delta) <= INT8_MAP_TARGET_POINTS else "NOT within"
        lines.append(f"val mAP: keras {100 * report.map_reference:.2f}%, "
                     f"{report.format} {100 * report.map_exported:.2f}% "
                     f"({delta:+.2f} points; {status} the {INT8_MAP_TARGET_POINTS:g}-point target)")
    lines.extend(report.notes)
    return lines
