"""The decoded ONNX export (export.py --format onnx_decoded, deploy/decoded_onnx.py) of a small rfb_pan model
(its top-down upsampling is the Resize OpenCV must read): only operations OpenCV 4.x / 5.x DNN import, the
layout of runtime.end_to_end_models (NCHW input, boxes and class probabilities out), the spec in
metadata_props, the check before publishing. The shipped model's file runs in the README snippets
(tests/test_runtimes_readme.py)."""
import json
import os

import numpy as np
import pytest

import deploy.decoded_onnx as decoded_onnx
from deploy.export import export_model_file
from deploy.export_common import ExportCheckError, ExportError, sample_image_paths

pytestmark = pytest.mark.slow    # each export converts a graph with tf2onnx (10 to 25 s on 2 cores)

# what the graph may hold: every op here is imported by OpenCV 4.7 to 5.1 DNN (no NonMaxSuppression,
# ReverseSequence, loops or shape arithmetic)
ALLOWED_OPS = {"Conv", "Relu", "Add", "Mul", "Sub", "Exp", "Concat", "Reshape", "Transpose", "Slice", "Softmax",
               "Resize", "Clip", "MaxPool", "AveragePool", "BatchNormalization"}


@pytest.fixture(scope="module")
def pan_model(tmp_path_factory):
    """A small random rfb_pan model (base_channel 4, 120x160) with its settings."""
    from conftest import make_tiny_cfg

    from network.network import build_model
    from training.trainer import export_model
    settings = make_tiny_cfg().replace(network="rfb_pan", base_channel=4)
    return export_model(build_model(settings), settings, str(tmp_path_factory.mktemp("pan")), name="pan.keras")


@pytest.fixture(scope="module")
def export(pan_model, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("decoded") / "pan_decoded.onnx")
    return export_model_file(pan_model, "onnx_decoded", output, log=lambda _: None)


def test_graph_holds_only_what_opencv_imports(export):
    import onnx
    model = onnx.load(export.path)
    ops = {node.op_type for node in model.graph.node}
    assert ops <= ALLOWED_OPS, ops - ALLOWED_OPS
    assert "Resize" in ops and {"Exp", "Softmax"} <= ops       # upsampling, box decoding, probabilities inside
    assert max(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")) == 13
    for node in model.graph.node:    # no deprecated resize mode (onnxruntime warns on every load)
        assert b"tf_half_pixel_for_nn" not in [attribute.s for attribute in node.attribute]
    (graph_input,) = model.graph.input
    dims = [dim.dim_value for dim in graph_input.type.tensor_type.shape.dim]
    assert graph_input.name == "input" and dims == [1, 3, 120, 160]
    outputs = {value.name: [dim.dim_value for dim in value.type.tensor_type.shape.dim] for value in model.graph.output}
    assert list(outputs) == ["boxes", "scores"]
    assert outputs["boxes"][2] == 4 and outputs["scores"][2] == 2 and outputs["boxes"][1] == outputs["scores"][1] > 0


def test_metadata_describes_the_file(export):
    meta = decoded_onnx.read_metadata(export.path)
    assert json.loads(meta["labels"]) == ["mask", "unmask"]
    assert json.loads(meta["input_size"]) == [120, 160]
    assert "NCHW" in meta["input"] and "127.5" in meta["input"] and "NMS" in meta["outputs"]
    assert json.loads(meta["nms_threshold"]) == pytest.approx(0.4)


def test_export_matches_the_keras_model_in_opencv_and_onnxruntime(export):
    assert export.check_images == len(sample_image_paths()) >= 2
    assert export.raw_max_diff <= 1e-3 and export.box_max_diff_px <= 0.1
    assert not [name for name in os.listdir(os.path.dirname(export.path)) if name.startswith(".")]


def test_adapter_gives_normalised_probabilities_and_boxes(export, pan_model):
    from runtime.end_to_end_models import DecodedOnnx, load_end_to_end
    from runtime.model_files import load_model_config
    model = load_end_to_end(export.path, load_model_config(pan_model))
    assert isinstance(model, DecodedOnnx)
    boxes, scores = model.outputs(np.zeros((120, 160, 3), np.float32))
    assert boxes.shape[1] == 4 and scores.shape == (len(boxes), 2)
    assert np.all(scores >= 0) and np.all(scores.sum(axis=1) <= 1 + 1e-5)


def test_raw_model_loader_names_a_decoded_file(export):
    from runtime.adapters import ModelLoadError, OnnxRuntime
    with pytest.raises(ModelLoadError, match="decoded ONNX"):
        OnnxRuntime(export.path)


def test_end_to_end_flag_is_refused(pan_model):
    from deploy.end_to_end import export_end_to_end_file
    with pytest.raises(ExportError, match="onnx_decoded: no --end_to_end"):
        export_end_to_end_file(pan_model, "onnx_decoded")


def test_failed_check_writes_nothing(pan_model, tmp_path, monkeypatch):
    monkeypatch.setattr(decoded_onnx, "FLOAT_BOX_TOLERANCE_PX", -1.0)    # no export can pass
    with pytest.raises(ExportCheckError, match="nothing written"):
        export_model_file(pan_model, "onnx_decoded", str(tmp_path / "x_decoded.onnx"), log=lambda _: None)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("export_format", ["onnx", "onnx_decoded"])
def test_an_upsampling_to_an_odd_side_exports_at_the_exact_size(export_format, tmp_path):
    """At 184x256 (as at the shipped 368x512) the neck upsamples 12 rows to 23: tf2onnx's scale 23/12 is not exact
    and gave 22 rows that do not add to 23; the Resize takes the size of the map it is added to."""
    import onnx
    from conftest import make_tiny_cfg

    from network.network import build_model
    from training.trainer import export_model
    settings = make_tiny_cfg().replace(network="rfb_pan", base_channel=4, input_size=(184, 256))
    model_file = export_model(build_model(settings), settings, str(tmp_path), name="odd.keras")
    report = export_model_file(model_file, export_format, str(tmp_path / f"odd_{export_format}.onnx"),
                               log=lambda _: None)   # checked against the Keras model before it is written
    resizes = [node for node in onnx.load(report.path).graph.node if node.op_type == "Resize"]
    assert resizes and all(len(node.input) == 4 and node.input[2] == "" for node in resizes)
