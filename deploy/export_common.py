"""What every export shares (``deploy/export.py``, ``deploy/end_to_end.py``, ``deploy/decoded_onnx.py``):
the formats and their default outputs, the errors and the report of an export, the ``.keras`` model it starts
from, the sample images it is checked on, the int8 calibration inputs and the tf.function -> ONNX conversion.
"""
from __future__ import annotations

import glob
import logging
import os
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

    from components.config import Settings

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


ONNX_OPSET = 17
CALIBRATION_SHUFFLE_BUFFER = 1000


class ExportError(ProjectError):
    """An export that cannot be made; the message names the path and the problem."""


class ExportCheckError(ExportError):
    """An exported model that does not reproduce the Keras model; nothing was written (exit status 1)."""

    exit_code = 1


@dataclass
class ExportReport:
    """What an export wrote and how it compares with the Keras model (``deploy.export.export_model_file``,
    ``deploy.decoded_onnx``); ``deploy.end_to_end.EndToEndReport`` adds what an end-to-end export checks."""
    format: str
    path: str
    config_path: str | None   # older exports' sidecar; None now (the spec is inside the file)
    size_bytes: int = 0
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


def load_export_source(model_path: str, export_format: str,
                       input_size: Sequence[int] | None = None) -> tuple[str, Settings, keras.Model]:
    """(model file, its settings (``runtime.model_files.load_model_config``), the Keras model) of the ``.keras``
    model at ``model_path`` (or the newest in a folder) to export as ``export_format``, the spec's input size
    replaced by ``input_size`` (h, w) when given, rounded up to the nearest size whose maps sit on the image
    as at the trained size (``components.prior_box.aligned_input_size``); raises ExportError for an unknown
    format or another kind of model."""
    from components.prior_box import aligned_input_size
    from runtime.adapters import is_saved_model_dir, load_keras_model
    from runtime.model_files import load_model_config, resolve_model_path
    if export_format not in EXPORT_FORMATS:
        raise ExportError(f"unknown format {export_format!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    model_file = resolve_model_path(model_path)
    if is_saved_model_dir(model_file) or not model_file.endswith(".keras"):
        raise ExportError(f"{model_file}: export starts from a .keras model")
    settings = load_model_config(model_file)
    if input_size is not None:
        spec = settings.model
        settings = settings.replace(input_size=aligned_input_size(input_size, spec.input_size, spec.steps))
    return model_file, settings, load_keras_model(model_file)
