"""Model files: the description (spec) every model file carries inside, finding the model a path means, and
the one writer that publishes a model file (or SavedModel folder) atomically with its spec embedded.

The spec (:func:`model_spec`) is what a runtime needs to use the file: classes, input size, anchors
(``min_sizes``, ``steps``), box coding (``variances``, ``clip``), the network that rebuilds the model
(``network``, ``base_channel``, ``head_context``), the input normalisation and the training data. It travels
inside each format (:func:`embed_spec`, read back by :func:`read_model_spec`):

==============  ============================================================================================
``.keras``      a JSON entry ``facemask_spec.json`` in the zip archive (``keras.models.load_model`` ignores it)
``.tflite``     a ``metadata`` buffer ``facemask_spec`` (JSON); end-to-end detectors also get the TFLite Model
                Metadata of MediaPipe / the Task Library (``runtime/tflite_metadata.py``)
``.onnx``       ``metadata_props`` key ``facemask_spec`` (JSON; ``labels``: the class names, JSON)
SavedModel      ``assets/facemask_spec.json`` inside the folder
==============  ============================================================================================

Older files kept their settings (``MODEL_CONFIG_KEYS``) in a ``name.json`` sidecar beside the file (or
``model_config.json`` inside a SavedModel folder): :func:`load_model_config` still reads it, with a one-line
notice; a model file with neither is refused (its classes and anchors would be guesses).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from typing import TYPE_CHECKING

from components.atomic_io import staging_folder, write_text_atomically
from components.config import DEFAULT_SETTINGS, IGNORE_LABEL, group_keys
from components.errors import ProjectError, os_error
from runtime.adapters import ModelLoadError, first_line, is_saved_model_dir

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from components.config import Settings

# the fields of the model spec (components.config.ModelSpec) that rebuild and run the model (all but its record
# of the training data)
MODEL_CONFIG_KEYS = tuple(key for key in group_keys("model") if key != "training_data")
SIDECAR_SUFFIX = ".json"
INNER_CONFIG_NAME = "model_config.json"   # older SavedModel folders: the config kept inside
MODEL_EXTENSIONS = (".keras",)            # what a folder passed as a model path is searched for
DEFAULT_MODEL_NAME = "mask_detector.keras"   # the model a folder means when it holds several (the shipped one)
SPEC_KEY = "facemask_spec"                # TFLite metadata name, ONNX metadata_props key
SPEC_FILE = SPEC_KEY + ".json"            # entry of a .keras archive, file in a SavedModel's assets/
SPEC_VERSION = 1
INPUT_DESCRIPTION = {
    "layout": "NHWC", "color": "RGB", "dtype": "float32", "mean": 127.5, "std": 127.5,
    "normalisation": "(pixel - 127.5) / 127.5, pixels 0..255 -> [-1, 1]",
    "resize": "letterbox: pad the bottom / right with 127 to the input's aspect ratio, then bilinear resize",
}
BOX_CODING = ("SSD offsets per prior (cx, cy, w, h normalised to the input; min_sizes per feature-map step): "
              "centre = prior centre + offset * variances[0] * prior size, size = prior size * "
              "exp(offset * variances[1]); then class-wise NMS")
_noticed: set[str] = set()   # model files whose sidecar notice was given (one line per file and process)


def model_config_path(model_file: str) -> str:
    """Path of the older JSON sidecar of a model: beside the file or folder, ``<stem>.json``."""
    return os.path.splitext(os.path.normpath(model_file))[0] + SIDECAR_SUFFIX


def training_data_names(paths: Sequence[str]) -> list[str]:
    """The file names (no folders) of the training TFRecords ``paths``, each once, in order."""
    names: list[str] = []
    for path in paths:
        name = os.path.basename(str(path))
        if name and name not in names:
            names.append(name)
    return names


def model_spec(settings: Settings, training_data: Sequence[str] | None = None) -> dict[str, Any]:
    """The description a model file carries (JSON-ready dict): ``settings.model`` (what rebuilds and runs the
    model, :class:`components.config.ModelSpec`), the input normalisation, the box coding and the training data
    (``training_data``, default the spec's own record of a model read from a file, else the names of
    ``settings.data.train_tfrecord``)."""
    spec: dict[str, Any] = {"spec_version": SPEC_VERSION}
    model = settings.model.as_dict()
    spec.update({key: model[key] for key in MODEL_CONFIG_KEYS})
    spec["classes"] = list(settings.model.labels_list[1:])   # the detected classes (labels_list without background)
    spec["input"] = dict(INPUT_DESCRIPTION)
    spec["box_coding"] = BOX_CODING
    if training_data is None:   # a model loaded from a file repeats its own; a trained one names its TFRecords
        training_data = settings.model.training_data or training_data_names(settings.data.train_tfrecord)
    spec["training_data"] = list(training_data)
    return spec


def _parse_spec(text, where):
    try:
        spec = json.loads(text)
        if not isinstance(spec, dict) or "labels_list" not in spec:
            raise ValueError("expected a JSON object with labels_list")
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"{where}: damaged model spec ({error})") from None
    return spec


def _keras_archive(model_file):
    """The zip archive of a ``.keras`` file; ModelLoadError when the file is not one (damaged / foreign)."""
    try:
        return zipfile.ZipFile(model_file)
    except zipfile.BadZipFile:
        raise ModelLoadError(f"{model_file}: not a loadable Keras model (damaged or not a .keras file: not a zip "
                             "archive)") from None
    except OSError as error:
        raise ModelLoadError(f"{model_file}: cannot read ({error.strerror or error})") from None


def _onnx_metadata(model_file):
    """metadata_props of an ``.onnx`` file ({key: value}); ModelLoadError for a file that is not ONNX."""
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        try:
            model = onnx.load(model_file, load_external_data=False)
        except Exception as error:  # noqa: BLE001  (protobuf raises DecodeError and others)
            raise ModelLoadError(f"{model_file}: not a loadable ONNX model (damaged or not an ONNX file: "
                                 f"{first_line(error)})") from None
        if not model.graph.node and not model.graph.output:
            raise ModelLoadError(f"{model_file}: not a loadable ONNX model (damaged or not an ONNX file: no graph)")
        return {prop.key: prop.value for prop in model.metadata_props}
    from runtime.adapters import onnx_session
    return dict(onnx_session(model_file).get_modelmeta().custom_metadata_map)


def read_model_spec(model_file: str) -> dict[str, Any] | None:
    """The spec embedded in a model file or SavedModel folder (dict), or None when it carries none (an older
    file). Raises ModelLoadError naming the file when it is damaged or not a model of its type."""
    if is_saved_model_dir(model_file):
        for path in (os.path.join(model_file, "assets", SPEC_FILE), os.path.join(model_file, INNER_CONFIG_NAME)):
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as handle:
                    return _parse_spec(handle.read(), path)
        return None
    if os.path.isdir(model_file) or not os.path.isfile(model_file):
        return None
    extension = os.path.splitext(model_file)[1].lower()
    if extension == ".keras":
        with _keras_archive(model_file) as archive:
            names = archive.namelist()
            if "config.json" not in names:
                raise ModelLoadError(f"{model_file}: not a loadable Keras model (a zip archive without the Keras "
                                     "config.json: damaged or not a .keras file)")
            if SPEC_FILE not in names:
                return None
            return _parse_spec(archive.read(SPEC_FILE), model_file)
    if extension == ".tflite":
        from runtime.tflite_metadata import MetadataError, read_metadata
        try:
            with open(model_file, "rb") as handle:
                entries = read_metadata(handle.read())
        except MetadataError as error:
            raise ModelLoadError(f"{model_file}: {error}") from None
        return _parse_spec(entries[SPEC_KEY], model_file) if SPEC_KEY in entries else None
    if extension == ".onnx":
        props = _onnx_metadata(model_file)
        return _parse_spec(props[SPEC_KEY], model_file) if SPEC_KEY in props else None
    return None


def _notice(message) -> None:
    print(message, file=sys.stderr)


def load_model_config(model_file: str, base: Settings | None = None,
                      notice: Callable[[str], None] = _notice) -> Settings:
    """``base`` (default: components/config.py's defaults) with the model spec of ``model_file``
    (``settings.model``): from the spec embedded in the file, else from an older file's sidecar (then ``notice``
    gets one line, once per file). Raises ModelLoadError naming the file when it is damaged, or carries no spec
    and has no sidecar (its classes, input size and anchors are unknown)."""
    saved = read_model_spec(model_file)
    if saved is None:
        path = model_config_path(model_file)
        if not os.path.isfile(path):
            raise ModelLoadError(
                f"{model_file}: the model file does not describe itself (no embedded spec) and has no sidecar "
                f"{os.path.basename(path)}: its classes, input size and anchors are unknown (write them in "
                f"{path}: {', '.join(MODEL_CONFIG_KEYS[:4])}, ...)")
        try:
            with open(path, encoding="utf-8") as handle:
                saved = json.load(handle)
            if not isinstance(saved, dict):
                raise ValueError("expected a JSON object")
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"{path}: unreadable model config ({error})") from None
        key = os.path.abspath(model_file)
        if notice is not None and key not in _noticed:
            _noticed.add(key)
            notice(f"note: {model_file}: an older model file without its spec inside; settings read from "
                   f"{os.path.basename(path)} beside it")
    # only the model's own spec: inference settings (thresholds, keep_aspect) stay the caller's; the caller's
    # label aliases that name classes the model lacks are left out (they describe data, not this model: the
    # commands that read data compare its classes with the model's and say so)
    base = base or DEFAULT_SETTINGS
    spec = {key: value for key, value in saved.items() if key in MODEL_CONFIG_KEYS}
    classes = spec.get("labels_list", base.model.labels_list)
    aliases = {label: name for label, name in base.data.label_aliases.items()
               if name == IGNORE_LABEL or name in classes}
    return base.replace(**spec, label_aliases=aliases,
                        training_data=saved.get("training_data") or ())   # what an export's spec repeats


def _embed_keras(path, text):
    if not zipfile.is_zipfile(path):
        raise ProjectError(f"{path}: not a .keras archive (a zip file): cannot embed the model spec")
    with zipfile.ZipFile(path, "a") as archive:
        if SPEC_FILE in archive.namelist():
            raise ProjectError(f"{path}: already holds {SPEC_FILE}")
        archive.writestr(SPEC_FILE, text)


def _embed_tflite(path, spec, text) -> None:
    from runtime.tflite_metadata import with_metadata
    with open(path, "rb") as handle:
        data = handle.read()
    entries, files = {SPEC_KEY: text.encode("utf-8")}, None
    detector = detector_tflite_metadata(data, spec)
    if detector is not None:
        entries.update(detector[0])
        files = detector[1]
    with open(path, "wb") as handle:
        handle.write(with_metadata(data, entries, files))


def detector_tflite_metadata(model_bytes: bytes,
                             spec: dict[str, Any]) -> tuple[dict[str, bytes], dict[str, bytes]] | None:
    """({metadata name: bytes}, {associated file: bytes}) of the TFLite Model Metadata for an end-to-end
    TFLite detector (one image input, the 4 outputs of ``TFLite_Detection_PostProcess``), or None for another
    model (a raw network)."""
    from runtime.tflite_metadata import (
        LABELS_FILE,
        METADATA_NAME,
        labels_text,
        object_detector_metadata,
        output_count,
    )
    if output_count(model_bytes) != 4:
        return None
    classes = list(spec["labels_list"][1:])
    metadata = object_detector_metadata(
        "Face mask detector", f"SSD face detector ({spec.get('network')}): classes {', '.join(classes)}; boxes "
        "normalised to the input image (ymin, xmin, ymax, xmax).", f"spec {SPEC_VERSION}", classes,
        spec["input_size"], spec["input"]["mean"], spec["input"]["std"])
    return {METADATA_NAME: metadata}, {LABELS_FILE: labels_text(classes)}


def _embed_onnx(path, spec, text) -> None:
    import onnx
    model = onnx.load(path, load_external_data=False)
    props = {prop.key: prop.value for prop in model.metadata_props}
    props.update({SPEC_KEY: text, "labels": json.dumps(list(spec["labels_list"][1:]))})
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, path)


def embed_spec(model_file: str, spec: dict[str, Any]) -> None:
    """Write ``spec`` (see :func:`model_spec`) inside the model file or SavedModel folder ``model_file``, in
    place (the caller stages the file: :func:`publish_model`). Raises ProjectError for a path of no known
    model type."""
    text = json.dumps(spec, indent=2)
    if os.path.isdir(model_file):
        os.makedirs(os.path.join(model_file, "assets"), exist_ok=True)
        write_text_atomically(os.path.join(model_file, "assets", SPEC_FILE), text)
        return
    extension = os.path.splitext(model_file)[1].lower()
    if extension == ".keras":
        _embed_keras(model_file, text)
    elif extension == ".tflite":
        _embed_tflite(model_file, spec, text)
    elif extension == ".onnx":
        _embed_onnx(model_file, spec, text)
    else:
        raise ProjectError(f"{model_file}: cannot embed a model spec (not .keras, .tflite, .onnx or a folder)")


def save_model_config(model_file: str, settings: Settings) -> None:
    """Write an older-style sidecar (``MODEL_CONFIG_KEYS`` of ``settings.model``) beside ``model_file``,
    atomically: what files from before the embedded spec have (new files carry their spec: :func:`embed_spec`)."""
    model = settings.model.as_dict()
    text = json.dumps({key: model[key] for key in MODEL_CONFIG_KEYS}, indent=2)
    write_text_atomically(model_config_path(model_file), text)


def resolve_model_path(model_path: str) -> str:
    """The model for ``model_path``: the file itself, a SavedModel folder itself, or for any other folder its
    default model ``mask_detector.keras`` (``DEFAULT_MODEL_NAME``), else its only ``.keras`` file, whatever the
    file times. Raises ModelLoadError for a folder without a model, or with several and no default (listing
    them)."""
    if os.path.isdir(model_path) and not is_saved_model_dir(model_path):
        default = os.path.join(model_path, DEFAULT_MODEL_NAME)
        if os.path.isfile(default):
            return default
        names = sorted(name for name in os.listdir(model_path) if name.endswith(MODEL_EXTENSIONS)
                       and os.path.isfile(os.path.join(model_path, name)))
        if not names:
            raise ModelLoadError(f"{model_path}: folder holds no model file ({', '.join(MODEL_EXTENSIONS)}) "
                                 "and is not a SavedModel folder")
        if len(names) > 1:
            raise ModelLoadError(f"{model_path}: {len(names)} models and no {DEFAULT_MODEL_NAME}; name one: "
                                 + ", ".join(os.path.join(model_path, name) for name in names))
        return os.path.join(model_path, names[0])
    if not os.path.exists(model_path):
        raise ModelLoadError(f"{model_path}: model not found")
    return model_path


def _replace(staged, output):
    """Move the staged file or folder to ``output``, replacing a file or folder there."""
    if not os.path.isdir(staged):
        if os.path.isdir(output):
            raise ProjectError(f"{output}: is a folder; choose a file name")
        os.replace(staged, output)
        return
    if not os.path.lexists(output):
        os.replace(staged, output)
        return
    old = staged + ".old"
    os.replace(output, old)
    os.replace(staged, output)
    shutil.rmtree(old, ignore_errors=True) if os.path.isdir(old) else os.remove(old)


def publish_model(write: Callable[[str], Any], output: str, settings: Settings,
                  check: Callable[[str], Any] | None = None, spec: dict[str, Any] | None = None) -> str:
    """Write a model to ``output`` with its spec inside (``spec``, default :func:`model_spec` of ``settings``),
    atomically: nothing of it appears until it is complete and checked, and an error or Ctrl-C leaves what
    was there. No sidecar is written (a sidecar of another model beside it is left alone).

    ``write(path)`` writes the model (file or folder) at ``path`` inside a staging folder beside ``output``;
    :func:`embed_spec` then adds the spec; ``check(path)``, when given, runs on the staged model before it is
    published (and may raise). Returns ``output``. Raises ProjectError naming ``output`` when the folder
    cannot be written (disk full, permission).
    """
    folder = os.path.dirname(os.path.abspath(output))
    try:
        with staging_folder(folder) as staging:
            staged = os.path.join(staging, os.path.basename(output))
            write(staged)
            embed_spec(staged, spec if spec is not None else model_spec(settings))
            if check is not None:
                check(staged)
            _replace(staged, output)
    except OSError as error:
        raise os_error(error, output) from None
    return output
