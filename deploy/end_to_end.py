"""End-to-end exports: preprocessing, network, flip test, box decoding and NMS in one graph, so that a
deployment needs only its runtime (TensorFlow, LiteRT or onnxruntime), not this project's code
(``export.py --end_to_end``; the file layout: ``runtime/end_to_end_models.py``).

Graphs:

* :func:`detection_outputs` (SavedModel and ONNX): uint8 RGB images of any size in, letterboxed inside the
  graph (:func:`letterbox_graph`: ``components.letterbox.letterbox``, what ``runtime.preprocessing.preprocess_images``
  and the tf.data pipeline run), the network (and the flip
  test, ``runtime.postprocessing.merge_mirrored_predictions``), then ``runtime.postprocessing.postprocess``;
  outputs in the TF Object Detection API convention.
* :func:`tflite_detection_function` (TFLite): the network input, the network, the flip test and the standard
  ``TFLite_Detection_PostProcess`` custom op (class-wise NMS), in the order the TFLite Task Library and
  MediaPipe read.

:func:`export_end_to_end_file` writes one, loads it with its runtime (``runtime.end_to_end_models``) and
checks it against the Python path (``runtime.detector.Detector``) before publishing it.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from components.atomic_io import write_text_atomically
from components.box_utils import iou_matrix
from components.letterbox import letterbox
from components.prior_box import mirror_index, priors_from_config
from deploy.export_common import (
    DEFAULT_EXPORT_DIR,
    DEFAULT_NUM_CALIBRATION,
    OUTPUT_SUFFIX,
    ExportCheckError,
    ExportError,
    ExportReport,
    load_calibration,
    load_export_source,
    onnx_function_bytes,
    path_size,
    sample_images,
)
from mAP.evaluation import evaluate
from runtime.adapters import KerasRuntime, frozen_function
from runtime.detector import Detector
from runtime.end_to_end_models import (
    ENCODED_INPUT,
    ENCODED_SIGNATURE,
    IMAGE_INPUT,
    IMAGE_SIGNATURE,
    TFLITE_POSTPROCESS_OP,
    YX_ORDER,
    load_end_to_end,
)
from runtime.model_files import model_spec, publish_model
from runtime.postprocessing import merge_mirrored_predictions, postprocess

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    import keras

    from components.config import Settings
    from runtime.postprocessing import Detections

TFLITE_OUTPUT_NAMES = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
# ops under this name scope (class probabilities, flip-test merge) stay float in an int8 TFLite model: int8
# scores step by 1/256, too coarse to rank the low-scoring detections that mAP counts
TFLITE_FLOAT_SCOPE = "float_postprocess"
END_TO_END_INFIX = "_e2e"          # end-to-end exports: <stem>_e2e.tflite, <stem>_e2e_saved_model, ...
LABELS_SUFFIX = "_labels.txt"
E2E_BOX_TOLERANCE_PX = 0.5         # max |end-to-end - Python path| of a box coordinate, original image pixels
E2E_SCORE_TOLERANCE = 1e-3         # max |end-to-end - Python path| of a detection score
E2E_SCORE_MARGIN = 0.02            # export detections this far below the threshold still pair with the reference
E2E_MAP_TARGET_POINTS = 0.5


# --- graphs -------------------------------------------------------------------------------------------

def letterbox_graph(images: tf.Tensor, input_size: Sequence[int]) -> tuple[tf.Tensor, tf.Tensor]:
    """uint8 RGB images [B, H, W, 3] (one size) -> (network input [B, h, w, 3] float32 in [-1, 1], scale [B, 2]).

    The network input is ``components.letterbox.letterbox`` of the images (TensorFlow backend): the same
    geometry, padding and normalisation as ``runtime.preprocessing.preprocess_images``, whose OpenCV resize
    it matches within 2e-4. ``scale`` is (padded H / H, padded W / W): it turns boxes normalised to the
    network input into boxes normalised to the image.
    """
    shape = tf.shape(images)
    inputs, (padded_h, padded_w) = letterbox(images, input_size, backend="tensorflow")
    scale = tf.stack([tf.cast(padded_h, tf.float32) / tf.cast(shape[1], tf.float32),
                      tf.cast(padded_w, tf.float32) / tf.cast(shape[2], tf.float32)])
    return inputs, tf.tile(scale[None], [shape[0], 1])


def network_batch(inputs: tf.Tensor, mirror: np.ndarray | None) -> tf.Tensor:
    """What the network runs on: the inputs [B, h, w, 3], and with the flip test (``mirror``) their mirror
    images after them."""
    return inputs if mirror is None else tf.concat([inputs, tf.reverse(inputs, axis=[2])], axis=0)


def offsets_and_probabilities(raw: tf.Tensor, batch: int | tf.Tensor, mirror: np.ndarray | None) -> tf.Tensor:
    """[batch, P, 4 + C] offsets and class probabilities from the network output of :func:`network_batch`
    (the flip-test merge of ``runtime.postprocessing`` with ``mirror``)."""
    if mirror is None:
        return tf.concat([raw[..., :4], tf.nn.softmax(raw[..., 4:], axis=-1)], axis=-1)
    return merge_mirrored_predictions(raw[:batch], raw[batch:], mirror)


def detection_outputs(predict: Callable[[tf.Tensor], tf.Tensor], inputs: tf.Tensor, scale: tf.Tensor,
                      settings: Settings, priors: np.ndarray, mirror: np.ndarray | None, score_threshold: float,
                      max_detections: int) -> dict[str, tf.Tensor]:
    """TF OD API outputs (``runtime.end_to_end_models.OUTPUT_KEYS``) of network inputs [B, h, w, 3] whose
    images were letterboxed with ``scale`` [B, 2] (see :func:`letterbox_graph`), through ``postprocess``."""
    merged = offsets_and_probabilities(predict(network_batch(inputs, mirror)), tf.shape(inputs)[0], mirror)
    boxes, scores, classes, valid = postprocess(merged, priors, settings, score_threshold,
                                                max_detections=max_detections, probabilities=True)
    boxes = tf.clip_by_value(tf.gather(boxes, YX_ORDER, axis=-1) * tf.tile(scale, [1, 2])[:, None, :], 0.0, 1.0)
    real = tf.range(tf.shape(scores)[1])[None, :] < valid[:, None]
    return {"detection_boxes": boxes, "detection_scores": scores,
            "detection_classes": tf.where(real, tf.cast(classes, tf.float32), 0.0),
            "num_detections": tf.cast(valid, tf.float32)}


def image_detection_function(predict: Callable[[tf.Tensor], tf.Tensor], settings: Settings, priors: np.ndarray,
                             mirror: np.ndarray | None, score_threshold: float, max_detections: int,
                             batch: int | None = None) -> Any:
    """tf.function: uint8 images [batch, H, W, 3] (``input_tensor``) -> :func:`detection_outputs`."""
    spec = tf.TensorSpec([batch, None, None, 3], tf.uint8, name=IMAGE_INPUT)

    def detect(images):
        inputs, scale = letterbox_graph(images, settings.model.input_size)
        return detection_outputs(predict, inputs, scale, settings, priors, mirror, score_threshold, max_detections)
    return tf.function(detect, input_signature=[spec])


def encoded_detection_function(predict: Callable[[tf.Tensor], tf.Tensor], settings: Settings, priors: np.ndarray,
                               mirror: np.ndarray | None, score_threshold: float, max_detections: int) -> Any:
    """tf.function: JPEG / PNG bytes [B] (``encoded_images``, any sizes) -> :func:`detection_outputs`."""
    spec = tf.TensorSpec([None], tf.string, name=ENCODED_INPUT)
    height, width = settings.model.input_size

    def one_image(encoded):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        inputs, scale = letterbox_graph(image[None], settings.model.input_size)
        return inputs[0], scale[0]

    def detect(encoded):
        inputs, scale = tf.map_fn(one_image, encoded, fn_output_signature=(
            tf.TensorSpec([height, width, 3], tf.float32), tf.TensorSpec([2], tf.float32)))
        return detection_outputs(predict, inputs, scale, settings, priors, mirror, score_threshold, max_detections)
    return tf.function(detect, input_signature=[spec])


def tflite_postprocess_signature(num_classes: int, settings: Settings, score_threshold: float,
                                 max_detections: int) -> str:
    """The ``experimental_implements`` string that makes the TFLite converter replace a tf.function by the
    ``TFLite_Detection_PostProcess`` op: class-wise ("regular") NMS as ``postprocess``, our box coding
    (scales 1 / variance), ``num_classes`` without background."""
    centre, size = (1.0 / value for value in settings.model.variances)
    nms_threshold = settings.detect.nms_threshold
    attributes = [("max_detections", "i", max_detections), ("max_classes_per_detection", "i", 1),
                  ("detections_per_class", "i", max_detections), ("use_regular_nms", "b", "true"),
                  ("nms_score_threshold", "f", score_threshold), ("nms_iou_threshold", "f", nms_threshold),
                  ("y_scale", "f", centre), ("x_scale", "f", centre), ("h_scale", "f", size),
                  ("w_scale", "f", size), ("num_classes", "i", num_classes)]
    return " ".join([f'name: "{TFLITE_POSTPROCESS_OP}"'] + [
        f'attr {{ key: "{key}" value {{ {kind}: {value!r} }} }}' if kind != "b" else
        f'attr {{ key: "{key}" value {{ b: {value} }} }}' for key, kind, value in attributes])


def tflite_detection_function(predict: Callable[[tf.Tensor], tf.Tensor], settings: Settings, priors: np.ndarray,
                              mirror: np.ndarray | None, score_threshold: float, max_detections: int) -> Any:
    """tf.function: network input [1, h, w, 3] float32 -> (boxes, classes, scores, count) of the
    ``TFLite_Detection_PostProcess`` op once converted (the traced body is a placeholder TensorFlow cannot
    run: only the converter's fused op computes the detections)."""
    num_classes = settings.model.num_classes - 1
    signature = tflite_postprocess_signature(num_classes, settings, score_threshold, max_detections)

    @tf.function(experimental_implements=signature)
    def detection_postprocess(box_encodings, class_predictions, anchors):
        del box_encodings, class_predictions, anchors   # the op's inputs; the converter wires them
        return (tf.zeros([1, max_detections, 4]), tf.zeros([1, max_detections]), tf.zeros([1, max_detections]),
                tf.zeros([1]))

    anchors = tf.constant(np.asarray(priors, np.float32)[:, YX_ORDER])   # (cy, cx, h, w) as the op reads them
    spec = tf.TensorSpec([1, *settings.model.input_size, 3], tf.float32, name="normalized_input_image_tensor")

    def detect(inputs):
        raw = predict(network_batch(inputs, mirror))
        with tf.name_scope(TFLITE_FLOAT_SCOPE):   # kept in float in an int8 model (see TFLITE_FLOAT_SCOPE)
            merged = offsets_and_probabilities(raw, 1, mirror)
            encodings = tf.gather(merged[..., :4], YX_ORDER, axis=-1)
        return detection_postprocess(encodings, merged[..., 4:], anchors)
    return tf.function(detect, input_signature=[spec])


def finish_tflite_model(model_bytes: bytes, detections_per_class: int) -> bytes:
    """A converted flatbuffer made ready: the model outputs in the order of the ``TFLite_Detection_PostProcess``
    op's outputs (boxes, classes, scores, count; the converter may list them otherwise), named
    :data:`TFLITE_OUTPUT_NAMES`, and the op's ``detections_per_class`` option set (the converter drops it,
    and the kernel's default, 100, would cut crowded images short of the Python path's per-class limit).
    Raises ExportError when the op is not in the model."""
    from flatbuffers import flexbuffers
    from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    subgraph = model.subgraphs[0]
    codes = [code.customCode for code in model.operatorCodes]
    postprocess_ops = [op for op in subgraph.operators
                       if codes[op.opcodeIndex] in (TFLITE_POSTPROCESS_OP, TFLITE_POSTPROCESS_OP.encode())]
    if len(postprocess_ops) != 1:
        raise ExportError(f"converted model holds {len(postprocess_ops)} {TFLITE_POSTPROCESS_OP} ops, expected 1")
    options = flexbuffers.Loads(bytes(postprocess_ops[0].customOptions))
    options["detections_per_class"] = int(detections_per_class)
    postprocess_ops[0].customOptions = np.frombuffer(bytes(flexbuffers.Dumps(options)), np.uint8)
    outputs = [int(index) for index in postprocess_ops[0].outputs]
    subgraph.outputs = np.array(outputs, np.int32)
    for index, name in zip(outputs, TFLITE_OUTPUT_NAMES):
        subgraph.tensors[index].name = name.encode()
    for signature in model.signatureDefs or []:
        by_tensor = {int(item.tensorIndex): item for item in signature.outputs}
        signature.outputs = [by_tensor[index] for index in outputs if index in by_tensor]
        for item, name in zip(signature.outputs, TFLITE_OUTPUT_NAMES):
            item.name = name.encode()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def tflite_tensor_names(model_bytes: bytes) -> list[str]:
    """Names of the tensors of a TFLite flatbuffer's main subgraph."""
    from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    return [tensor.name.decode() for tensor in model.subgraphs[0].tensors]


def graph_constants(settings: Settings) -> tuple[np.ndarray, np.ndarray | None]:
    """(priors [P, 4] float32 centre form, mirror index [P] or None) of ``settings.model``; the mirror index
    only with ``settings.detect.flip_test`` on a grid where every prior has a mirror image (as ``Detector``)."""
    priors = np.asarray(priors_from_config(settings.model), np.float32)
    mirror = None
    if settings.detect.flip_test:
        try:
            mirror = mirror_index(priors)
        except ValueError:
            pass
    return priors, mirror


# --- writing ------------------------------------------------------------------------------------------

def end_to_end_tflite_bytes(predict: Callable[[tf.Tensor], tf.Tensor], settings: Settings,
                            constants: tuple[np.ndarray, np.ndarray | None, float, int],
                            calibration: Sequence[np.ndarray] | None = None) -> bytes:
    """End-to-end TFLite flatbuffer: float, or with ``calibration`` int8 (the network calibrated on those inputs,
    float32 input; the ops under :data:`TFLITE_FLOAT_SCOPE`, class probabilities and the flip-test merge, left
    in float through the converter's quantisation debugger denylist). ``constants``: (priors, mirror, score
    threshold, max detections)."""
    max_detections = constants[-1]
    function = tflite_detection_function(predict, settings, *constants)
    holder = tf.Module()
    holder.detect = function

    def converter():
        result = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], holder)
        result.allow_custom_ops = True   # TFLite_Detection_PostProcess, fused from its experimental_implements
        return result

    float_model = converter().convert()
    if calibration is None:
        return finish_tflite_model(float_model, detections_per_class=max_detections)
    int8 = converter()
    int8.optimizations = [tf.lite.Optimize.DEFAULT]
    int8.representative_dataset = lambda: ([image] for image in calibration)
    int8.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    int8.inference_input_type = tf.float32
    keep_float = [name for name in tflite_tensor_names(float_model) if name.startswith(TFLITE_FLOAT_SCOPE + "/")]
    with warnings.catch_warnings():   # the debugger builds a tf.lite.Interpreter (deprecated for LiteRT)
        warnings.simplefilter("ignore")
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=int8, debug_dataset=lambda: ([image] for image in calibration[:1]),
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=keep_float))
        quantized = debugger.get_nondebug_quantized_model()
    return finish_tflite_model(quantized, detections_per_class=max_detections)


def write_end_to_end(model: keras.Model, settings: Settings, export_format: str, path: str,
                     calibration: Sequence[np.ndarray] | None = None) -> None:
    """Write the end-to-end graph of ``model`` in ``export_format`` to ``path``: detections down to
    ``settings.export.export_score_threshold``, at most ``settings.detect.max_number_keep``, with the flip test
    when ``settings.detect.flip_test``."""
    predict = frozen_function(model, tuple(settings.model.input_size))
    priors, mirror = graph_constants(settings)
    constants = (priors, mirror, float(settings.export.export_score_threshold),
                 int(settings.detect.max_number_keep))
    if export_format == "saved_model":
        module = tf.Module()
        module.detect_images = image_detection_function(predict, settings, *constants)
        module.detect_encoded = encoded_detection_function(predict, settings, *constants)
        tf.saved_model.save(module, path, signatures={IMAGE_SIGNATURE: module.detect_images,
                                                      ENCODED_SIGNATURE: module.detect_encoded})
        return
    if export_format == "tflite_int8" and calibration is None:
        raise ExportError("tflite_int8 needs calibration images")
    if export_format in ("tflite", "tflite_int8"):
        data = end_to_end_tflite_bytes(predict, settings, constants, calibration if export_format == "tflite_int8"
                                       else None)
    else:
        function = image_detection_function(predict, settings, *constants, batch=1)
        data = onnx_function_bytes(function, function.input_signature)
    with open(path, "wb") as handle:
        handle.write(data)


# --- checking against the Python path ----------------------------------------------------------------

def compare_detections(reference: Detections, exported: Detections, score_threshold: float,
                       score_margin: float = E2E_SCORE_MARGIN) -> dict[str, Any]:
    """How far an export's detections of one image are from the reference ``Detections``.

    ``reference``: detections with scores >= ``score_threshold``; ``exported``: the export's, down to
    ``score_threshold - score_margin`` (so a score a hair under the threshold is a difference of score, not a
    missed face). Each reference detection, highest score first, is paired with the unpaired exported
    detection of the same class that overlaps it most (IoU >= 0.5). Returns a dict: ``reference``, ``missed``
    (reference detections left unpaired), ``extra`` (unpaired exported ones scoring at least
    ``score_threshold + score_margin``), ``box_px`` (largest |difference| of a paired box coordinate, pixels)
    and ``score`` (largest |difference| of a paired score).
    """
    result = {"reference": len(reference), "missed": len(reference), "extra": 0, "box_px": 0.0, "score": 0.0}
    paired = np.zeros(len(exported), bool)
    if len(reference) and len(exported):
        overlaps = iou_matrix(reference.boxes, exported.boxes).numpy()
        overlaps[reference.classes[:, None] != exported.classes[None, :]] = 0.0
        for row in np.argsort(-reference.scores):
            candidates = np.where(paired, -1.0, overlaps[row])
            column = int(np.argmax(candidates))
            if candidates[column] < 0.5:
                continue
            paired[column] = True
            result["missed"] -= 1
            result["box_px"] = max(result["box_px"],
                                   float(np.abs(reference.boxes[row] - exported.boxes[column]).max()))
            result["score"] = max(result["score"], float(abs(reference.scores[row] - exported.scores[column])))
    result["extra"] = int(np.sum(~paired & (np.asarray(exported.scores) >= score_threshold + score_margin)))
    return result


def check_end_to_end(reference: Detector, exported: Any, images: Sequence[np.ndarray],
                     score_threshold: float) -> dict[str, Any]:
    """Totals of :func:`compare_detections` over ``images`` (uint8 RGB): the reference Detector at
    ``score_threshold``, the export down to ``E2E_SCORE_MARGIN`` below it."""
    totals = {"images": len(images), "reference": 0, "missed": 0, "extra": 0, "box_px": 0.0, "score": 0.0}
    for image in images:
        result = compare_detections(reference.detect(image, score_threshold),
                                    exported.detect(image, score_threshold - E2E_SCORE_MARGIN), score_threshold)
        for key in ("reference", "missed", "extra"):
            totals[key] += result[key]
        for key in ("box_px", "score"):
            totals[key] = max(totals[key], result[key])
    return totals


@dataclass
class EndToEndReport(ExportReport):
    """What :func:`export_end_to_end_file` wrote and how the export compares with the Python path (the fields
    of ``deploy.export_common.ExportReport`` and these)."""
    flip_test: bool = False
    detections: dict | None = None   # check_end_to_end totals over the sample images
    val_maps: list = field(default_factory=list)   # (tfrecord, Python path mAP, end-to-end mAP)
    labels_path: str | None = None


def end_to_end_output(model_file: str, export_format: str) -> str:
    """Default output of an end-to-end export: ``runs/export/<stem>_e2e<suffix>`` of the repository."""
    stem = os.path.splitext(os.path.basename(os.path.normpath(model_file)))[0]
    return os.path.join(DEFAULT_EXPORT_DIR, stem + END_TO_END_INFIX + OUTPUT_SUFFIX[export_format])


def end_to_end_spec(settings: Settings, export_format: str) -> dict[str, Any]:
    """The model spec of an end-to-end export: the model's (``runtime.model_files.model_spec``) and what the
    file's graph does (``end_to_end``: inputs, outputs, thresholds, flip test)."""
    spec = model_spec(settings)
    tflite = export_format in ("tflite", "tflite_int8")
    spec["end_to_end"] = {
        "input": ("the network input [1, h, w, 3] float32 (letterbox and normalisation are the app's)" if tflite else
                  "uint8 RGB images [B, H, W, 3] of any size (letterboxed inside)"),
        "outputs": ("TFLite_Detection_PostProcess: boxes [1, N, 4] (ymin, xmin, ymax, xmax) normalised to the input, "
                    "classes [1, N] (0: the first of 'classes'), scores [1, N], count [1]" if tflite else
                    "detection_boxes (ymin, xmin, ymax, xmax) normalised to the image, detection_scores, "
                    "detection_classes (1: the first of 'classes'), num_detections"),
        "score_threshold": float(settings.export.export_score_threshold),
        "nms_threshold": float(settings.detect.nms_threshold),
        "max_detections": int(settings.detect.max_number_keep), "flip_test": bool(settings.detect.flip_test),
    }
    return spec


def labels_path(output: str) -> str:
    """The labels file written beside a TFLite end-to-end export: ``<stem>_labels.txt``."""
    return os.path.splitext(os.path.normpath(output))[0] + LABELS_SUFFIX


def check_staged_export(reference: Detector, staged: str, settings: Settings, images: Sequence[np.ndarray],
                        val_tfrecords: Sequence[str], report: EndToEndReport, log: Callable[[str], Any]) -> None:
    """The checks of :func:`export_end_to_end_file` on the staged export (into ``report``); raises
    ExportCheckError for a float export out of tolerance."""
    report.size_bytes = path_size(staged)
    exported = load_end_to_end(staged, settings)
    report.check_images = len(images)
    report.detections = found = check_end_to_end(reference, exported, images,
                                                             float(settings.detect.score_threshold))
    floating = report.format != "tflite_int8"
    if floating and (found["missed"] or found["extra"] or found["box_px"] > E2E_BOX_TOLERANCE_PX
                     or found["score"] > E2E_SCORE_TOLERANCE):
        raise ExportCheckError(f"{report.path}: end-to-end model differs from the Python path on {len(images)} "
                               f"sample images: {describe_detection_check(found)}; nothing written")
    for tfrecord in val_tfrecords:
        log(f"validation mAP on {tfrecord} (Python path and end-to-end {report.format})")
        report.val_maps.append((tfrecord, evaluate(reference, tfrecord).mean_ap,  # type: ignore[union-attr]
                                evaluate(exported, tfrecord).mean_ap))  # type: ignore[union-attr]
        delta = 100 * (report.val_maps[-1][2] - report.val_maps[-1][1])
        if floating and abs(delta) > E2E_MAP_TARGET_POINTS:
            raise ExportCheckError(f"{report.path}: end-to-end val mAP on {tfrecord} differs from the Python path "
                                   f"by {delta:+.2f} points (tolerance {E2E_MAP_TARGET_POINTS:g}); nothing written")


def export_end_to_end_file(model_path: str, export_format: str, output: str | None = None,
                           calibration_tfrecord: str | None = None, num_calibration: int = DEFAULT_NUM_CALIBRATION,
                           val_tfrecords: Sequence[str] = (), check_images: Sequence[np.ndarray] | None = None,
                           calibration: Sequence[np.ndarray] | None = None, flip_test: bool | None = None,
                           log: Callable[[str], Any] = print, input_size: Sequence[int] | None = None,
                           calibration_images_dir: str | None = None) -> EndToEndReport:
    """Export the ``.keras`` model at ``model_path`` as an end-to-end ``export_format`` model, then check it
    with its runtime against the Python path (``runtime.detector.Detector`` with the same config) before
    publishing it (``runtime.model_files.publish_model``).

    Checks: on ``check_images`` (default assets/*.jpg) every reference detection (score >=
    ``settings.detect.score_threshold``) has its counterpart and no other appears; float formats within
    ``E2E_BOX_TOLERANCE_PX`` pixels and ``E2E_SCORE_TOLERANCE``, else ExportCheckError and nothing is written;
    with ``val_tfrecords``, the val mAP of both on each (``mAP.evaluation.evaluate``; float formats within
    ``E2E_MAP_TARGET_POINTS``, else ExportCheckError). ``flip_test``: None follows the model config. The spec
    goes inside the file (:func:`end_to_end_spec`; a TFLite file also gets the TFLite Model Metadata that
    MediaPipe's ObjectDetector reads); ``<stem>_labels.txt`` is also written beside TFLite files. int8
    calibration: ``calibration``, else ``deploy.export.load_calibration``. Returns EndToEndReport.
    """
    if export_format == "onnx_decoded":
        raise ExportError("--format onnx_decoded: no --end_to_end (the decoded ONNX holds no NMS: it is the app's)")
    model_file, settings, model = load_export_source(model_path, export_format, input_size)
    if flip_test is not None:
        settings = settings.replace(flip_test=bool(flip_test))
    # an export runs one input size: compare it with the Keras model at that size
    settings = settings.replace(test_scales=(1,))
    reference = Detector(KerasRuntime(model, tuple(settings.model.input_size), model_file), settings)
    settings = settings.replace(flip_test=reference.flip_test)    # off where the prior grid has no mirror symmetry
    output = os.path.normpath(output or end_to_end_output(model_file, export_format))
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    if export_format == "tflite_int8" and calibration is None:
        calibration = load_calibration(tuple(settings.model.input_size), num_calibration, calibration_images_dir,
                                       calibration_tfrecord, log)
    report = EndToEndReport(export_format, output, None, flip_test=reference.flip_test)
    images = sample_images() if check_images is None else list(check_images)
    publish_model(lambda staged: write_end_to_end(model, settings, export_format, staged, calibration), output,
                  settings,
                  lambda staged: check_staged_export(reference, staged, settings, images, val_tfrecords, report, log),
                  spec=end_to_end_spec(settings, export_format))
    if export_format in ("tflite", "tflite_int8"):
        report.labels_path = labels_path(output)
        write_text_atomically(report.labels_path, "".join(f"{name}\n" for name in settings.model.labels_list[1:]))
    return report


def describe_detection_check(found: Mapping[str, Any]) -> str:
    """One line about the totals of :func:`check_end_to_end`."""
    return (f"{found['reference']} reference detections, {found['missed']} missed, {found['extra']} extra, "
            f"boxes max |diff| {found['box_px']:.3g} px, scores max |diff| {found['score']:.3g}")


def describe_end_to_end(report: EndToEndReport) -> list[str]:
    """Human-readable lines about an EndToEndReport."""
    size = report.size_bytes / 2 ** 20
    lines = [f"exported end-to-end {report.format} to {report.path} ({size:.2f} MiB, flip test "
             f"{'on' if report.flip_test else 'off'}), model spec inside"
             + (f", labels in {report.labels_path}" if report.labels_path else "")]
    if report.detections is not None:
        verdict = ("information only (int8)" if report.format == "tflite_int8" else
                   f"within tolerance {E2E_BOX_TOLERANCE_PX:g} px / {E2E_SCORE_TOLERANCE:g}")
        lines.append(f"check against the Python path on {report.check_images} sample images (original image "
                     f"pixels): {describe_detection_check(report.detections)}: {verdict}")
    for tfrecord, reference, exported in report.val_maps:
        delta = 100 * (exported - reference)
        status = "within" if abs(delta) <= E2E_MAP_TARGET_POINTS else "NOT within"
        lines.append(f"val mAP on {tfrecord}: Python path {100 * reference:.2f}%, end-to-end {report.format} "
                     f"{100 * exported:.2f}% ({delta:+.2f} points; {status} {E2E_MAP_TARGET_POINTS:g})")
    return lines
