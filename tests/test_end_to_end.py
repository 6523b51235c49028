"""Tests of the end-to-end exports (export.py --end_to_end: deploy/end_to_end.py, runtime/end_to_end_models.py):
the in-graph letterbox against the Python one, each format of the shipped model against
runtime.detector.Detector (on images and in mAP.evaluation.evaluate). The README's snippets of these files
run in tests/test_runtimes_readme.py."""
import os

import cv2
import numpy as np
import pytest
from conftest import SAMPLE_IMAGE, SHIPPED_MODEL

import cli.export as export_cli
import deploy.end_to_end as end_to_end
from deploy.export_common import OUTPUT_SUFFIX, ExportCheckError

FORMATS = ("saved_model", "tflite", "tflite_int8", "onnx")
FLOAT_FORMATS = ("saved_model", "tflite", "onnx")


def end_to_end_name(fmt):
    """File name of the end-to-end export of the shipped model, as in the README."""
    return "mask_detector" + end_to_end.END_TO_END_INFIX + OUTPUT_SUFFIX[fmt]


@pytest.fixture(scope="module")
def exports(tmp_path_factory, voc_mini_tfrecords):
    """{format: ExportReport} of the shipped model's end-to-end exports in a ``checkpoints`` folder (int8
    calibrated on the 6 voc_mini training images)."""
    folder = tmp_path_factory.mktemp("e2e") / "checkpoints"
    return {fmt: end_to_end.export_end_to_end_file(SHIPPED_MODEL, fmt, str(folder / end_to_end_name(fmt)),
                                               calibration_tfrecord=voc_mini_tfrecords["train"], num_calibration=6,
                                               flip_test=True, log=lambda message: None)   # TTA graph, opt-in
            for fmt in FORMATS}


@pytest.fixture(scope="module")
def reference():
    from components.config import DEFAULT_SETTINGS
    from runtime.detector import Detector
    return Detector.from_path(SHIPPED_MODEL, DEFAULT_SETTINGS.replace(test_scales=[1], flip_test=True))   # as `exports`


def sample_rgb():
    return cv2.cvtColor(cv2.imread(SAMPLE_IMAGE), cv2.COLOR_BGR2RGB)


# --- graph pieces against the Python path (no export) ------------------------------------------------

@pytest.mark.parametrize("shape", [(572, 950), (400, 200), (240, 320), (37, 1001), (1, 1)])
def test_letterbox_graph_matches_preprocess_images(shape):
    from deploy.end_to_end import letterbox_graph
    from runtime.preprocessing import letterbox_shape, preprocess_images
    image = cv2.resize(sample_rgb(), (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    inputs, scale = letterbox_graph(image[None], (240, 320))
    np.testing.assert_allclose(inputs.numpy(), preprocess_images([image], (240, 320)), atol=2e-4, rtol=0)
    padded_h, padded_w = letterbox_shape(*shape, (240, 320))
    np.testing.assert_allclose(scale.numpy(), [[padded_h / shape[0], padded_w / shape[1]]], rtol=1e-6)


def test_postprocess_signature_carries_our_box_coding():
    from components.config import DEFAULT_SETTINGS
    from deploy.end_to_end import tflite_postprocess_signature
    signature = tflite_postprocess_signature(2, DEFAULT_SETTINGS, 0.01, 200)
    assert signature.startswith('name: "TFLite_Detection_PostProcess"')
    for expected in ('key: "y_scale" value { f: 10.0 }', 'key: "h_scale" value { f: 5.0 }',
                     'key: "use_regular_nms" value { b: true }', 'key: "num_classes" value { i: 2 }',
                     'key: "max_detections" value { i: 200 }', 'key: "nms_iou_threshold" value { f: 0.4 }'):
        assert expected in signature


def test_compare_detections_pairs_by_class_and_overlap():
    from deploy.end_to_end import compare_detections
    from runtime.postprocessing import Detections
    reference = Detections(np.array([[10, 10, 50, 50], [100, 100, 150, 160]], np.float32),
                           np.array([0.9, 0.6], np.float32), np.array([1, 2]), ["background", "mask", "unmask"])
    same = Detections(reference.boxes + 0.25, reference.scores - 0.01, reference.classes, reference.class_names)
    result = compare_detections(reference, same, 0.5)
    assert result == {"reference": 2, "missed": 0, "extra": 0, "box_px": 0.25, "score": pytest.approx(0.01)}
    other_class = Detections(reference.boxes, reference.scores, np.array([2, 2]), reference.class_names)
    result = compare_detections(reference, other_class, 0.5)
    assert result["missed"] == 1 and result["extra"] == 1


# --- the exports of the shipped model -----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_end_to_end_export_is_checked_against_the_python_path(fmt, exports, reference):
    from deploy.end_to_end import compare_detections
    from runtime.end_to_end_models import load_end_to_end
    report = exports[fmt]
    assert isinstance(report, end_to_end.EndToEndReport) and report.flip_test and report.check_images == 2
    assert report.detections["reference"] >= 5                   # the sample images have faces to compare
    assert not [name for name in os.listdir(os.path.dirname(report.path)) if name.startswith(".")]   # no staging left
    # a tall crop of a sample image, padded on the right (the sample images are wide, padded at the bottom)
    tall = np.ascontiguousarray(sample_rgb()[:, 300:700])
    model = load_end_to_end(report.path, reference.settings)
    result = compare_detections(reference.detect(tall), model.detect(tall, 0.48), 0.5)
    if fmt in FLOAT_FORMATS:
        assert report.detections["missed"] == report.detections["extra"] == 0
        assert report.detections["box_px"] <= end_to_end.E2E_BOX_TOLERANCE_PX
        assert report.detections["score"] <= end_to_end.E2E_SCORE_TOLERANCE
        assert result["reference"] > 0 and result["missed"] == result["extra"] == 0
        assert result["box_px"] <= end_to_end.E2E_BOX_TOLERANCE_PX and result["score"] <= end_to_end.E2E_SCORE_TOLERANCE
    else:   # int8: the same faces, boxes within a few pixels
        assert report.detections["missed"] <= 1 and report.detections["extra"] <= 1
        assert result["missed"] <= 1 and result["box_px"] < 8
    if fmt.startswith("tflite"):
        with open(report.labels_path) as handle:
            assert handle.read().split() == ["mask", "unmask"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FLOAT_FORMATS)
def test_end_to_end_model_is_evaluated_like_the_detector(fmt, exports, reference, voc_mini_tfrecords):
    """mAP.evaluation.evaluate runs an end-to-end file through ``detect_inputs`` (the letterboxed network inputs
    of the records): the float exports find what the Python path finds on them."""
    from deploy.end_to_end import compare_detections
    from mAP.evaluation import evaluate, evaluation_batches
    from runtime.end_to_end_models import Uint8ImageModel, load_end_to_end
    model = load_end_to_end(exports[fmt].path, reference.settings)
    inputs = next(iter(evaluation_batches(voc_mini_tfrecords["val"], reference.settings, 4)))[0].numpy()
    height, width = reference.settings.model.input_size
    scale = np.array([width, height, width, height], np.float32)
    for want, got in zip(reference.detect_inputs(inputs, 0.3), model.detect_inputs(inputs, 0.3 - 0.02)):
        # network input pixels; the uint8-input graphs clip boxes to the image, the Python path's normalised
        # boxes are not clipped
        want.boxes, got.boxes = np.clip(want.boxes, 0.0, 1.0) * scale, got.boxes * scale
        result = compare_detections(want, got, 0.3)
        assert result["missed"] == result["extra"] == 0 and result["box_px"] < 0.5 and result["score"] < 0.01
    assert evaluate(model, voc_mini_tfrecords["val"]).mean_ap == pytest.approx(
        evaluate(OnUint8Inputs(reference) if isinstance(model, Uint8ImageModel) else reference,
                 voc_mini_tfrecords["val"]).mean_ap, abs=0.005)


class OnUint8Inputs:
    """``detector`` fed what an end-to-end file taking uint8 images is fed in ``evaluate``: each network input
    rounded to the uint8 image it was made of (a marginal detection of the 368x512 model moves with that)."""

    def __init__(self, detector):
        self.detector, self.settings = detector, detector.settings

    def detect_inputs(self, inputs, score_threshold=None):
        from runtime.end_to_end_models import network_input_to_uint8
        rounded = np.stack([network_input_to_uint8(image) for image in inputs]).astype(np.float32) / 127.5 - 1.0
        return self.detector.detect_inputs(rounded, score_threshold)


@pytest.mark.slow
def test_tflite_outputs_are_the_postprocess_op_outputs_in_order(exports):
    from tensorflow.lite.tools import flatbuffer_utils

    from deploy.end_to_end import TFLITE_OUTPUT_NAMES
    model = flatbuffer_utils.read_model(exports["tflite"].path)
    subgraph = model.subgraphs[0]
    custom = [op for op in subgraph.operators if model.operatorCodes[op.opcodeIndex].customCode]
    assert len(custom) == 1 and model.operatorCodes[custom[0].opcodeIndex].customCode == b"TFLite_Detection_PostProcess"
    assert list(subgraph.outputs) == list(custom[0].outputs)
    assert [subgraph.tensors[index].name.decode() for index in subgraph.outputs] == list(TFLITE_OUTPUT_NAMES)
    # the converter drops detections_per_class; without it the kernel keeps 100 per class, not max_number_keep
    from flatbuffers import flexbuffers
    options = flexbuffers.Loads(bytes(custom[0].customOptions))
    assert options["detections_per_class"] == options["max_detections"] == 200
    assert options["use_regular_nms"] and options["num_classes"] == 2


@pytest.mark.slow
def test_int8_model_keeps_the_scores_in_float(exports):
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    from deploy.end_to_end import TFLITE_FLOAT_SCOPE
    subgraph = flatbuffer_utils.read_model(exports["tflite_int8"].path).subgraphs[0]
    types = {tensor.name.decode(): tensor.type for tensor in subgraph.tensors}
    network_output = [name for name in types if "/predictions" in name]   # the Keras model's last layer
    assert network_output and all(types[name] == schema.TensorType.INT8 for name in network_output)
    softmax = [name for name in types if name.startswith(TFLITE_FLOAT_SCOPE + "/Softmax")]
    assert softmax and all(types[name] == schema.TensorType.FLOAT32 for name in softmax)


@pytest.mark.slow
def test_onnx_export_holds_non_max_suppression(exports):
    import onnx
    graph = onnx.load(exports["onnx"].path).graph
    assert "NonMaxSuppression" in {node.op_type for node in graph.node}
    assert [value.name for value in graph.input] == ["input_tensor"]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


@pytest.mark.slow
def test_saved_model_bytes_signature_gives_the_image_signature_detections(exports):
    import tensorflow as tf

    from runtime.end_to_end_models import ENCODED_SIGNATURE, IMAGE_SIGNATURE
    loaded = tf.saved_model.load(exports["saved_model"].path)
    images = [sample_rgb(), np.ascontiguousarray(sample_rgb()[:300, ::-1])]      # two sizes in one batch
    encoded = [cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes() for image in images]
    from_bytes = loaded.signatures[ENCODED_SIGNATURE](encoded_images=tf.constant(encoded))
    for index, image in enumerate(images):     # PNG is lossless: decoded in the graph, the same pixels
        from_array = loaded.signatures[IMAGE_SIGNATURE](input_tensor=tf.constant(image[None]))
        count = int(from_array["num_detections"][0])
        assert count == int(from_bytes["num_detections"][index]) and count > 0
        np.testing.assert_allclose(from_bytes["detection_boxes"][index, :count], from_array["detection_boxes"][0, :count],
                                   atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FLOAT_FORMATS)
def test_raw_model_loader_names_an_end_to_end_file(fmt, exports):
    from runtime.adapters import ModelLoadError
    from runtime.detector import Detector
    with pytest.raises(ModelLoadError, match="end-to-end export"):
        Detector.from_path(exports[fmt].path)


@pytest.mark.slow
def test_failed_check_writes_nothing(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(end_to_end, "E2E_BOX_TOLERANCE_PX", -1.0)    # no export can pass
    output = tmp_path / "tiny_e2e_saved_model"
    with pytest.raises(ExportCheckError, match="nothing written"):
        end_to_end.export_end_to_end_file(tiny_model, "saved_model", str(output), log=lambda message: None)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("flag", ["--flip_test", "--no_flip_test"])
def test_flip_test_flags_without_end_to_end_are_a_usage_error(tiny_model, capsys, flag):
    assert export_cli.main(["--model_path", tiny_model, "--format", "onnx", flag]) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: {flag}: only with --end_to_end")


@pytest.mark.slow
def test_end_to_end_export_is_one_pass_unless_the_flip_test_is_asked_for(tiny_model, tmp_path):
    """The default export is what apps run: one network pass; ``flip_test=True`` puts the flip test in."""
    single = end_to_end.export_end_to_end_file(tiny_model, "saved_model", str(tmp_path / "single"),
                                               log=lambda message: None)
    assert not single.flip_test
