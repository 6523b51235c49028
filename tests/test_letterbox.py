"""The one letterbox (components/letterbox.py) on its two backends, and the Runtime protocol of the adapters."""
import cv2
import numpy as np
import pytest
import tensorflow as tf
from conftest import SAMPLE_IMAGE

from components.letterbox import NORMALIZED_PAD_VALUE, PAD_VALUE, letterbox, letterbox_shape, normalize

SIZES = [(240, 320), (368, 512), (300, 300), (35, 47)]


def sample_rgb(height=None, width=None):
    image = cv2.cvtColor(cv2.imread(SAMPLE_IMAGE), cv2.COLOR_BGR2RGB)
    return image if height is None else cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("input_size", SIZES)
def test_the_frame_is_the_same_for_python_ints_and_graph_tensors(input_size):
    """One geometry: the sizes the Detector computes in Python are those the graphs and tf.data compute."""
    shapes = [(h, w) for h in (1, 2, 7, 105, 240, 241, 368, 572, 1000) for w in (1, 3, 140, 320, 321, 512, 950)]
    frames = [letterbox_shape(h, w, input_size) for h, w in shapes]
    heights, widths = tf.constant([h for h, _ in shapes]), tf.constant([w for _, w in shapes])
    graph_h, graph_w = letterbox_shape(heights, widths, input_size)
    assert list(zip(graph_h.numpy().tolist(), graph_w.numpy().tolist())) == frames
    aspect = input_size[1] / input_size[0]
    for (h, w), (frame_h, frame_w) in zip(shapes, frames):
        assert frame_h >= h and frame_w >= w
        assert abs(frame_w - aspect * frame_h) <= max(1.0, aspect) + 1e-6   # the input's aspect, to a pixel


@pytest.mark.parametrize("backend", ["opencv", "tensorflow"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (100, 500), (500, 90), (240, 320), (572, 950)])
def test_the_padding_is_the_letterbox_grey_at_the_bottom_right(backend, shape):
    image = sample_rgb(*shape)
    inputs, frame = letterbox(image if backend == "opencv" else tf.constant(image), (240, 320), backend=backend)
    inputs = np.asarray(inputs)
    assert inputs.shape == (240, 320, 3) and inputs.dtype == np.float32
    assert tuple(int(side) for side in frame) == letterbox_shape(*shape, (240, 320))
    grey = normalize(np.float32(PAD_VALUE))
    # rows / columns wholly past the image's last pixel (and its bilinear neighbour) are exactly the grey
    rows = int(np.ceil((shape[0] + 0.5) * 240 / int(frame[0]) - 0.5)) + 1
    cols = int(np.ceil((shape[1] + 0.5) * 320 / int(frame[1]) - 0.5)) + 1
    assert rows < 240 or cols < 320 or tuple(shape) == (240, 320)
    assert np.all(inputs[rows:] == grey) and np.all(inputs[:, cols:] == grey)
    assert abs(float(NORMALIZED_PAD_VALUE) - float(grey)) < 1e-7   # the canvas grey of pad_to_size, one float32 step off


@pytest.mark.parametrize("keep_aspect", [True, False])
def test_both_backends_share_padding_and_normalisation_bit_for_bit_where_there_is_nothing_to_resize(keep_aspect):
    """At the input size (no resize) the two backends give the same bytes: only their resize differs."""
    image = sample_rgb(240, 320)
    opencv = letterbox(image, (240, 320), keep_aspect, backend="opencv")[0]
    graph = letterbox(tf.constant(image), (240, 320), keep_aspect, backend="tensorflow")[0].numpy()
    assert opencv.tobytes() == graph.tobytes()
    assert opencv.tobytes() == (image.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1)).tobytes()
    # an image that only needs padding (a 4:3 frame of 240x320): still bit for bit
    padded_opencv = letterbox(image[:, :300], (240, 320), keep_aspect=True, backend="opencv")[0]
    padded_graph = letterbox(tf.constant(image[:, :300]), (240, 320), keep_aspect=True, backend="tensorflow")[0]
    assert padded_opencv.tobytes() == padded_graph.numpy().tobytes()


@pytest.mark.parametrize("input_size", [(240, 320), (368, 512)])
@pytest.mark.parametrize("shape", [(572, 950), (445, 297), (1, 1), (37, 1001)])
def test_resizes_of_the_two_backends_agree(input_size, shape):
    from runtime.preprocessing import preprocess_images
    image = sample_rgb(*shape)
    graph = letterbox(tf.constant(image[None]), input_size, backend="tensorflow")[0].numpy()
    np.testing.assert_allclose(graph, preprocess_images([image], input_size), atol=2e-4, rtol=0)


def test_validation_graph_and_training_pipeline_run_the_same_letterbox():
    """tf.data's validation input and the end-to-end graph's input are the same bytes (one TensorFlow path)."""
    from dataset.tf_dataset_preprocess import prepare_for_evaluation
    from deploy.end_to_end import letterbox_graph
    for shape in [(572, 950), (445, 297), (105, 140)]:
        image = sample_rgb(*shape)
        for input_size in [(240, 320), (35, 47)]:
            validation, _ = prepare_for_evaluation(image, tf.zeros([0, 4]), input_size)
            graph, scale = letterbox_graph(tf.constant(image[None]), input_size)
            assert validation.numpy().tobytes() == graph.numpy()[0].tobytes()
            frame_h, frame_w = letterbox_shape(*shape, input_size)   # the Detector's frame
            np.testing.assert_array_equal(scale.numpy(), [[np.float32(frame_h) / np.float32(shape[0]),
                                                           np.float32(frame_w) / np.float32(shape[1])]])


def test_every_adapter_is_a_runtime_and_a_keras_model_is_not():
    import keras

    from runtime.adapters import KerasRuntime, ModelRuntime, Runtime
    from runtime.detector import Detector

    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3, padding="same")])
    assert not isinstance(model, Runtime)
    in_memory = ModelRuntime(model)
    assert isinstance(in_memory, Runtime)
    assert (in_memory.format, in_memory.path, in_memory.input_size) == ("keras", None, None)
    keras_runtime = KerasRuntime(model, (16, 24), "model.keras")
    assert isinstance(keras_runtime, Runtime) and keras_runtime.input_size == (16, 24)
    images = np.zeros((2, 16, 24, 3), np.float32)
    np.testing.assert_allclose(keras_runtime.predict_raw(images), in_memory.predict_raw(images), atol=1e-6)
    from components.config import DEFAULT_SETTINGS
    detector = Detector(model, DEFAULT_SETTINGS.replace(input_size=(16, 24), min_sizes=[[4]], steps=[1]))
    assert isinstance(detector.runtime, KerasRuntime) and detector.model_path is None
