"""End-to-end models: preprocessing, network, flip test, box decoding and NMS in one exported graph, so that a
deployment needs only its runtime (TensorFlow, LiteRT or onnxruntime), not this project's code.

Graphs (built here, written by ``export.py --end_to_end``):

* :func:`detection_outputs` (SavedModel and ONNX): uint8 RGB images [B, H, W, 3] of any size in, letterboxed
  inside the graph exactly as ``components.detector.preprocess_images`` does, then the network (and the flip
  test), then ``components.detector.postprocess``; outputs in the TF Object Detection API convention
  (:data:`OUTPUT_KEYS`): ``detection_boxes`` [B, N, 4] normalised (ymin, xmin, ymax, xmax) of the original
  image, ``detection_scores`` [B, N], ``detection_classes`` [B, N] (1..C-1 as float, 0 in padding rows),
  ``num_detections`` [B] (float).
* :func:`tflite_detection_function` (TFLite): the network input [1, h, w, 3] float32 in [-1, 1] (letterbox
  and normalisation are the app's, as the TFLite Task Library / MediaPipe do them), the network, the flip test
  and the standard ``TFLite_Detection_PostProcess`` custom op (class-wise NMS) with its four outputs in the
  order those libraries expect: boxes [1, N, 4] (ymin, xmin, ymax, xmax) normalised to the network input,
  classes [1, N] (0..C-2: background is not a class), scores [1, N], count [1].

The adapters :class:`EndToEndSavedModel`, :class:`EndToEndTFLite` and :class:`EndToEndOnnx` run such a file
and return ``components.detector.Detections`` in pixels (``detect_batch``), so that an export can be checked
against ``components.detector.Detector`` and evaluated with ``components.detector.evaluate_tfrecord``.
"""
import os
import warnings

import numpy as np
import tensorflow as tf

from components.box_utils import iou_matrix
from components.detector import (Detections, boxes_to_pixels, mirrored_offsets_and_probabilities, postprocess,
                                 preprocess_images)
from components.prior_box import mirror_index, priors_from_config
from components.runtimes import ModelLoadError, _first_line, _litert_interpreter_class

OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
TFLITE_OUTPUT_NAMES = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
TFLITE_POSTPROCESS_OP = "TFLite_Detection_PostProcess"
IMAGE_SIGNATURE = "serving_default"          # uint8 images [B, H, W, 3]
ENCODED_SIGNATURE = "serving_encoded_images"  # JPEG / PNG bytes [B]
IMAGE_INPUT = "input_tensor"
ENCODED_INPUT = "encoded_images"
LETTERBOX_PAD_VALUE = 127
# ops under this name scope (class probabilities, flip-test merge) stay float in an int8 TFLite model: int8
# scores step by 1/256, too coarse to rank the low-scoring detections that mAP counts
TFLITE_FLOAT_SCOPE = "float_postprocess"
YX_ORDER = [1, 0, 3, 2]   # (x, y, x, y) <-> (y, x, y, x): our box coding vs the TF OD API / TFLite op order


# --- graphs -------------------------------------------------------------------------------------------

def letterbox_graph(images, input_size):
    """uint8 RGB images [B, H, W, 3] (one size) -> (network input [B, h, w, 3] float32 in [-1, 1], scale [B, 2]).

    Pads the bottom / right with 127 to the aspect ratio of ``input_size`` (each side rounded up, as
    ``components.detector.letterbox_shape``), bilinear resize with half-pixel centres, (x - 127.5) / 127.5:
    the same as ``components.detector.preprocess_images`` within 1e-4. ``scale`` is (padded H / H,
    padded W / W): it turns boxes normalised to the network input into boxes normalised to the image.
    """
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    net_h, net_w = (int(side) for side in input_size)
    padded_w = tf.maximum(width, (height * net_w + net_h - 1) // net_h)
    padded_h = tf.maximum(height, (padded_w * net_h + net_w - 1) // net_w)
    # padded as float: tf2onnx gives a uint8 Pad a float pad value, which onnxruntime refuses
    padded = tf.pad(tf.cast(images, tf.float32), [[0, 0], [0, padded_h - height], [0, padded_w - width], [0, 0]],
                    constant_values=float(LETTERBOX_PAD_VALUE))
    resized = tf.image.resize(padded, (net_h, net_w), method="bilinear")
    scale = tf.stack([tf.cast(padded_h, tf.float32) / tf.cast(height, tf.float32),
                      tf.cast(padded_w, tf.float32) / tf.cast(width, tf.float32)])
    return resized / 127.5 - 1.0, tf.tile(scale[None], [shape[0], 1])


def network_outputs(predict, inputs, mirror=None):
    """(offsets [B, P, 4], class probabilities [B, P, C]) of network inputs [B, h, w, 3]; with ``mirror``
    (``components.prior_box.mirror_index``) the flip test: images and mirror images in one batch, averaged."""
    if mirror is None:
        raw = predict(inputs)
        return raw[..., :4], tf.nn.softmax(raw[..., 4:], axis=-1)
    both = predict(tf.concat([inputs, tf.reverse(inputs, axis=[2])], axis=0))
    batch = tf.shape(inputs)[0]
    return mirrored_offsets_and_probabilities(both[:batch], both[batch:], mirror)


def detection_outputs(predict, inputs, scale, cfg, priors, mirror, score_threshold, max_detections):
    """TF OD API outputs (:data:`OUTPUT_KEYS`) of network inputs [B, h, w, 3] whose images were letterboxed
    with ``scale`` [B, 2] (see :func:`letterbox_graph`), through ``components.detector.postprocess``."""
    offsets, probabilities = network_outputs(predict, inputs, mirror)
    predictions = tf.concat([offsets, tf.math.log(tf.maximum(probabilities, 1e-30))], axis=-1)
    boxes, scores, classes, valid = postprocess(predictions, priors, cfg, score_threshold,
                                                max_detections=max_detections)
    boxes = tf.clip_by_value(tf.gather(boxes, YX_ORDER, axis=-1) * tf.tile(scale, [1, 2])[:, None, :], 0.0, 1.0)
    real = tf.range(tf.shape(scores)[1])[None, :] < valid[:, None]
    return {"detection_boxes": boxes, "detection_scores": scores,
            "detection_classes": tf.where(real, tf.cast(classes, tf.float32), 0.0),
            "num_detections": tf.cast(valid, tf.float32)}


def image_detection_function(predict, cfg, priors, mirror, score_threshold, max_detections, batch=None):
    """tf.function: uint8 images [batch, H, W, 3] (``input_tensor``) -> :func:`detection_outputs`."""
    spec = tf.TensorSpec([batch, None, None, 3], tf.uint8, name=IMAGE_INPUT)

    def detect(images):
        inputs, scale = letterbox_graph(images, cfg["input_size"])
        return detection_outputs(predict, inputs, scale, cfg, priors, mirror, score_threshold, max_detections)
    return tf.function(detect, input_signature=[spec])


def encoded_detection_function(predict, cfg, priors, mirror, score_threshold, max_detections):
    """tf.function: JPEG / PNG bytes [B] (``encoded_images``, any sizes) -> :func:`detection_outputs`."""
    spec = tf.TensorSpec([None], tf.string, name=ENCODED_INPUT)
    height, width = cfg["input_size"]

    def one_image(encoded):
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        inputs, scale = letterbox_graph(image[None], cfg["input_size"])
        return inputs[0], scale[0]

    def detect(encoded):
        inputs, scale = tf.map_fn(one_image, encoded, fn_output_signature=(
            tf.TensorSpec([height, width, 3], tf.float32), tf.TensorSpec([2], tf.float32)))
        return detection_outputs(predict, inputs, scale, cfg, priors, mirror, score_threshold, max_detections)
    return tf.function(detect, input_signature=[spec])


def tflite_postprocess_signature(num_classes, cfg, score_threshold, max_detections):
    """The ``experimental_implements`` string that makes the TFLite converter replace a tf.function by the
    ``TFLite_Detection_PostProcess`` op: class-wise ("regular") NMS as ``postprocess``, our box coding
    (scales 1 / variance), ``num_classes`` without background."""
    centre, size = (1.0 / value for value in cfg["variances"])
    attributes = [("max_detections", "i", max_detections), ("max_classes_per_detection", "i", 1),
                  ("detections_per_class", "i", max_detections), ("use_regular_nms", "b", "true"),
                  ("nms_score_threshold", "f", score_threshold), ("nms_iou_threshold", "f", cfg["nms_threshold"]),
                  ("y_scale", "f", centre), ("x_scale", "f", centre), ("h_scale", "f", size),
                  ("w_scale", "f", size), ("num_classes", "i", num_classes)]
    return " ".join([f'name: "{TFLITE_POSTPROCESS_OP}"'] + [
        f'attr {{ key: "{key}" value {{ {kind}: {value!r} }} }}' if kind != "b" else
        f'attr {{ key: "{key}" value {{ b: {value} }} }}' for key, kind, value in attributes])


def tflite_detection_function(predict, cfg, priors, mirror, score_threshold, max_detections):
    """tf.function: network input [1, h, w, 3] float32 -> (boxes, classes, scores, count) of the
    ``TFLite_Detection_PostProcess`` op once converted (the traced body is a placeholder TensorFlow cannot
    run: only the converter's fused op computes the detections)."""
    num_classes = len(cfg["labels_list"]) - 1
    signature = tflite_postprocess_signature(num_classes, cfg, score_threshold, max_detections)

    @tf.function(experimental_implements=signature)
    def detection_postprocess(box_encodings, class_predictions, anchors):
        del box_encodings, class_predictions, anchors   # the op's inputs; the converter wires them
        return (tf.zeros([1, max_detections, 4]), tf.zeros([1, max_detections]), tf.zeros([1, max_detections]),
                tf.zeros([1]))

    anchors = tf.constant(np.asarray(priors, np.float32)[:, YX_ORDER])   # (cy, cx, h, w) as the op reads them
    spec = tf.TensorSpec([1, *cfg["input_size"], 3], tf.float32, name="normalized_input_image_tensor")

    def detect(inputs):
        raw = predict(tf.concat([inputs, tf.reverse(inputs, axis=[2])], axis=0) if mirror is not None else inputs)
        with tf.name_scope(TFLITE_FLOAT_SCOPE):   # kept in float in an int8 model (see TFLITE_FLOAT_SCOPE)
            if mirror is None:
                offsets, probabilities = raw[..., :4], tf.nn.softmax(raw[..., 4:], axis=-1)
            else:
                offsets, probabilities = mirrored_offsets_and_probabilities(raw[:1], raw[1:], mirror)
            encodings = tf.gather(offsets, YX_ORDER, axis=-1)
        return detection_postprocess(encodings, probabilities, anchors)
    return tf.function(detect, input_signature=[spec])


def finish_tflite_model(model_bytes, detections_per_class):
    """A converted flatbuffer made ready: the model outputs in the order of the ``TFLite_Detection_PostProcess``
    op's outputs (boxes, classes, scores, count; the converter may list them otherwise), named
    :data:`TFLITE_OUTPUT_NAMES`, and the op's ``detections_per_class`` option set (the converter drops it,
    and the kernel's default, 100, would cut crowded images short of the Python path's per-class limit).
    Raises ValueError when the op is not in the model."""
    from flatbuffers import flexbuffers
    from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    subgraph = model.subgraphs[0]
    codes = [code.customCode for code in model.operatorCodes]
    postprocess_ops = [op for op in subgraph.operators
                       if codes[op.opcodeIndex] in (TFLITE_POSTPROCESS_OP, TFLITE_POSTPROCESS_OP.encode())]
    if len(postprocess_ops) != 1:
        raise ValueError(f"converted model holds {len(postprocess_ops)} {TFLITE_POSTPROCESS_OP} ops, expected 1")
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


def tflite_tensor_names(model_bytes):
    """Names of the tensors of a TFLite flatbuffer's main subgraph."""
    from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    return [tensor.name.decode() for tensor in model.subgraphs[0].tensors]


def graph_constants(cfg):
    """(priors [P, 4] float32 centre form, mirror index [P] or None) of a model config; the mirror index
    only with ``cfg['flip_test']`` on a grid where every prior has a mirror image (as ``Detector``)."""
    priors = np.asarray(priors_from_config(cfg), np.float32)
    mirror = None
    if cfg.get("flip_test", False):
        try:
            mirror = mirror_index(priors)
        except ValueError:
            pass
    return priors, mirror


# --- running the exported files -----------------------------------------------------------------------

def _detections_from_normalised(boxes_yxyx, scores, classes, count, image_shape, class_names, score_threshold):
    """Detections in pixels from TF OD API outputs of one image (boxes normalised to that image)."""
    height, width = image_shape[:2]
    count = int(count)
    keep = np.asarray(scores[:count]) >= score_threshold
    boxes = np.asarray(boxes_yxyx[:count], np.float32)[:, YX_ORDER] * np.array([width, height, width, height],
                                                                              np.float32)
    return Detections(boxes[keep], np.asarray(scores[:count], np.float32)[keep],
                      np.asarray(classes[:count]).astype(np.int64)[keep], list(class_names))


class _EndToEndModel:
    """Common part of the adapters: ``cfg`` (the model config) and ``detect_batch``."""

    format = None

    def __init__(self, path, cfg):
        self.path, self.cfg = path, cfg
        self.class_names = list(cfg["labels_list"])

    def detect_batch(self, images_rgb, score_threshold=None):
        """uint8 RGB images of any sizes -> one ``Detections`` (pixels) per image, scores >= the threshold
        (default ``cfg['score_threshold']``; the file itself keeps nothing below its export threshold)."""
        threshold = self.cfg["score_threshold"] if score_threshold is None else score_threshold
        return [self.detect(image, threshold) for image in images_rgb]


class EndToEndSavedModel(_EndToEndModel):
    """An end-to-end SavedModel folder, run through its ``serving_default`` signature (uint8 images)."""

    format = "saved_model"

    def __init__(self, path, cfg):
        super().__init__(path, cfg)
        try:
            self._loaded = tf.saved_model.load(path)
            self._signature = self._loaded.signatures[IMAGE_SIGNATURE]
        except Exception as error:  # noqa: BLE001  (TensorFlow raises many types for a bad folder)
            raise ModelLoadError(f"{path}: not a loadable end-to-end SavedModel ({_first_line(error)})") from None

    def detect(self, image_rgb, score_threshold):
        outputs = self._signature(**{IMAGE_INPUT: tf.constant(np.asarray(image_rgb, np.uint8)[None])})
        values = [outputs[key].numpy()[0] for key in OUTPUT_KEYS]
        return _detections_from_normalised(values[0], values[1], values[2], values[3], image_rgb.shape,
                                           self.class_names, score_threshold)


class EndToEndOnnx(_EndToEndModel):
    """An end-to-end ``.onnx`` file (uint8 image [1, H, W, 3] in, TF OD API outputs) run by onnxruntime."""

    format = "onnx"

    def __init__(self, path, cfg, num_threads=2):
        super().__init__(path, cfg)
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001
            raise ModelLoadError(f"{path}: not a loadable end-to-end ONNX model ({_first_line(error)})") from None
        self._input = self.session.get_inputs()[0].name
        self._outputs = [output.name for output in self.session.get_outputs()]

    def detect(self, image_rgb, score_threshold):
        values = dict(zip(self._outputs, self.session.run(None, {self._input: np.asarray(image_rgb, np.uint8)[None]})))
        return _detections_from_normalised(*(values[key][0] for key in OUTPUT_KEYS), image_rgb.shape,
                                           self.class_names, score_threshold)


class EndToEndTFLite(_EndToEndModel):
    """An end-to-end ``.tflite`` file run by LiteRT: the app's letterbox (``preprocess_images``) in, the four
    outputs of ``TFLite_Detection_PostProcess`` out."""

    format = "tflite"

    def __init__(self, path, cfg, num_threads=2):
        super().__init__(path, cfg)
        interpreter_class, _ = _litert_interpreter_class()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.interpreter = interpreter_class(model_path=path, num_threads=num_threads)
            self.interpreter.allocate_tensors()
        except Exception as error:  # noqa: BLE001
            raise ModelLoadError(f"{path}: not a loadable end-to-end TFLite model ({_first_line(error)})") from None
        self._input = self.interpreter.get_input_details()[0]["index"]
        self._outputs = [detail["index"] for detail in self.interpreter.get_output_details()]
        if len(self._outputs) != 4:
            raise ModelLoadError(f"{path}: expected the 4 outputs of {TFLITE_POSTPROCESS_OP}, got "
                                 f"{len(self._outputs)}")

    def detect(self, image_rgb, score_threshold):
        input_size = tuple(self.cfg["input_size"])
        self.interpreter.set_tensor(self._input, preprocess_images([image_rgb], input_size))
        self.interpreter.invoke()
        boxes, classes, scores, count = (self.interpreter.get_tensor(index)[0] for index in self._outputs)
        count = int(count)
        keep = scores[:count] >= score_threshold
        pixels = boxes_to_pixels(boxes[:count, YX_ORDER], image_rgb.shape, input_size)
        return Detections(pixels[keep], scores[:count][keep].astype(np.float32),
                          classes[:count].astype(np.int64)[keep] + 1, list(self.class_names))


def load_end_to_end(path, cfg):
    """The adapter for an end-to-end export (by file type); raises ModelLoadError."""
    if os.path.isdir(path):
        return EndToEndSavedModel(path, cfg)
    if path.endswith(".tflite"):
        return EndToEndTFLite(path, cfg)
    if path.endswith(".onnx"):
        return EndToEndOnnx(path, cfg)
    raise ModelLoadError(f"{path}: not an end-to-end model (SavedModel folder, .tflite or .onnx)")


# --- comparing with the Python path -------------------------------------------------------------------

def compare_detections(reference, exported, score_threshold, score_margin=0.02):
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
