"""Runtime adapters: one small class per model format, each a :class:`Runtime`.

Every adapter exposes ``predict_raw(images)``: preprocessed float32 images [B, h, w, 3] (see
``runtime.preprocessing.preprocess_images``) in, raw predictions [B, P, 4 + C] float32 (numpy) out, and
``format``, ``path`` and ``input_size``. Decoding and NMS are *not* done here:
``runtime.postprocessing.postprocess`` does them, the same code for every runtime.

==============  =========================================  =============================================
format          file                                       runtime
==============  =========================================  =============================================
``keras``       ``*.keras``                                TensorFlow: the model's graph for a fixed input
                                                           signature [None, h, w, 3], weights frozen in
``saved_model`` folder holding ``saved_model.pb``          TensorFlow, the exported ``serve`` function
``tflite``      ``*.tflite`` (float or full-integer int8)  LiteRT / TFLite interpreter, XNNPACK, 2 threads
``onnx``        ``*.onnx``                                 onnxruntime, CPU, all graph optimisations
``keras``       a Keras model in memory (``ModelRuntime``)  its ``tf.function``, any input size (training's
                                                           validation)
==============  =========================================  =============================================

The TFLite and ONNX exports have a fixed batch of 1 (faster); their adapters run a larger batch one image
at a time. A file that is not a loadable model raises :class:`ModelLoadError` naming the file.
"""
from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from components.errors import ProjectError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    import keras
    import tensorflow as tf

DEFAULT_NUM_THREADS = 2
SAVED_MODEL_FILE = "saved_model.pb"
FORMAT_BY_EXTENSION = {".keras": "keras", ".tflite": "tflite", ".onnx": "onnx"}


class ModelLoadError(ProjectError):
    """A model path that cannot be loaded; the message names the path and the problem."""


@runtime_checkable
class Runtime(Protocol):
    """What ``runtime.detector.Detector`` runs: a model of one format behind one call.

    ``format``: 'keras', 'saved_model', 'tflite' or 'onnx'; ``path``: the model file or folder (None for a
    model in memory); ``input_size``: the (h, w) the model takes, None where any size (or an unknown one) goes.
    """

    format: str
    path: str | None
    input_size: tuple[int, int] | None

    def predict_raw(self, images: np.ndarray) -> np.ndarray:
        """Preprocessed float32 images [B, h, w, 3] in [-1, 1] -> raw predictions [B, P, 4 + C] float32: box
        offsets, then class logits."""
        ...


END_TO_END_HINT = ("an end-to-end export (detections out, not raw predictions): run it with its runtime as in the "
                   "README section 'End-to-end models'")


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def is_saved_model_dir(path: str) -> bool:
    """Whether ``path`` is a TensorFlow SavedModel folder."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, SAVED_MODEL_FILE))


def model_format(path: str) -> str:
    """The runtime ``path`` needs: 'keras', 'saved_model', 'tflite' or 'onnx' (by extension / folder layout).

    Raises ModelLoadError for a path of no known model type.
    """
    if is_saved_model_dir(path):
        return "saved_model"
    extension = os.path.splitext(path)[1].lower()
    if extension in FORMAT_BY_EXTENSION and not os.path.isdir(path):
        return FORMAT_BY_EXTENSION[extension]
    kinds = ", ".join([*FORMAT_BY_EXTENSION, "a SavedModel folder"])
    raise ModelLoadError(f"{path}: not a model file of a known type ({kinds})")


def load_keras_model(model_file: str) -> keras.Model:
    """Load a ``.keras`` file; raises ModelLoadError naming the file when it is not a loadable model."""
    import tensorflow as tf

    import network.network  # noqa: F401  (registers the custom layers a saved model may hold)
    try:
        return tf.keras.models.load_model(model_file, compile=False)
    except Exception as error:  # Keras raises many types for a bad file
        raise ModelLoadError(f"{model_file}: not a loadable Keras model ({first_line(error)})") from None


def _check_batch(images, input_size, name):
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"{name}: expected images [B, h, w, 3], got shape {images.shape}")
    if input_size is not None and tuple(images.shape[1:3]) != tuple(input_size):
        raise ValueError(f"{name}: the model takes {input_size[0]}x{input_size[1]} images, got "
                         f"{images.shape[1]}x{images.shape[2]}")
    return images


def _single_output(outputs):
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs


def frozen_function(model: keras.Model, input_size: Sequence[int],
                    batch: int | None = None) -> Callable[[tf.Tensor], tf.Tensor]:
    """The inference graph of a Keras ``model`` for input [batch, h, w, 3] float32, as a concrete function
    with its weights turned into constants.

    Freezing lets TensorFlow's graph optimiser fold the batch-norm scales into the convolutions and fuse
    conv + bias + ReLU (oneDNN): about a third faster than calling the model through a tf.function whose
    weights are variables. Falls back to that tf.function if freezing fails.
    """
    import tensorflow as tf
    spec = tf.TensorSpec([batch, *input_size, 3], tf.float32, name="images")
    function = tf.function(lambda images: model(images, training=False), input_signature=[spec])
    try:
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
        frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    except Exception:  # an internal API: keep working without it  # noqa: BLE001
        return function
    return lambda images: _single_output(frozen(images))


class KerasRuntime:
    """A Keras model run through its frozen graph for a fixed input signature [None, h, w, 3]
    (see :func:`frozen_function`)."""

    format = "keras"

    def __init__(self, model: keras.Model, input_size: Sequence[int],
                 path: str | None = None) -> None:
        self.model = model
        self.path = path
        self.input_size: tuple[int, int] | None = (int(input_size[0]), int(input_size[1]))
        self._predict = frozen_function(model, self.input_size)

    @classmethod
    def from_path(cls, path: str, input_size: Sequence[int]) -> KerasRuntime:
        return cls(load_keras_model(path), input_size, path)

    def predict_raw(self, images: np.ndarray) -> np.ndarray:
        """[B, h, w, 3] float32 -> [B, P, 4 + C] float32 numpy."""
        import tensorflow as tf
        images = _check_batch(images, self.input_size, self.path or "keras model")
        return self._predict(tf.constant(images)).numpy()


class SavedModelRuntime:
    """A SavedModel folder written by ``export.py`` (its ``serve`` function, or ``serving_default``)."""

    format = "saved_model"

    def __init__(self, path: str) -> None:
        import tensorflow as tf
        self.path: str | None = path
        try:
            loaded = tf.saved_model.load(path)
        except Exception as error:
            raise ModelLoadError(f"{path}: not a loadable SavedModel ({first_line(error)})") from None
        self._loaded = loaded   # keeps the variables alive
        function = getattr(loaded, "serve", None)
        if function is None:
            if "serving_default" not in getattr(loaded, "signatures", {}):
                raise ModelLoadError(f"{path}: SavedModel has no 'serve' function or 'serving_default' signature")
            signature = loaded.signatures["serving_default"]
            if "detection_boxes" in signature.structured_outputs:
                raise ModelLoadError(f"{path}: {END_TO_END_HINT}")

            def function(images):
                outputs = signature(images)
                return outputs[sorted(outputs)[0]] if isinstance(outputs, dict) else outputs
        self._predict = function
        self.input_size: tuple[int, int] | None = None
        concrete = getattr(function, "concrete_functions", None) or []
        for candidate in concrete:
            spec = candidate.structured_input_signature[0]
            if spec and len(spec[0].shape) == 4 and None not in spec[0].shape[1:3]:
                self.input_size = (int(spec[0].shape[1]), int(spec[0].shape[2]))
                break

    def predict_raw(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf
        images = _check_batch(images, self.input_size, self.path)
        return np.asarray(self._predict(tf.constant(images)), np.float32)


def litert_interpreter_class() -> tuple[Any, Any]:
    """(Interpreter class, OpResolverType) of ai_edge_litert (LiteRT), or of tf.lite when it is missing."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
        return Interpreter, OpResolverType
    except ImportError:
        import tensorflow as tf
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tf.lite.Interpreter, tf.lite.experimental.OpResolverType


def tflite_interpreter(path: str | None = None, model_content: bytes | None = None,
                       num_threads: int = DEFAULT_NUM_THREADS, xnnpack: bool = True) -> Any:
    """A LiteRT interpreter of the ``.tflite`` file at ``path`` (or of ``model_content`` bytes), tensors
    allocated. ``xnnpack`` False runs the built-in kernels without the default XNNPACK delegate.
    Raises ModelLoadError naming the file when it is not a loadable TFLite model."""
    name = path or "<tflite model>"
    interpreter_class, resolver = litert_interpreter_class()
    options = {} if xnnpack else {"experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    if path is not None and model_content is None:
        try:
            with open(path, "rb") as handle:
                model_content = handle.read()
        except OSError as error:
            raise ModelLoadError(f"{path}: cannot read ({error.strerror or error})") from None
    if len(model_content) < 8 or model_content[4:8] != b"TFL3":  # type: ignore[arg-type, index]
        raise ModelLoadError(f"{name}: not a TFLite model (no TFL3 flatbuffer identifier)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = interpreter_class(model_content=model_content, num_threads=num_threads, **options)
        interpreter.allocate_tensors()
    except Exception as error:  # RuntimeError / ValueError for a corrupt or unsupported model
        raise ModelLoadError(f"{name}: not a loadable TFLite model ({first_line(error)})") from None
    return interpreter


class TFLiteRuntime:
    """A ``.tflite`` model (float, or full-integer with int8/uint8 input/output handled here).

    ``xnnpack`` False runs the built-in kernels without the default XNNPACK delegate (for comparison).
    A batch of B images is run as B invocations of the batch-1 model.
    """

    format = "tflite"

    def __init__(self, path: str | None = None, model_content: bytes | None = None,
                 num_threads: int = DEFAULT_NUM_THREADS, xnnpack: bool = True) -> None:
        self.path: str | None = path or "<tflite model>"
        self.interpreter = tflite_interpreter(path, model_content, num_threads, xnnpack)
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(outputs) == 4 and len(inputs) == 1:
            raise ModelLoadError(f"{self.path}: {END_TO_END_HINT}")
        if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0]["shape"]) != 4:
            raise ModelLoadError(f"{self.path}: expected one image input and one output, got {len(inputs)} "
                                 f"inputs and {len(outputs)} outputs")
        self._input, self._output = inputs[0], outputs[0]
        self.input_size: tuple[int, int] | None = (int(self._input["shape"][1]), int(self._input["shape"][2]))
        self.quantized = self._input["dtype"] in (np.int8, np.uint8)

    def _quantize(self, image):
        scale, zero_point = self._input["quantization"]
        info = np.iinfo(self._input["dtype"])
        return np.clip(np.round(image / scale + zero_point), info.min, info.max).astype(self._input["dtype"])

    def _dequantize(self, output):
        if output.dtype == np.float32:
            return output
        scale, zero_point = self._output["quantization"]
        return (output.astype(np.float32) - zero_point) * scale

    def predict_raw(self, images: np.ndarray) -> np.ndarray:
        images = _check_batch(images, self.input_size, self.path)
        results = []
        for image in images:
            value = image[None]
            if self._input["dtype"] != np.float32:
                value = self._quantize(value)
            self.interpreter.set_tensor(self._input["index"], value)
            self.interpreter.invoke()
            results.append(self._dequantize(self.interpreter.get_tensor(self._output["index"])))
        return np.concatenate(results, axis=0)


def onnx_session(path: str | None = None, model_content: bytes | None = None,
                 num_threads: int = DEFAULT_NUM_THREADS) -> Any:
    """An onnxruntime CPU session of the ``.onnx`` file at ``path`` (or of ``model_content`` bytes):
    ``num_threads`` intra-op threads, sequential, all graph optimisations. Raises ModelLoadError naming the
    file when onnxruntime is missing or the file is not a loadable ONNX model."""
    name = path or "<onnx model>"
    try:
        import onnxruntime
    except ImportError:
        raise ModelLoadError(f"{name}: onnxruntime is not installed (pip install onnxruntime)") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    source = model_content if model_content is not None else path
    if model_content is None and not os.path.isfile(path):  # type: ignore[arg-type]
        raise ModelLoadError(f"{path}: model not found")
    try:
        return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for a bad file
        raise ModelLoadError(f"{name}: not a loadable ONNX model ({first_line(error)})") from None


class OnnxRuntime:
    """A ``.onnx`` model run by onnxruntime on the CPU (``num_threads`` intra-op threads, all graph
    optimisations). A fixed-batch model runs a larger batch one image at a time."""

    format = "onnx"

    def __init__(self, path: str | None = None, model_content: bytes | None = None,
                 num_threads: int = DEFAULT_NUM_THREADS) -> None:
        self.path: str | None = path or "<onnx model>"
        self.session = onnx_session(path, model_content, num_threads)
        inputs = self.session.get_inputs()
        outputs = [output.name for output in self.session.get_outputs()]
        if "detection_boxes" in outputs:
            raise ModelLoadError(f"{self.path}: {END_TO_END_HINT}")
        if outputs == ["boxes", "scores"]:
            raise ModelLoadError(f"{self.path}: a decoded ONNX export (boxes and class probabilities out, not raw "
                                 "predictions): run it with OpenCV DNN or onnxruntime and NMS as in the README "
                                 "section 'Use the model from another runtime'")
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelLoadError(f"{self.path}: expected one image input [B, h, w, 3]")
        self._input_name = inputs[0].name
        batch, height, width = inputs[0].shape[:3]
        self.fixed_batch = batch if isinstance(batch, int) else None
        self.input_size: tuple[int, int] | None = ((height, width) if isinstance(height, int) and isinstance(width, int)
                                                   else None)

    def predict_raw(self, images: np.ndarray) -> np.ndarray:
        images = _check_batch(images, self.input_size, self.path)
        if self.fixed_batch in (None, len(images)):
            return self.session.run(None, {self._input_name: images})[0].astype(np.float32, copy=False)
        if self.fixed_batch != 1:
            raise ValueError(f"{self.path}: the model takes batches of {self.fixed_batch}, got {len(images)}")
        return np.concatenate([self.session.run(None, {self._input_name: image[None]})[0] for image in images])


class ModelRuntime:
    """A Keras model in memory (the model being trained, for its validation) run through one ``tf.function`` in
    inference mode, compiled once for any batch size and any input size."""

    format = "keras"

    def __init__(self, model: keras.Model) -> None:
        import tensorflow as tf
        self.path: str | None = None
        self.input_size: tuple[int, int] | None = None
        self._predict = tf.function(lambda images: model(images, training=False), reduce_retracing=True)

    def predict_raw(self, images: np.ndarray | tf.Tensor) -> np.ndarray:
        """[B, h, w, 3] float32 -> [B, P, 4 + C] float32 numpy."""
        import tensorflow as tf
        return self._predict(tf.convert_to_tensor(images, tf.float32)).numpy()


def load_runtime(path: str, input_size: Sequence[int], num_threads: int = DEFAULT_NUM_THREADS,
                 xnnpack: bool = True) -> Runtime:
    """The runtime adapter for the model at ``path`` (picked by :func:`model_format`).

    ``input_size`` (h, w) fixes the Keras signature; the exported formats carry their own.
    Raises ModelLoadError when the path is missing or not a loadable model.
    """
    if not os.path.exists(path):
        raise ModelLoadError(f"{path}: model not found")
    kind = model_format(path)
    if kind == "keras":
        return KerasRuntime.from_path(path, input_size)
    if kind == "saved_model":
        return SavedModelRuntime(path)
    if kind == "tflite":
        return TFLiteRuntime(path, num_threads=num_threads, xnnpack=xnnpack)
    return OnnxRuntime(path, num_threads=num_threads)
