"""Model files that describe themselves (runtime/model_files.py, runtime/tflite_metadata.py): the spec
inside every format, the sidecar of older files as a fallback with a notice, files without a description
refused, damaged or foreign files named as such, the shipped models, exports that never touch the shipped
files, and the int8 calibration a fresh clone has (deploy/export.py)."""
import json
import os
import shutil
import struct
import zipfile

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, SAMPLE_IMAGES, SHIPPED_3CLASS_MODEL, SHIPPED_MODEL

from runtime.adapters import ModelLoadError
from runtime.model_files import (
    MODEL_CONFIG_KEYS,
    SPEC_FILE,
    load_model_config,
    model_config_path,
    read_model_spec,
)

SAMPLES = SAMPLE_IMAGES


def copy_without_spec(source, destination):
    """Copy a ``.keras`` file leaving its embedded spec out (what a file from before the spec looks like)."""
    with zipfile.ZipFile(source) as reader, zipfile.ZipFile(destination, "w") as writer:
        for item in reader.infolist():
            if item.filename != SPEC_FILE:
                writer.writestr(item, reader.read(item.filename))


def spec_sidecar(model_file, path):
    """Write the older sidecar of ``model_file`` (its spec's MODEL_CONFIG_KEYS) at ``path``."""
    spec = read_model_spec(model_file)
    with open(path, "w") as handle:
        json.dump({key: spec[key] for key in MODEL_CONFIG_KEYS}, handle)


# --- the shipped models -------------------------------------------------------------------------------

@pytest.mark.parametrize("path, classes, data", [
    (SHIPPED_MODEL, ["mask", "unmask"], ["train_mask.tfrecord", "train_ilc.tfrecord"]),
    (SHIPPED_3CLASS_MODEL, ["mask", "unmask", "incorrect"], ["ilc2021_train.tfrecord"])])
def test_shipped_models_carry_their_spec(path, classes, data):
    spec = read_model_spec(path)
    assert spec["classes"] == classes and spec["labels_list"] == ["background", *classes]
    assert spec["training_data"] == data and spec["network"] == "rfb_pan" and len(spec["input_size"]) == 2
    assert spec["input"]["color"] == "RGB" and spec["input"]["mean"] == spec["input"]["std"] == 127.5
    assert spec["variances"] == [0.1, 0.2] and len(spec["min_sizes"]) == len(spec["steps"])
    with zipfile.ZipFile(path) as archive:   # the Keras entries are all still there
        assert {"config.json", "metadata.json", "model.weights.h5"} <= set(archive.namelist())


@pytest.mark.slow
def test_a_keras_file_copied_alone_detects_exactly_as_with_its_sidecar(tmp_path):
    from components.config import DEFAULT_SETTINGS
    from runtime.detector import Detector
    (tmp_path / "alone").mkdir()
    (tmp_path / "older").mkdir()
    alone = shutil.copy(SHIPPED_MODEL, tmp_path / "alone")
    older = str(tmp_path / "older" / "mask_detector.keras")
    copy_without_spec(SHIPPED_MODEL, older)
    spec_sidecar(SHIPPED_MODEL, model_config_path(older))   # the sidecar an older release wrote beside it
    assert os.listdir(tmp_path / "alone") == ["mask_detector.keras"]
    images = [cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB) for path in SAMPLES]
    base = DEFAULT_SETTINGS.replace(flip_test=False, test_scales=[1])
    found = [Detector.from_path(str(path), base).detect_batch(images) for path in (alone, older)]
    assert sum(len(detections) for detections in found[0]) >= 9
    for mine, theirs in zip(*found):
        assert np.array_equal(mine.boxes, theirs.boxes) and np.array_equal(mine.scores, theirs.scores)
        assert list(mine.labels()) == list(theirs.labels())


# --- older files, files without a description, damaged and foreign files -------------------------------

def test_an_older_file_reads_its_sidecar_with_one_notice(tiny_model, tmp_path):
    older = str(tmp_path / "older.keras")
    copy_without_spec(tiny_model, older)
    spec_sidecar(tiny_model, model_config_path(older))
    notices = []
    for _ in range(2):
        spec = load_model_config(older, notice=notices.append).model
        assert spec.network == "slim" and spec.base_channel == 4
    assert len(notices) == 1 and notices[0].startswith(f"note: {older}: ") and "older.json" in notices[0]
    assert "\n" not in notices[0]
    assert load_model_config(tiny_model, notice=notices.append).model.network == "slim" and len(notices) == 1


def test_a_model_file_without_any_description_is_refused_in_one_line(tiny_model, tmp_path, capsys):
    import inference
    bare = str(tmp_path / "bare.keras")
    copy_without_spec(tiny_model, bare)
    with pytest.raises(ModelLoadError, match="does not describe itself"):
        load_model_config(bare)
    status = inference.main(["--model_path", bare, "--img_path", SAMPLES[0], "--output", str(tmp_path / "o.jpg")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2 and lines[-1].startswith(f"error: {bare}: the model file does not describe itself")
    assert "bare.json" in lines[-1] and not (tmp_path / "o.jpg").exists()


def damaged_files(folder, tiny_model):
    """{path: fragment of the error} for model files that exist but are damaged or foreign."""
    data = open(tiny_model, "rb").read()
    cases = {"truncated.keras": (data[:len(data) // 2], "not a loadable Keras model (damaged"),
             "keras_renamed.tflite": (data, "not a TFLite model"),
             "truncated.tflite": (struct.pack("<I", 1 << 20) + b"TFL3" + b"\0" * 16, "damaged TFLite model"),
             "photo.onnx": (open(SAMPLES[0], "rb").read(), "not a loadable ONNX model (damaged"),
             "photo.keras": (open(SAMPLES[0], "rb").read(), "not a loadable Keras model (damaged")}
    result = {}
    for name, (content, fragment) in cases.items():
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(content)
        result[os.path.join(folder, name)] = fragment
    foreign = os.path.join(folder, "foreign.keras")   # a zip archive, but not a Keras model
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("notes.txt", "hello")
    result[foreign] = "a zip archive without the Keras config.json"
    return result


def test_damaged_or_foreign_model_files_are_named_as_such(tiny_model, tmp_path):
    from runtime.detector import Detector
    for path, fragment in damaged_files(str(tmp_path), tiny_model).items():
        with pytest.raises(ModelLoadError) as raised:
            Detector.from_path(path)
        message = str(raised.value)
        assert message.startswith(f"{path}: ") and fragment in message and "not found" not in message, message
        assert "\n" not in message


# --- the spec inside a TFLite file ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_tflite():
    """A tiny float TFLite flatbuffer (x * 2 over [1, 4]), converted once."""
    import tensorflow as tf
    function = tf.function(lambda x: x * 2.0, input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    return tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()]).convert()


def test_tflite_metadata_buffers_and_associated_files_round_trip(small_tflite):
    from runtime.adapters import tflite_interpreter
    from runtime.tflite_metadata import associated_files, output_count, read_metadata, with_metadata
    first = with_metadata(small_tflite, {"facemask_spec": b'{"a": 1}', "other": b"x"}, {"labels.txt": b"a\nb\n"})
    assert read_metadata(first)["facemask_spec"] == b'{"a": 1}' and associated_files(first) == {"labels.txt":
                                                                                                 b"a\nb\n"}
    second = with_metadata(first, {"facemask_spec": b'{"a": 2}'})   # replaced by name, the others kept
    metadata = read_metadata(second)
    assert metadata["facemask_spec"] == b'{"a": 2}' and metadata["other"] == b"x" and associated_files(second) == {}
    assert output_count(second) == 1
    interpreter = tflite_interpreter(model_content=second)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.ones([1, 4], np.float32))
    interpreter.invoke()
    assert interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).tolist() == [[2.0] * 4]


def test_object_detector_metadata_is_an_m001_flatbuffer_with_the_labels_file():
    from runtime.tflite_metadata import LABELS_FILE, METADATA_IDENTIFIER, object_detector_metadata
    data = object_detector_metadata("n", "d", "1", ["mask", "unmask"], (240, 320))
    assert data[4:8] == METADATA_IDENTIFIER
    for text in (b"location", b"category", b"score", b"number of detections", LABELS_FILE.encode(), b"image"):
        assert text in data


# --- exports: outputs under runs/, never beside a tracked model ----------------------------------------

def test_default_export_outputs_are_under_runs_export():
    from deploy.end_to_end import end_to_end_output
    from deploy.export import default_output
    folder = os.path.join(REPO_ROOT, "runs", "export")
    assert default_output(SHIPPED_MODEL, "onnx") == os.path.join(folder, "mask_detector.onnx")
    assert end_to_end_output(SHIPPED_MODEL, "tflite_int8") == os.path.join(folder, "mask_detector_e2e_int8.tflite")


@pytest.mark.slow
def test_an_onnx_export_beside_a_model_leaves_its_sidecar_alone(tiny_model, tmp_path):
    from deploy.export import export_model_file
    model = shutil.copy(tiny_model, tmp_path / "tiny.keras")
    sidecar = tmp_path / "tiny.json"
    sidecar.write_text('{"a": "sidecar of tiny.keras"}')
    report = export_model_file(str(model), "onnx", str(tmp_path / "tiny.onnx"), log=lambda message: None)
    assert sidecar.read_text() == '{"a": "sidecar of tiny.keras"}'
    assert sorted(os.listdir(tmp_path)) == ["tiny.json", "tiny.keras", "tiny.onnx"]
    assert read_model_spec(report.path)["input_size"] == read_model_spec(tiny_model)["input_size"]


# --- int8 calibration on a fresh clone ------------------------------------------------------------------

def test_the_shipped_calibration_set_is_small_and_from_both_training_sets():
    from deploy.export_common import CALIBRATION_EXTENSIONS, SHIPPED_CALIBRATION_DIR
    names = os.listdir(SHIPPED_CALIBRATION_DIR)
    images = [name for name in names if name.lower().endswith(CALIBRATION_EXTENSIONS)]
    assert len(images) >= 30 and sum(os.path.getsize(os.path.join(SHIPPED_CALIBRATION_DIR, name))
                                     for name in names) <= 1_000_000
    assert {name.split("_")[0] for name in images} == {"maskdata", "ilc2021"}


def test_calibration_without_tfrecords_uses_the_shipped_set_and_counts_true(monkeypatch, tmp_path):
    from deploy import export_common as export
    monkeypatch.setattr(export, "DEFAULT_CALIBRATION_TFRECORD", str(tmp_path / "missing.tfrecord"))
    lines = []
    images = export.load_calibration((120, 160), 300, log=lines.append)
    assert len(images) == len(os.listdir(export.SHIPPED_CALIBRATION_DIR)) and images[0].shape == (1, 120, 160, 3)
    assert lines == [f"calibrating on {len(images)} images of {export.SHIPPED_CALIBRATION_DIR} (the set the "
                     "repository ships; --calibration_images DIR for your own), all it holds (--num_calibration 300)"]
    assert -1.0 <= images[0].min() and images[0].max() <= 1.0
    mine = tmp_path / "mine"
    mine.mkdir()
    for index in range(3):
        shutil.copy(SAMPLES[index % 2], mine / f"{index}.jpg")
    (mine / "notes.txt").write_text("not an image")
    assert len(export.load_calibration((120, 160), 2, images_dir=str(mine), log=lines.append)) == 2
    assert lines[-1] == f"calibrating on 2 images of {mine}"
    (tmp_path / "empty").mkdir()
    with pytest.raises(export.ExportError, match="no readable image"):
        export.load_calibration((120, 160), 5, images_dir=str(tmp_path / "empty"))


def test_export_command_refuses_a_missing_calibration_folder_in_one_line(tiny_model, tmp_path, capsys):
    from cli.export import main
    status = main(["--model_path", tiny_model, "--format", "tflite_int8", "--calibration_images",
                   str(tmp_path / "nowhere")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2 and lines == [f"error: {tmp_path / 'nowhere'}: calibration image folder not found"]


@pytest.mark.slow
def test_int8_export_command_on_a_fresh_clone(tiny_model, run_script, tmp_path):
    """No TFRecords: calibration from the named images, a missing --val_tfrecord skipped with a note."""
    output = tmp_path / "tiny_int8.tflite"
    run = run_script(["export.py", "--model_path", tiny_model, "--format", "tflite_int8", "--output", str(output),
                      "--calibration_images", os.path.join("assets", "calibration"), "--num_calibration", "5",
                      "--val_tfrecord", str(tmp_path / "val_mask.tfrecord")])
    assert run.returncode == 0, run.stderr
    assert f"calibrating on 5 images of {os.path.join('assets', 'calibration')}" in run.stdout
    assert f"note: --val_tfrecord {tmp_path / 'val_mask.tfrecord'}: not found, its val mAP check skipped" in run.stderr
    assert os.listdir(tmp_path) == ["tiny_int8.tflite"] and read_model_spec(str(output))["network"] == "slim"


def test_a_model_of_other_classes_loads_with_the_default_settings(tmp_path):
    """The default label aliases name mask / unmask; a model of other classes still loads (aliases of classes it
    lacks describe data, not the model) and carries its own classes."""
    from components.config import DEFAULT_SETTINGS
    from runtime.model_files import load_model_config, publish_model

    def write_archive(path):   # a stand-in .keras archive
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("config.json", "{}")
    own = DEFAULT_SETTINGS.replace(labels_list=["background", "person"], label_aliases={"person": "person"})
    output = publish_model(write_archive, str(tmp_path / "person.keras"), own)
    loaded = load_model_config(output)
    assert loaded.model.labels_list == ("background", "person")
    assert set(loaded.data.label_aliases.values()) == {"ignore"}   # the mask / unmask aliases left out
    assert load_model_config(SHIPPED_MODEL).data.label_aliases == DEFAULT_SETTINGS.data.label_aliases
