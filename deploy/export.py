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
  exists, else the small set the repository ships in ``assets/calibration/``:
  ``deploy.export_common.load_calibration``); the input and output stay float32 (a quantize op in, a dequantize
  op out), which measured as fast as int8 input/output once the quantisation that int8 I/O needs in Python is
  counted.
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

import os
import tempfile
from typing import TYPE_CHECKING

import numpy as np

from deploy.export_common import (
    DEFAULT_NUM_CALIBRATION,
    EXPORT_FORMATS,
    FLOAT_BOX_TOLERANCE_PX,
    FLOAT_RAW_TOLERANCE,
    ONNX_OPSET,
    SAMPLE_IMAGES,
    ExportCheckError,
    ExportError,
    ExportReport,
    default_output,
    load_calibration,
    load_export_source,
    onnx_function_bytes,
    path_size,
    sample_images,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    import keras
    import tensorflow as tf

    from components.config import ModelSpec
    from runtime.detector import Detector

INT8_MAP_TARGET_POINTS = 1.0


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


def onnx_bytes(model: keras.Model, input_size: Sequence[int], opset: int = ONNX_OPSET) -> bytes:
    """A batch-1 ONNX model of ``model`` (tf2onnx), serialised."""
    function, spec = serving_function(model, input_size, batch=1)
    return onnx_function_bytes(function, [spec], opset)


def write_export(model: keras.Model, spec: ModelSpec, export_format: str, path: str,
                 calibration: Sequence[np.ndarray] | None = None) -> None:
    """Write ``model`` (of the model spec ``spec``) in ``export_format`` to ``path`` (no sidecar, no check: see
    :func:`export_model_file`)."""
    input_size = spec.input_size
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


def compare_outputs(reference: np.ndarray, exported: np.ndarray, priors: np.ndarray,
                    spec: ModelSpec) -> tuple[float, float, float]:
    """(max |diff| of raw outputs, max |diff| of decoded boxes in network-input pixels, correlation) of two raw
    outputs [B, P, 4 + C] of the model of ``spec`` (its input size and box coding)."""
    from components.box_utils import decode_boxes
    height, width = spec.input_size
    scale = np.array([width, height, width, height], np.float32)
    boxes = [decode_boxes(values[..., :4], priors, spec.variances).numpy() * scale
             for values in (reference, exported)]
    correlation = float(np.corrcoef(reference.ravel(), exported.ravel())[0, 1]) if reference.std() > 0 else 1.0
    return float(np.abs(reference - exported).max()), float(np.abs(boxes[0] - boxes[1]).max()), correlation


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
    model_file, settings, model = load_export_source(model_path, export_format, input_size)
    size = settings.model.input_size
    if input_size is not None and tuple(input_size) != size:
        log(f"exporting at {size[0]}x{size[1]}: {input_size[0]}x{input_size[1]} rounded up "
            "to a size whose feature maps sit on the image as at the trained size")
    # an export runs one input size: compare it with the Keras model at that size
    settings = settings.replace(test_scales=(1,))
    reference = Detector(KerasRuntime(model, size, model_file), settings)
    output = os.path.normpath(output or default_output(model_file, export_format))
    if export_format == "tflite_int8" and calibration is None:
        calibration = load_calibration(size, num_calibration, calibration_images_dir, calibration_tfrecord, log)
    report = ExportReport(export_format, output, None, 0)
    images = sample_images() if check_images is None else list(check_images)

    def check(staged) -> None:
        report.size_bytes = path_size(staged)
        exported = Detector(load_runtime(staged, size), settings)
        if images:
            check_outputs(model, reference, exported, images, settings.model, export_format, report)
        else:
            report.notes.append(f"no sample images ({SAMPLE_IMAGES}): output check skipped")
        if export_format == "tflite_int8" and val_tfrecord:
            from mAP.evaluation import evaluate
            log(f"validation mAP on {val_tfrecord} (keras and tflite_int8)")
            report.map_reference = evaluate(reference, val_tfrecord).mean_ap  # type: ignore[union-attr]
            report.map_exported = evaluate(exported, val_tfrecord).mean_ap  # type: ignore[union-attr]

    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    publish_model(lambda staged: write_export(model, settings.model, export_format, staged, calibration), output,
                  settings, check)
    return report


def check_outputs(model: keras.Model, reference: Detector, exported: Detector, images: Sequence[np.ndarray],
                  spec: ModelSpec, export_format: str, report: ExportReport) -> None:
    """Compare the staged export with the Keras model (of the model spec ``spec``) on ``images`` (into
    ``report``); raises ExportCheckError when a float export differs by more than the tolerances."""
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
        raw_reference, raw_exported, reference.priors, spec)
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
