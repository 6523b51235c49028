"""Export a trained .keras model for deployment: SavedModel, float TFLite, full-integer TFLite or ONNX.

    python export.py --model_path checkpoints/train/last.keras --format {saved_model,tflite,tflite_int8,onnx}
                     [--output PATH] [--calibration_tfrecord dataset/train_mask.tfrecord] [--num_calibration 300]
                     [--val_tfrecord dataset/val_mask.tfrecord] [--end_to_end [--no_flip_test]]

With ``--end_to_end`` the export is the whole detector, box decoding and NMS inside (``components/end_to_end.py``;
default output ``<stem>_e2e<suffix>``), checked with its runtime against the Python path
(``components.detector.Detector``) on the sample images and, with ``--val_tfrecord`` (comma-separated), in val
mAP: see :func:`export_end_to_end_file`. Without it, the raw network [B, P, 4 + C], as follows.

Every export takes the model's fixed input size (240x320 by default) and is written atomically (staged in a
temporary folder beside the output, checked, then renamed into place) together with the model config sidecar
(``<output stem>.json``, and for a SavedModel folder also ``model_config.json`` inside it), so that
``inference.py --model_path <output>`` and ``mAP/detect.py`` load it with no other setting.

* ``saved_model``: TensorFlow SavedModel folder (default ``<stem>_saved_model``), any batch size, weights frozen
  into the graph (faster to run; fine-tune from the .keras file).
* ``tflite``: float32 TFLite model (default ``<stem>.tflite``), batch 1.
* ``tflite_int8``: full-integer TFLite model (default ``<stem>_int8.tflite``), batch 1: int8 weights and
  activations calibrated on ``--num_calibration`` training images preprocessed exactly as at inference; the
  input and output stay float32 (a quantize op in, a dequantize op out), which measured as fast as int8
  input/output once the quantisation that int8 I/O needs in Python is counted.
* ``onnx``: ONNX model converted by tf2onnx (default ``<stem>.onnx``), batch 1, for onnxruntime.

Before it is published, the export is loaded with its runtime and run on the sample images
(``assets/*.jpg``); the largest absolute difference to the Keras model is printed for the raw outputs and for
the decoded boxes. Float formats must agree within 1e-3 on the raw outputs and 0.1 pixel (of the network
input) on the decoded boxes, else nothing is written and the exit status is 1. For int8 the differences are
printed for information, with the correlation of the raw outputs, and with ``--val_tfrecord`` the validation
mAP of both models (target: int8 within 1 point of float).
"""
import argparse
import glob
import logging
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402
from components.drawing import ANNOTATED_PREFIX  # noqa: E402

EXPORT_FORMATS = ("saved_model", "tflite", "tflite_int8", "onnx")
OUTPUT_SUFFIX = {"saved_model": "_saved_model", "tflite": ".tflite", "tflite_int8": "_int8.tflite", "onnx": ".onnx"}
DEFAULT_CALIBRATION_TFRECORD = os.path.join(REPO_ROOT, "dataset", "train_mask.tfrecord")
DEFAULT_NUM_CALIBRATION = 300
SAMPLE_IMAGES = os.path.join(REPO_ROOT, "assets", "*.jpg")
FLOAT_RAW_TOLERANCE = 1e-3       # max |exported - keras| of the raw outputs (offsets and logits)
FLOAT_BOX_TOLERANCE_PX = 0.1     # max |exported - keras| of the decoded boxes, pixels of the network input
INT8_MAP_TARGET_POINTS = 1.0
ONNX_OPSET = 17
CALIBRATION_SHUFFLE_BUFFER = 1000
END_TO_END_INFIX = "_e2e"          # end-to-end exports: <stem>_e2e.tflite, <stem>_e2e_saved_model, ...
LABELS_SUFFIX = "_labels.txt"
E2E_BOX_TOLERANCE_PX = 0.5         # max |end-to-end - Python path| of a box coordinate, original image pixels
E2E_SCORE_TOLERANCE = 1e-3         # max |end-to-end - Python path| of a detection score
E2E_SCORE_MARGIN = 0.02            # export detections this far below the threshold still pair with the reference
E2E_MAP_TARGET_POINTS = 0.5


class ExportError(ValueError):
    """An export that cannot be made; the message names the path and the problem."""


class ExportCheckError(ExportError):
    """An exported model that does not reproduce the Keras model; nothing was written."""


@dataclass
class ExportReport:
    """What :func:`export_model_file` wrote and how the export compares with the Keras model."""
    format: str
    path: str
    config_path: str
    size_bytes: int
    check_images: int = 0
    raw_max_diff: float | None = None
    box_max_diff_px: float | None = None
    correlation: float | None = None
    map_reference: float | None = None
    map_exported: float | None = None
    notes: list = field(default_factory=list)
    end_to_end: bool = False
    flip_test: bool = False
    detections: dict | None = None   # end to end: compare_detections totals over the sample images
    val_maps: list = field(default_factory=list)   # end to end: (tfrecord, reference mAP, exported mAP)
    labels_path: str | None = None


def default_output(model_file, export_format):
    """Default output path: beside the model, ``<stem><suffix>`` (e.g. ``last_int8.tflite``)."""
    return os.path.splitext(os.path.normpath(model_file))[0] + OUTPUT_SUFFIX[export_format]


def path_size(path):
    """Bytes of a file, or of all files under a folder."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)
    return os.path.getsize(path)


def serving_function(model, input_size, batch=None):
    """(tf.function images -> raw predictions with a fixed input signature [batch, h, w, 3], its TensorSpec)."""
    import tensorflow as tf
    spec = tf.TensorSpec([batch, *input_size, 3], tf.float32, name="images")
    return tf.function(lambda images: model(images, training=False), input_signature=[spec]), spec


def write_saved_model(model, input_size, path, batch=None, frozen=True):
    """Write a SavedModel folder at ``path`` whose ``serve`` function (also the ``serving_default``
    signature) takes [batch, h, w, 3] float32 and returns the raw predictions.

    ``frozen``: the weights are constants of the graph (``components.runtimes.frozen_function``), which
    TensorFlow runs about a third faster; otherwise Keras's own export, with variables.
    """
    import tensorflow as tf

    from components.runtimes import frozen_function
    spec = tf.TensorSpec([batch, *input_size, 3], tf.float32, name="images")
    if not frozen:
        model.export(path, format="tf_saved_model", input_signature=[spec], verbose=False)
        return
    module = tf.Module()
    module.inference = frozen_function(model, input_size, batch)
    module.serve = tf.function(lambda images: module.inference(images), input_signature=[spec])
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})


def calibration_images(tfrecord_path, input_size, count, seed=0):
    """``count`` training images [1, h, w, 3] float32, drawn (shuffled with ``seed``) from a TFRecord and
    preprocessed exactly as at inference (``components.detector.preprocess_images``)."""
    import tensorflow as tf

    from components.detector import preprocess_images
    from dataset.tf_dataset_preprocess import parse_example
    if not os.path.isfile(tfrecord_path):
        raise ExportError(f"{tfrecord_path}: calibration TFRecord not found")
    dataset = tf.data.TFRecordDataset(tfrecord_path).shuffle(CALIBRATION_SHUFFLE_BUFFER, seed=seed).take(count)
    dataset = dataset.map(lambda record: parse_example(record)[0], num_parallel_calls=tf.data.AUTOTUNE)
    images = [preprocess_images([image], input_size) for image in dataset.as_numpy_iterator()]
    if not images:
        raise ExportError(f"{tfrecord_path}: no records to calibrate with")
    return images


def tflite_bytes(model, input_size, calibration=None, int8_io=False):
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


def onnx_bytes(model, input_size, opset=ONNX_OPSET):
    """A batch-1 ONNX model of ``model`` (tf2onnx), serialised."""
    try:
        import tf2onnx
    except ImportError:
        raise ExportError("onnx export needs tf2onnx (pip install tf2onnx onnx)") from None
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    function, spec = serving_function(model, input_size, batch=1)
    model_proto, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=opset)
    return model_proto.SerializeToString()


def write_export(model, cfg, export_format, path, calibration=None):
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


def sample_image_paths(pattern=SAMPLE_IMAGES):
    """Paths of the sample images, without the annotated copies (``out_*``) that inference.py writes beside them."""
    return [path for path in sorted(glob.glob(pattern)) if not os.path.basename(path).startswith(ANNOTATED_PREFIX)]


def sample_images(pattern=SAMPLE_IMAGES):
    """The sample images (uint8 RGB) used to check an export."""
    import cv2
    images = []
    for path in sample_image_paths(pattern):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is not None:
            images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return images


def compare_outputs(reference, exported, priors, cfg):
    """(max |diff| of raw outputs, max |diff| of decoded boxes in network-input pixels, correlation)."""
    from components.box_utils import decode_boxes
    height, width = cfg["input_size"]
    scale = np.array([width, height, width, height], np.float32)
    boxes = [decode_boxes(values[..., :4], priors, cfg["variances"]).numpy() * scale
             for values in (reference, exported)]
    correlation = float(np.corrcoef(reference.ravel(), exported.ravel())[0, 1]) if reference.std() > 0 else 1.0
    return float(np.abs(reference - exported).max()), float(np.abs(boxes[0] - boxes[1]).max()), correlation


def _publish(staged, output):
    """Move the staged model (file or folder) and its sidecar to ``output``, replacing what is there."""
    from components.detector import model_config_path
    os.replace(model_config_path(staged), model_config_path(output))
    if os.path.isdir(staged):
        if os.path.lexists(output):
            old = staged + ".old"
            os.replace(output, old)
            os.replace(staged, output)
            shutil.rmtree(old, ignore_errors=True) if os.path.isdir(old) else os.remove(old)
        else:
            os.replace(staged, output)
    else:
        if os.path.isdir(output):
            raise ExportError(f"{output}: is a folder; choose a file name for --output")
        os.replace(staged, output)


def export_model_file(model_path, export_format, output=None, calibration_tfrecord=DEFAULT_CALIBRATION_TFRECORD,
                      num_calibration=DEFAULT_NUM_CALIBRATION, val_tfrecord=None, check_images=None,
                      calibration=None, log=print):
    """Export the ``.keras`` model at ``model_path`` (or the newest in a folder) as ``export_format``.

    Args:
        output: file (or folder for saved_model); default :func:`default_output`.
        calibration: ready calibration inputs for tflite_int8 (else read from ``calibration_tfrecord``).
        check_images: uint8 RGB images to compare with the Keras model on (default: assets/*.jpg).
        val_tfrecord: with tflite_int8, also compare the validation mAP of both models.
    Returns:
        ExportReport. Raises ExportError (ExportCheckError when a float export does not match; nothing is
        written then) or components.runtimes.ModelLoadError for a model that cannot be loaded.
    """
    from components.detector import (Detector, evaluate_tfrecord, load_model_config, model_config_path,
                                     resolve_model_path, save_model_config)
    from components.runtimes import KerasRuntime, is_saved_model_dir, load_keras_model, load_runtime

    if export_format not in EXPORT_FORMATS:
        raise ExportError(f"unknown format {export_format!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    model_file = resolve_model_path(model_path)
    if is_saved_model_dir(model_file) or not model_file.endswith(".keras"):
        raise ExportError(f"{model_file}: export starts from a .keras model")
    cfg = load_model_config(model_file)
    model = load_keras_model(model_file)
    reference = Detector(KerasRuntime(model, tuple(cfg["input_size"]), model_file), cfg)
    output = os.path.normpath(output or default_output(model_file, export_format))
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)

    if export_format == "tflite_int8" and calibration is None:
        log(f"calibrating on {num_calibration} images of {calibration_tfrecord}")
        calibration = calibration_images(calibration_tfrecord, tuple(cfg["input_size"]), num_calibration)

    staging = tempfile.mkdtemp(dir=folder, prefix=".export-")
    try:
        staged = os.path.join(staging, os.path.basename(output))
        write_export(model, cfg, export_format, staged, calibration)
        save_model_config(staged, cfg)
        report = ExportReport(export_format, output, model_config_path(output), path_size(staged))

        images = sample_images() if check_images is None else list(check_images)
        exported = Detector(load_runtime(staged, tuple(cfg["input_size"])), cfg)
        if images:
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
        else:
            report.notes.append(f"no sample images ({SAMPLE_IMAGES}): output check skipped")
        if export_format == "tflite_int8" and val_tfrecord:
            log(f"validation mAP on {val_tfrecord} (keras and tflite_int8)")
            report.map_reference = evaluate_tfrecord(reference, val_tfrecord).mean_ap
            report.map_exported = evaluate_tfrecord(exported, val_tfrecord).mean_ap
        del exported
        _publish(staged, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def end_to_end_output(model_file, export_format):
    """Default output of an end-to-end export: beside the model, ``<stem>_e2e<suffix>``."""
    return os.path.splitext(os.path.normpath(model_file))[0] + END_TO_END_INFIX + OUTPUT_SUFFIX[export_format]


def labels_path(output):
    """The labels file written beside a TFLite end-to-end export: ``<stem>_labels.txt``."""
    return os.path.splitext(os.path.normpath(output))[0] + LABELS_SUFFIX


def _end_to_end_tflite_bytes(predict, cfg, constants, calibration=None):
    """End-to-end TFLite flatbuffer: float, or with ``calibration`` int8 (the network calibrated on those inputs,
    float32 input; the ops under ``components.end_to_end.TFLITE_FLOAT_SCOPE``, class probabilities and the
    flip-test merge, left in float through the converter's quantisation debugger denylist)."""
    import tensorflow as tf

    from components.end_to_end import (TFLITE_FLOAT_SCOPE, finish_tflite_model, tflite_detection_function,
                                       tflite_tensor_names)
    max_detections = constants[-1]   # (priors, mirror, score threshold, max detections)
    function = tflite_detection_function(predict, cfg, *constants)
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


def write_end_to_end(model, cfg, export_format, path, calibration=None):
    """Write the end-to-end graph (``components/end_to_end.py``) of ``model`` in ``export_format`` to ``path``:
    detections down to ``cfg['export_score_threshold']``, at most ``cfg['max_number_keep']``, with the flip
    test when ``cfg['flip_test']``."""
    import tensorflow as tf

    from components.end_to_end import (ENCODED_SIGNATURE, IMAGE_SIGNATURE, encoded_detection_function,
                                       graph_constants, image_detection_function)
    from components.runtimes import frozen_function
    predict = frozen_function(model, tuple(cfg["input_size"]))
    priors, mirror = graph_constants(cfg)
    constants = (priors, mirror, float(cfg["export_score_threshold"]), int(cfg["max_number_keep"]))
    if export_format == "saved_model":
        module = tf.Module()
        module.detect_images = image_detection_function(predict, cfg, *constants)
        module.detect_encoded = encoded_detection_function(predict, cfg, *constants)
        tf.saved_model.save(module, path, signatures={IMAGE_SIGNATURE: module.detect_images,
                                                      ENCODED_SIGNATURE: module.detect_encoded})
        return
    if export_format in ("tflite", "tflite_int8"):
        if export_format == "tflite_int8" and calibration is None:
            raise ExportError("tflite_int8 needs calibration images")
        data = _end_to_end_tflite_bytes(predict, cfg, constants, calibration if export_format == "tflite_int8"
                                        else None)
    else:
        try:
            import tf2onnx
        except ImportError:
            raise ExportError("onnx export needs tf2onnx (pip install tf2onnx onnx)") from None
        logging.getLogger("tf2onnx").setLevel(logging.ERROR)
        function = image_detection_function(predict, cfg, *constants, batch=1)
        model_proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature,
                                                       opset=ONNX_OPSET)
        data = model_proto.SerializeToString()
    with open(path, "wb") as handle:
        handle.write(data)


def check_end_to_end(reference, exported, images, score_threshold):
    """Totals of ``components.end_to_end.compare_detections`` over ``images`` (uint8 RGB): the reference
    Detector at ``score_threshold``, the export down to ``E2E_SCORE_MARGIN`` below it."""
    from components.end_to_end import compare_detections
    totals = {"images": len(images), "reference": 0, "missed": 0, "extra": 0, "box_px": 0.0, "score": 0.0}
    for image in images:
        result = compare_detections(reference.detect(image, score_threshold),
                                    exported.detect(image, score_threshold - E2E_SCORE_MARGIN), score_threshold)
        for key in ("reference", "missed", "extra"):
            totals[key] += result[key]
        for key in ("box_px", "score"):
            totals[key] = max(totals[key], result[key])
    return totals


def export_end_to_end_file(model_path, export_format, output=None, calibration_tfrecord=DEFAULT_CALIBRATION_TFRECORD,
                           num_calibration=DEFAULT_NUM_CALIBRATION, val_tfrecords=(), check_images=None,
                           calibration=None, flip_test=None, log=print):
    """Export the ``.keras`` model at ``model_path`` as an end-to-end ``export_format`` model (decoding and NMS
    inside; see ``components/end_to_end.py``), then check it with its runtime against the Python path
    (``components.detector.Detector`` with the same config) before publishing it.

    Checks: on ``check_images`` (default assets/*.jpg) every reference detection (score >=
    ``cfg['score_threshold']``) has its counterpart and no other appears; float formats within
    ``E2E_BOX_TOLERANCE_PX`` pixels and ``E2E_SCORE_TOLERANCE``, else ExportCheckError and nothing is written;
    with ``val_tfrecords``, the val mAP of both on each (float formats: within ``E2E_MAP_TARGET_POINTS``, else
    ExportCheckError). ``flip_test``: None follows the model config. Writes ``<stem>_labels.txt`` beside
    TFLite files. Returns ExportReport.
    """
    from components.atomic_io import write_text_atomically
    from components.detector import (Detector, evaluate_tfrecord, load_model_config, model_config_path,
                                     resolve_model_path, save_model_config)
    from components.end_to_end import load_end_to_end
    from components.runtimes import KerasRuntime, is_saved_model_dir, load_keras_model

    if export_format not in EXPORT_FORMATS:
        raise ExportError(f"unknown format {export_format!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    model_file = resolve_model_path(model_path)
    if is_saved_model_dir(model_file) or not model_file.endswith(".keras"):
        raise ExportError(f"{model_file}: export starts from a .keras model")
    cfg = load_model_config(model_file)
    if flip_test is not None:
        cfg["flip_test"] = bool(flip_test)
    model = load_keras_model(model_file)
    reference = Detector(KerasRuntime(model, tuple(cfg["input_size"]), model_file), cfg)
    cfg["flip_test"] = reference.flip_test    # off where the prior grid has no mirror symmetry
    output = os.path.normpath(output or end_to_end_output(model_file, export_format))
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    if export_format == "tflite_int8" and calibration is None:
        log(f"calibrating on {num_calibration} images of {calibration_tfrecord}")
        calibration = calibration_images(calibration_tfrecord, tuple(cfg["input_size"]), num_calibration)

    staging = tempfile.mkdtemp(dir=folder, prefix=".export-")
    try:
        staged = os.path.join(staging, os.path.basename(output))
        write_end_to_end(model, cfg, export_format, staged, calibration)
        save_model_config(staged, cfg)
        report = ExportReport(export_format, output, model_config_path(output), path_size(staged),
                              end_to_end=True, flip_test=reference.flip_test)
        exported = load_end_to_end(staged, cfg)
        images = sample_images() if check_images is None else list(check_images)
        threshold = float(cfg["score_threshold"])
        report.check_images = len(images)
        report.detections = check_end_to_end(reference, exported, images, threshold)
        floating = export_format != "tflite_int8"
        found = report.detections
        if floating and (found["missed"] or found["extra"] or found["box_px"] > E2E_BOX_TOLERANCE_PX
                         or found["score"] > E2E_SCORE_TOLERANCE):
            raise ExportCheckError(f"{output}: end-to-end model differs from the Python path on {len(images)} "
                                   f"sample images: {describe_detection_check(found)}; nothing written")
        for tfrecord in val_tfrecords:
            log(f"validation mAP on {tfrecord} (Python path and end-to-end {export_format})")
            report.val_maps.append((tfrecord, evaluate_tfrecord(reference, tfrecord).mean_ap,
                                    evaluate_tfrecord(exported, tfrecord).mean_ap))
            delta = 100 * (report.val_maps[-1][2] - report.val_maps[-1][1])
            if floating and abs(delta) > E2E_MAP_TARGET_POINTS:
                raise ExportCheckError(f"{output}: end-to-end val mAP on {tfrecord} differs from the Python path "
                                       f"by {delta:+.2f} points (tolerance {E2E_MAP_TARGET_POINTS:g}); nothing written")
        del exported
        _publish(staged, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if export_format in ("tflite", "tflite_int8"):
        report.labels_path = labels_path(output)
        write_text_atomically(report.labels_path, "".join(f"{name}\n" for name in cfg["labels_list"][1:]))
    return report


def describe_detection_check(found):
    """One line about the totals of :func:`check_end_to_end`."""
    return (f"{found['reference']} reference detections, {found['missed']} missed, {found['extra']} extra, "
            f"boxes max |diff| {found['box_px']:.3g} px, scores max |diff| {found['score']:.3g}")


def describe_end_to_end(report):
    """Human-readable lines about the ExportReport of an end-to-end export."""
    size = report.size_bytes / 2 ** 20
    lines = [f"exported end-to-end {report.format} to {report.path} ({size:.2f} MiB, flip test "
             f"{'on' if report.flip_test else 'off'}), config in {report.config_path}"
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
    return lines + report.notes


def describe(report):
    """Human-readable lines about an ExportReport."""
    size = report.size_bytes / 2 ** 20
    lines = [f"exported {report.format} to {report.path} ({size:.2f} MiB), config in {report.config_path}"]
    if report.raw_max_diff is not None:
        verdict = ("information only (int8)" if report.format == "tflite_int8" else
                   f"within tolerance {FLOAT_RAW_TOLERANCE:g} / {FLOAT_BOX_TOLERANCE_PX:g} px")
        lines.append(f"check against the Keras model on {report.check_images} sample images: raw outputs max |diff| "
                     f"{report.raw_max_diff:.3g}, decoded boxes max |diff| {report.box_max_diff_px:.3g} px "
                     f"(network input pixels), correlation {report.correlation:.5f}: {verdict}")
    if report.map_reference is not None and report.map_exported is not None:
        delta = 100 * (report.map_exported - report.map_reference)
        status = "within" if abs(delta) <= INT8_MAP_TARGET_POINTS else "NOT within"
        lines.append(f"val mAP: keras {100 * report.map_reference:.2f}%, "
                     f"{report.format} {100 * report.map_exported:.2f}% "
                     f"({delta:+.2f} points; {status} the {INT8_MAP_TARGET_POINTS:g}-point target)")
    lines.extend(report.notes)
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_path", required=True, help="a .keras model, or a folder (its newest .keras file)")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS, dest="export_format")
    parser.add_argument("--output", default=None,
                        help="output file (folder for saved_model); default beside the model: "
                             + ", ".join(f"<stem>{suffix}" for suffix in OUTPUT_SUFFIX.values()))
    parser.add_argument("--calibration_tfrecord", default=DEFAULT_CALIBRATION_TFRECORD,
                        help="training TFRecord whose images calibrate tflite_int8")
    parser.add_argument("--num_calibration", type=int, default=DEFAULT_NUM_CALIBRATION,
                        help="calibration images for tflite_int8")
    parser.add_argument("--val_tfrecord", default=None,
                        help="with tflite_int8: print the validation mAP of the Keras and the int8 model; with "
                             "--end_to_end (any format, comma-separated paths allowed): check the val mAP of "
                             "the export against the Python path on each")
    parser.add_argument("--end_to_end", action="store_true",
                        help="export the whole detector (letterbox for saved_model / onnx, network, box decoding, "
                             "NMS) instead of the raw network; default output <stem>_e2e<suffix>")
    parser.add_argument("--no_flip_test", action="store_true",
                        help="with --end_to_end: leave the flip test out of the graph (half the compute)")
    args = parser.parse_args(argv)
    try:
        if args.num_calibration < 1:
            raise ExportError(f"--num_calibration: must be at least 1, got {args.num_calibration}")
        if not os.path.exists(args.model_path):
            raise ExportError(f"{args.model_path}: model not found")
        val_tfrecords = [path.strip() for path in (args.val_tfrecord or "").split(",") if path.strip()]
        for path in val_tfrecords:
            if not os.path.isfile(path):
                raise ExportError(f"{path}: validation TFRecord not found")
        if args.no_flip_test and not args.end_to_end:
            raise ExportError("--no_flip_test: only with --end_to_end (raw exports have no flip test inside)")
        if args.end_to_end:
            report = export_end_to_end_file(args.model_path, args.export_format, args.output,
                                            args.calibration_tfrecord, args.num_calibration, val_tfrecords,
                                            flip_test=False if args.no_flip_test else None)
            print("\n".join(describe_end_to_end(report)))
            return 0
        if len(val_tfrecords) > 1:
            raise ExportError("--val_tfrecord: one TFRecord without --end_to_end")
        report = export_model_file(args.model_path, args.export_format, args.output, args.calibration_tfrecord,
                                   args.num_calibration, val_tfrecords[0] if val_tfrecords else None)
    except ExportCheckError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as error:   # ExportError and ModelLoadError included
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (nothing written)", file=sys.stderr)
        return 130
    print("\n".join(describe(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
