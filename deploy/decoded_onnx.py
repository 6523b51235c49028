"""Decoded ONNX for OpenCV DNN and the browser (``export.py --format onnx_decoded``, default output
``<stem>_decoded.onnx``): the network with box decoding and class probabilities inside, and nothing that
OpenCV 4.x or 5.x DNN cannot import (no NMS, no flip test, fixed input shape); NMS is the app's
(``cv2.dnn.NMSBoxesBatched``, a few lines of JavaScript). The file layout: ``runtime/end_to_end_models.py``
(``DecodedOnnx``); the ONNX ``metadata_props`` hold what an app needs to feed and read it
(:func:`decoded_metadata`) and the model spec (``runtime.model_files``, key ``facemask_spec``, with a
``decoded`` entry: :func:`decoded_spec`).

Before it is published the staged file is run by OpenCV DNN and by onnxruntime on the sample images: the boxes
and probabilities against the Keras model's (``components.box_utils.decode_boxes`` and softmax of its raw
output), and the detections after NMS (``cv2.dnn.NMSBoxesBatched``) against ``runtime.detector.Detector``
(one pass, no flip test), with the tolerances of the other exports.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from components.box_utils import decode_boxes
from components.prior_box import priors_from_config
from deploy.end_to_end import (
    E2E_BOX_TOLERANCE_PX,
    E2E_SCORE_TOLERANCE,
    check_end_to_end,
    describe_detection_check,
)
from deploy.export_common import (
    FLOAT_BOX_TOLERANCE_PX,
    FLOAT_RAW_TOLERANCE,
    ExportCheckError,
    ExportReport,
    default_output,
    load_export_source,
    onnx_function_bytes,
    path_size,
    sample_images,
)
from runtime.adapters import KerasRuntime, frozen_function, onnx_session
from runtime.detector import Detector
from runtime.end_to_end_models import DECODED_INPUT, DECODED_OUTPUTS, DecodedOnnx
from runtime.model_files import model_spec, publish_model
from runtime.preprocessing import PAD_VALUE

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    import keras

    from components.config import ModelSpec, Settings

# 13: Softmax on one axis (opset >= 13 semantics); OpenCV 4.8 to 5.1 and onnxruntime import it. OpenCV 4.8
# takes a Softmax over the last axis of a 3-D tensor as over axis 1, so the graph applies it to [P, C].
DECODED_OPSET = 13
FORMAT = "onnx_decoded"


def decoded_function(predict: Callable[[tf.Tensor], tf.Tensor], spec: ModelSpec, priors: np.ndarray) -> Any:
    """tf.function: network input [1, 3, h, w] float32 NCHW in [-1, 1] (``input``) -> {``boxes`` [1, P, 4]
    corner form normalised to the input (``components.box_utils.decode_boxes``), ``scores`` [1, P, C-1]
    softmax probabilities without the background column}. ``predict``: [1, h, w, 3] -> raw [1, P, 4 + C];
    ``spec``: the model spec (input size, classes, box coding)."""
    height, width = (int(side) for side in spec.input_size)
    num_classes, variances = spec.num_classes, spec.variances
    signature = tf.TensorSpec([1, 3, height, width], tf.float32, name=DECODED_INPUT)

    def detect(inputs):
        raw = predict(tf.transpose(inputs, [0, 2, 3, 1]))
        boxes = decode_boxes(raw[..., :4], priors, variances)
        probabilities = tf.nn.softmax(tf.reshape(raw[..., 4:], [-1, num_classes]), axis=-1)   # 2-D: see DECODED_OPSET
        scores = tf.reshape(probabilities[:, 1:], [1, -1, num_classes - 1])
        return {name: tf.identity(value, name=name) for name, value in zip(DECODED_OUTPUTS, (boxes, scores))}
    return tf.function(detect, input_signature=[signature])


def decoded_metadata(settings: Settings) -> dict[str, str]:
    """The ONNX ``metadata_props`` (str -> str) of a decoded export: what an app needs to feed it and read it
    (``runtime.model_files.publish_model`` adds the model spec)."""
    height, width = (int(side) for side in settings.model.input_size)
    return {
        "labels": json.dumps(list(settings.model.labels_list[1:])),
        "input_size": json.dumps([height, width]),
        "input": (f"{DECODED_INPUT} [1, 3, {height}, {width}] float32 NCHW, RGB, (x - 127.5) / 127.5; the image "
                  f"padded at the bottom / right with {PAD_VALUE} to the input aspect ratio, then resized "
                  "(bilinear)"),
        "outputs": ("boxes [1, P, 4] (x1, y1, x2, y2) normalised to the input; scores [1, P, K] probabilities of "
                    "the classes in 'labels' (background left out); NMS is the app's"),
        "nms_threshold": json.dumps(float(settings.detect.nms_threshold)),
        "score_threshold": json.dumps(float(settings.detect.score_threshold)),
    }


def decoded_spec(settings: Settings) -> dict[str, Any]:
    """The model spec of a decoded export (``runtime.model_files.model_spec``) with what the graph does."""
    spec = model_spec(settings)
    spec["decoded"] = {key: value for key, value in decoded_metadata(settings).items()
                       if key in ("input", "outputs")}
    return spec


def decoded_onnx_bytes(model: keras.Model, settings: Settings, opset: int = DECODED_OPSET) -> bytes:
    """The decoded ONNX model (:func:`decoded_function`, tf2onnx) of a Keras ``model`` with its metadata,
    serialised."""
    import onnx
    spec = settings.model
    priors = np.asarray(priors_from_config(spec), np.float32)
    function = decoded_function(frozen_function(model, spec.input_size, batch=1), spec, priors)
    proto = onnx.load_from_string(onnx_function_bytes(function, function.input_signature, opset))
    proto.doc_string = "Face mask detector: decoded boxes and class probabilities per prior; NMS is the app's."
    del proto.metadata_props[:]
    for key, value in decoded_metadata(settings).items():
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


def read_metadata(path: str) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX file at ``path`` as a dict."""
    import onnx
    return {prop.key: prop.value for prop in onnx.load(path, load_external_data=False).metadata_props}


def compare_decoded(model: keras.Model, path: str, images: Sequence[np.ndarray],
                    settings: Settings) -> tuple[float, float]:
    """(max |diff| of the probabilities, of the boxes in network-input pixels) of the decoded file at ``path``
    run by OpenCV DNN and by onnxruntime, against the Keras model on ``images`` (uint8 RGB)."""
    from runtime.preprocessing import preprocess_images
    spec = settings.model
    height, width = spec.input_size
    scale = np.array([width, height, width, height], np.float32)
    priors = np.asarray(priors_from_config(spec), np.float32)
    opencv, session = DecodedOnnx(path, settings), onnx_session(path)
    score_diff = box_diff = 0.0
    for image in images:
        network_input = preprocess_images([image], spec.input_size)
        raw = np.asarray(model(network_input, training=False), np.float32)
        boxes = decode_boxes(raw[..., :4], priors, spec.variances).numpy()[0]
        scores = tf.nn.softmax(raw[..., 4:], axis=-1).numpy()[0, :, 1:]
        nchw = np.ascontiguousarray(network_input.transpose(0, 3, 1, 2))
        runs = [opencv.outputs(network_input[0]),
                [value[0] for value in session.run(list(DECODED_OUTPUTS), {DECODED_INPUT: nchw})]]
        for got_boxes, got_scores in runs:
            score_diff = max(score_diff, float(np.abs(got_scores - scores).max()))
            box_diff = max(box_diff, float(np.abs((got_boxes - boxes) * scale).max()))
    return score_diff, box_diff


def check_decoded(model: keras.Model, reference: Detector, staged: str, settings: Settings,
                  images: Sequence[np.ndarray], report: ExportReport) -> None:
    """The checks of :func:`export_decoded_onnx_file` on the staged file (into ``report``); raises
    ExportCheckError when it is out of tolerance."""
    report.size_bytes = path_size(staged)
    report.check_images = len(images)
    if not images:
        report.notes.append("no sample images: output check skipped")
        return
    report.raw_max_diff, report.box_max_diff_px = compare_decoded(model, staged, images, settings)
    found = check_end_to_end(reference, DecodedOnnx(staged, settings), images,
                             float(settings.detect.score_threshold))
    report.notes.append(f"detections (OpenCV DNN + NMSBoxesBatched) against the Python path, one pass, original "
                        f"image pixels: {describe_detection_check(found)}")
    if (report.raw_max_diff > FLOAT_RAW_TOLERANCE or report.box_max_diff_px > FLOAT_BOX_TOLERANCE_PX
            or found["missed"] or found["extra"] or found["box_px"] > E2E_BOX_TOLERANCE_PX
            or found["score"] > E2E_SCORE_TOLERANCE):
        raise ExportCheckError(
            f"{report.path}: decoded ONNX differs from the Keras model on {len(images)} sample images: "
            f"probabilities max |diff| {report.raw_max_diff:.3g} (tolerance {FLOAT_RAW_TOLERANCE:g}), boxes "
            f"{report.box_max_diff_px:.3g} px (tolerance {FLOAT_BOX_TOLERANCE_PX:g}); "
            f"{describe_detection_check(found)}; nothing written")


def export_decoded_onnx_file(model_path: str, output: str | None = None,
                             check_images: Sequence[np.ndarray] | None = None, log: Callable[[str], Any] = print,
                             input_size: Sequence[int] | None = None) -> ExportReport:
    """Export the ``.keras`` model at ``model_path`` (or the newest in a folder) as a decoded ONNX file
    (default ``<stem>_decoded.onnx``) with its sidecar, checked (:func:`check_decoded`) before it is
    published. ``input_size``: (h, w) to export at (rounded up as ``deploy.export_common.load_export_source``).
    Returns ``deploy.export_common.ExportReport`` (``raw_max_diff``: of the probabilities)."""
    model_file, settings, model = load_export_source(model_path, FORMAT, input_size)
    size = settings.model.input_size
    if input_size is not None and tuple(input_size) != size:
        log(f"exporting at {size[0]}x{size[1]} (rounded up from {input_size[0]}x{input_size[1]})")
    settings = settings.replace(flip_test=False, test_scales=(1,),   # the file holds one pass: compare with one pass
                                box_voting=0.0, soft_nms_sigma=0.0)  # the app's NMS is plain NMS
    reference = Detector(KerasRuntime(model, size, model_file), settings)
    output = output or default_output(model_file, FORMAT)
    report = ExportReport(FORMAT, output, None, 0)
    images = sample_images() if check_images is None else list(check_images)

    def write(staged) -> None:
        with open(staged, "wb") as handle:
            handle.write(decoded_onnx_bytes(model, settings))

    publish_model(write, output, settings,
                  lambda staged: check_decoded(model, reference, staged, settings, images, report),
                  spec=decoded_spec(settings))
    return report
