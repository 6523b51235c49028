"""Tests of export.py, runtime/adapters.py and the shared post-processing, with a tiny random model at the
real 240x320 input: every format is exported, loaded by file type and compared with the Keras model."""
import os
import shutil

import cv2
import numpy as np
import pytest
from conftest import INFERENCE, REPO_ROOT, SAMPLE_IMAGE

from components.atomic_io import STAGING_PREFIX
from components.config import DEFAULT_SETTINGS
from deploy import export, export_common
from runtime.adapters import ModelLoadError, model_format

INPUT_SIZE = (240, 320)
EXPORT = os.path.join(REPO_ROOT, "export.py")
FLOAT_FORMATS = ("saved_model", "tflite", "onnx")


def randomise_batch_norm(model, seed=0):
    """Non-trivial batch-norm statistics, so that folding them into the convolutions is really tested."""
    generator = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([generator.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                               generator.normal(0, 0.1, beta.shape).astype(np.float32),
                               generator.normal(0, 0.1, mean.shape).astype(np.float32),
                               generator.uniform(0.5, 1.5, variance.shape).astype(np.float32)])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """Path of a small random 'rfb' model (base_channel 4, input 240x320) saved with its config sidecar."""
    import tensorflow as tf

    from network.network import build_model
    from training.trainer import export_model
    settings = DEFAULT_SETTINGS.replace(network="rfb", base_channel=4, input_size=INPUT_SIZE)
    tf.keras.utils.set_random_seed(3)
    model = build_model(settings)
    randomise_batch_norm(model)
    return export_model(model, settings, str(tmp_path_factory.mktemp("model")), name="tiny.keras")


@pytest.fixture(scope="module")
def keras_model(tiny_model):
    from runtime.adapters import load_keras_model
    return load_keras_model(tiny_model)


@pytest.fixture(scope="module")
def sample_batch():
    from runtime.preprocessing import preprocess_images
    images = export_common.sample_images()
    assert len(images) >= 2
    return preprocess_images(images, INPUT_SIZE)


@pytest.fixture(scope="module")
def exports(tiny_model, tmp_path_factory):
    """{format: ExportReport} of the float formats, exported once into one folder."""
    folder = tmp_path_factory.mktemp("exports")
    return {fmt: export.export_model_file(tiny_model, fmt, str(folder / f"tiny{export_common.OUTPUT_SUFFIX[fmt]}"),
                                          log=lambda message: None)
            for fmt in FLOAT_FORMATS}


@pytest.fixture(scope="module")
def int8_export(tiny_model, voc_mini_tfrecords, tmp_path_factory):
    """An int8 export calibrated on the voc_mini training images (6)."""
    folder = tmp_path_factory.mktemp("int8")
    return export.export_model_file(tiny_model, "tflite_int8", str(folder / "tiny_int8.tflite"),
                                    calibration_tfrecord=voc_mini_tfrecords["train"], num_calibration=6,
                                    log=lambda message: None)


# --- float formats ------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("fmt", FLOAT_FORMATS)
def test_float_export_matches_keras_and_loads_by_file_type(fmt, exports, tiny_model, keras_model, sample_batch):
    from runtime.detector import Detector
    from runtime.model_files import MODEL_CONFIG_KEYS, load_model_config, model_config_path, read_model_spec
    report = exports[fmt]
    assert report.check_images >= 2
    assert report.raw_max_diff <= export_common.FLOAT_RAW_TOLERANCE
    assert report.box_max_diff_px <= export_common.FLOAT_BOX_TOLERANCE_PX
    # the spec inside the export makes it load with no other setting, and no sidecar is written
    assert not os.path.exists(model_config_path(report.path))
    source, exported = read_model_spec(tiny_model), read_model_spec(report.path)
    assert {key: exported[key] for key in MODEL_CONFIG_KEYS} == {key: source[key] for key in MODEL_CONFIG_KEYS}
    assert exported["input"]["mean"] == exported["input"]["std"] == 127.5
    assert load_model_config(report.path).model.base_channel == 4
    # nothing staged is left behind
    assert not [name for name in os.listdir(os.path.dirname(report.path)) if name.startswith(STAGING_PREFIX)]

    detector = Detector.from_path(report.path)
    assert detector.format == fmt == model_format(report.path)
    assert detector.input_size == INPUT_SIZE
    expected = keras_model(sample_batch, training=False).numpy()
    raw = detector.runtime.predict_raw(sample_batch)          # a batch of 2: per-image loop for tflite / onnx
    assert raw.dtype == np.float32 and raw.shape == expected.shape
    np.testing.assert_allclose(raw, expected, atol=export_common.FLOAT_RAW_TOLERANCE, rtol=0)


@pytest.mark.slow
def test_saved_model_folder_carries_its_config_inside(exports, tmp_path):
    from runtime.detector import Detector
    from runtime.model_files import resolve_model_path
    moved = tmp_path / "moved_saved_model"
    shutil.copytree(exports["saved_model"].path, moved)          # the folder alone, without the sidecar beside it
    assert resolve_model_path(str(moved)) == str(moved)         # a SavedModel folder is the model itself
    detector = Detector.from_path(str(moved))
    assert detector.settings.model.base_channel == 4 and detector.input_size == INPUT_SIZE


@pytest.mark.slow
def test_keras_runtime_matches_the_model(tiny_model, keras_model, sample_batch):
    from runtime.detector import Detector
    detector = Detector.from_path(tiny_model)
    assert detector.format == "keras"
    np.testing.assert_allclose(detector.runtime.predict_raw(sample_batch), keras_model(sample_batch, training=False).numpy(),
                               atol=1e-4, rtol=0)


# --- int8 ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_int8_export_is_full_integer_with_float_io_and_correlates(int8_export, keras_model, sample_batch):
    from runtime.adapters import TFLiteRuntime
    from runtime.detector import Detector
    from runtime.postprocessing import postprocess
    runtime = TFLiteRuntime(int8_export.path)
    details = runtime.interpreter.get_tensor_details()
    # float32 in and out (quantize / dequantize ops in the model), int8 weights and activations inside
    assert runtime._input["dtype"] == np.float32 and runtime._output["dtype"] == np.float32
    assert sum(item["dtype"] == np.int8 for item in details) > len(details) // 2
    assert not [item["name"] for item in details if item["dtype"] == np.float32 and len(item["shape"]) == 4
                and item["shape"][0] > 1]                       # no float convolution kernels

    detector = Detector.from_path(int8_export.path)
    expected = keras_model(sample_batch, training=False).numpy()
    raw = detector.runtime.predict_raw(sample_batch)
    assert raw.shape == expected.shape and raw.dtype == np.float32
    assert int8_export.correlation > 0.95
    assert np.corrcoef(raw.ravel(), expected.ravel())[0, 1] > 0.95
    # the shared post-processing runs on int8 output like on any other
    boxes, scores, classes, valid = postprocess(raw, detector.priors, detector.settings, 0.01)
    assert boxes.shape[0] == 2 and int(valid[0]) > 0


@pytest.mark.slow
def test_int8_is_smaller_than_float(int8_export, exports):
    assert int8_export.size_bytes < 0.5 * exports["tflite"].size_bytes


@pytest.mark.slow
def test_int8_input_output_scales_are_applied_by_the_runtime(int8_export, keras_model, sample_batch,
                                                              voc_mini_tfrecords):
    from runtime.adapters import TFLiteRuntime
    # the same calibration images as the int8_export fixture (same record file, count and shuffle seed)
    calibration = export_common.calibration_images(voc_mini_tfrecords["train"], INPUT_SIZE, 6)
    float_io = TFLiteRuntime(int8_export.path)
    int8_io = TFLiteRuntime(model_content=export.tflite_bytes(keras_model, INPUT_SIZE, calibration, int8_io=True))
    assert int8_io.quantized and int8_io._input["dtype"] == np.int8 and int8_io._output["dtype"] == np.int8
    a, b = float_io.predict_raw(sample_batch[:1]), int8_io.predict_raw(sample_batch[:1])
    assert b.dtype == np.float32
    output_scale = int8_io._output["quantization"][0]
    assert np.abs(a - b).max() <= 2 * output_scale + 1e-6        # the same model up to rounding of the I/O


# --- shared pieces --------------------------------------------------------------------------------------

def test_runtime_is_chosen_by_file_type(tmp_path):
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    assert model_format(str(tmp_path / "m.keras")) == "keras"
    assert model_format(str(tmp_path / "m.tflite")) == "tflite"
    assert model_format(str(tmp_path / "m.ONNX")) == "onnx"
    assert model_format(str(tmp_path / "sm")) == "saved_model"
    with pytest.raises(ModelLoadError, match="m.pt: not a model file of a known type"):
        model_format(str(tmp_path / "m.pt"))


def test_a_folder_means_its_default_model_whatever_the_file_times(tmp_path):
    from runtime.model_files import resolve_model_path
    default, newer = tmp_path / "mask_detector.keras", tmp_path / "mask_detector_3class.keras"
    default.write_bytes(b"x")
    newer.write_bytes(b"x")
    (tmp_path / "c.tflite").write_bytes(b"x")
    os.utime(default, (1, 1))                                    # the other model is newer: still the default
    assert resolve_model_path(str(tmp_path)) == str(default)
    assert resolve_model_path(str(tmp_path) + "/") == os.path.join(str(tmp_path) + "/", "mask_detector.keras")


def test_a_folder_with_one_model_means_it_and_with_several_is_an_error_listing_them(tmp_path):
    from runtime.model_files import resolve_model_path
    (tmp_path / "last.keras").write_bytes(b"x")
    assert resolve_model_path(str(tmp_path)) == str(tmp_path / "last.keras")
    (tmp_path / "best.keras").write_bytes(b"x")
    with pytest.raises(ModelLoadError) as error:
        resolve_model_path(str(tmp_path))
    assert str(error.value) == (f"{tmp_path}: 2 models and no mask_detector.keras; name one: "
                                f"{tmp_path / 'best.keras'}, {tmp_path / 'last.keras'}")


def test_the_checkpoints_folder_means_the_shipped_two_class_model():
    from runtime.model_files import resolve_model_path
    folder = os.path.join(REPO_ROOT, "checkpoints")
    assert resolve_model_path(folder + os.sep) == os.path.join(folder + os.sep, "mask_detector.keras")


def test_garbage_tflite_is_a_model_load_error(tmp_path):
    from runtime.adapters import TFLiteRuntime
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"this is not a flatbuffer at all")
    with pytest.raises(ModelLoadError, match=f"{garbage}: not a TFLite model"):
        TFLiteRuntime(str(garbage))


def test_postprocess_prefilter_gives_the_detections_of_nms_over_all_priors():
    """The shared postprocess runs NMS only on priors above the score threshold: same result as on all."""
    import tensorflow as tf

    from components.box_utils import batched_nms, decode_boxes
    from components.prior_box import priors_from_config
    from runtime.postprocessing import postprocess
    settings = DEFAULT_SETTINGS
    priors = priors_from_config(settings.model)
    generator = np.random.default_rng(0)
    predictions = generator.normal(0, 1, (3, len(priors), 7)).astype(np.float32)
    predictions[..., 4] += 2.5                                        # mostly background, as a trained model
    predictions[1, :, 4] += 5.0                                       # an image with almost nothing
    for threshold in (0.01, 0.3, 0.6):
        boxes = decode_boxes(predictions[..., :4], priors, settings.model.variances)
        scores = tf.nn.softmax(predictions[..., 4:], axis=-1)[..., 1:]
        expected = batched_nms(boxes, scores, threshold, settings.detect.nms_threshold,
                               settings.detect.max_number_keep)
        got = postprocess(predictions, priors, settings, threshold)
        np.testing.assert_array_equal(got[3].numpy(), expected[3].numpy())
        for index in range(3):
            count = int(expected[3][index])
            np.testing.assert_allclose(got[0][index, :count], expected[0][index, :count], atol=1e-6)
            np.testing.assert_array_equal(got[1][index, :count], expected[1][index, :count])
            np.testing.assert_array_equal(got[2][index, :count], expected[2][index, :count].numpy() + 1)


def test_preprocessing_matches_the_training_pipeline():
    from dataset.tf_dataset_preprocess import preprocess_for_inference
    from runtime.preprocessing import preprocess_images
    image = cv2.cvtColor(cv2.imread(SAMPLE_IMAGE), cv2.COLOR_BGR2RGB)
    small = image[:100, :150]
    portrait = image[:, :image.shape[0] // 2]
    for source in (image, small, portrait):                        # downscale, upscale, letterbox both ways
        for keep_aspect in (True, False):
            ours = preprocess_images([source], INPUT_SIZE, keep_aspect)[0]
            reference = preprocess_for_inference(source, INPUT_SIZE, keep_aspect).numpy()
            np.testing.assert_allclose(ours, reference, atol=1e-4)


@pytest.mark.parametrize("shape", [(480, 640), (640, 427), (300, 900), (241, 321)])
def test_letterboxed_boxes_map_back_to_the_image(shape):
    """A box placed where the letterbox puts a face comes back at that face's pixels."""
    import tensorflow as tf

    from components.letterbox import letterbox
    from dataset.tf_dataset_preprocess import prepare_for_evaluation
    from runtime.preprocessing import boxes_to_pixels, letterbox_shape
    height, width = shape
    face_px = np.array([[0.2 * width, 0.3 * height, 0.6 * width, 0.9 * height]], np.float32)
    image = np.zeros((height, width, 3), np.uint8)
    _, boxes = prepare_for_evaluation(tf.constant(image), tf.constant(face_px / np.float32([width, height, width, height])), INPUT_SIZE)
    padded = tuple(int(side) for side in letterbox(tf.constant(image), INPUT_SIZE)[1])
    assert padded == letterbox_shape(height, width, INPUT_SIZE)
    assert abs(padded[1] / padded[0] - INPUT_SIZE[1] / INPUT_SIZE[0]) < 0.01
    np.testing.assert_allclose(boxes_to_pixels(boxes.numpy(), image.shape, INPUT_SIZE), face_px, atol=1e-3)
    # stretched: normalised boxes are relative to the image itself
    np.testing.assert_allclose(boxes_to_pixels(face_px / [width, height, width, height], image.shape, INPUT_SIZE,
                                               keep_aspect=False), face_px, atol=1e-3)


@pytest.mark.parametrize("shape", [(480, 640), (640, 427), (300, 900), (241, 321)])
def test_image_pixels_per_input_pixel_is_the_letterbox_frame_over_the_input(shape):
    """A face of s input pixels spans s times this many pixels of the image, with and without the letterbox."""
    from runtime.preprocessing import boxes_to_pixels, image_pixels_per_input_pixel
    side = 24 / INPUT_SIZE[0]   # a box 24 px high at the input, normalised
    box_px = boxes_to_pixels(np.array([[0, 0, side, side]], np.float32), shape, INPUT_SIZE)[0]
    if box_px[3] < shape[0]:    # not clipped by the image
        assert box_px[3] == pytest.approx(24 * image_pixels_per_input_pixel(shape, INPUT_SIZE), rel=1e-4)
    stretched = image_pixels_per_input_pixel(shape, INPUT_SIZE, keep_aspect=False)
    assert stretched == pytest.approx(np.sqrt(shape[0] / INPUT_SIZE[0] * shape[1] / INPUT_SIZE[1]))


# --- command lines ------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["saved_model", "tflite", "tflite_int8", "onnx"])
def test_inference_runs_on_each_export(fmt, exports, int8_export, run_script, tmp_path):
    path = int8_export.path if fmt == "tflite_int8" else exports[fmt].path
    output = tmp_path / "annotated.jpg"
    run = run_script([INFERENCE, "--model_path", path, "--img_path", SAMPLE_IMAGE, "--output", str(output),
                      "--score_threshold", "0.01"])
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[-1] == f"annotated image written to {output}"
    assert " faces: " in lines[-2] and int(lines[-2].split()[0]) > 0
    assert cv2.imread(str(output)).shape == cv2.imread(SAMPLE_IMAGE).shape


@pytest.mark.slow
@pytest.mark.parametrize("name", ["garbage.onnx", "garbage.tflite"])
def test_non_model_file_is_one_line_error(name, run_script, tmp_path):
    garbage = tmp_path / name
    garbage.write_bytes(b"definitely not a model\n" * 10)
    run = run_script([INFERENCE, "--model_path", str(garbage), "--img_path", SAMPLE_IMAGE,
                      "--output", str(tmp_path / "out.jpg")])
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: {garbage}: ")
    assert not (tmp_path / "out.jpg").exists()


@pytest.mark.slow
def test_export_command_writes_the_model_with_its_spec_and_prints_the_check(tiny_model, run_script, tmp_path):
    from runtime.model_files import read_model_spec
    output = tmp_path / "cli.onnx"
    run = run_script([EXPORT, "--model_path", tiny_model, "--format", "onnx", "--output", str(output)])
    assert run.returncode == 0, run.stderr
    assert read_model_spec(str(output))["network"] == "rfb"   # the spec in metadata_props, no sidecar
    assert "raw outputs max |diff|" in run.stdout and "decoded boxes max |diff|" in run.stdout
    assert sorted(os.listdir(tmp_path)) == ["cli.onnx"]


@pytest.mark.slow
def test_export_command_rejects_a_non_keras_model(run_script, tmp_path):
    bogus = tmp_path / "bogus.keras"
    bogus.write_text("not a model")
    run = run_script([EXPORT, "--model_path", str(bogus), "--format", "tflite"])
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: {bogus}: ")
    assert sorted(os.listdir(tmp_path)) == ["bogus.keras"]
