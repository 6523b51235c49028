"""Model files: the config sidecar beside each model, finding the model a path means, and the one writer
that publishes a model file (or SavedModel folder) with its sidecar atomically.

A model ``name.keras`` (or ``name.tflite``, ``name.onnx``, a SavedModel folder ``name/``) keeps the settings
it needs (input size, labels, anchors: ``MODEL_CONFIG_KEYS``) in ``name.json`` beside it; a SavedModel folder
also holds a copy inside (``model_config.json``), so the folder alone loads.
"""
import json
import os
import shutil

from components.atomic_io import staging_folder, write_text_atomically
from components.config import cfg as default_cfg
from components.errors import ProjectError, os_error
from components.runtimes import ModelLoadError, is_saved_model_dir

MODEL_CONFIG_KEYS = ("input_size", "labels_list", "min_sizes", "steps", "variances", "clip", "network",
                     "base_channel", "head_context")
SIDECAR_SUFFIX = ".json"
INNER_CONFIG_NAME = "model_config.json"   # the copy of the config kept inside a SavedModel folder
MODEL_EXTENSIONS = (".keras",)            # what a folder passed as a model path is searched for


def model_config_path(model_file):
    """Path of the JSON file that records the config a model was trained with: beside the file or folder."""
    return os.path.splitext(os.path.normpath(model_file))[0] + SIDECAR_SUFFIX


def save_model_config(model_file, cfg):
    """Write the settings needed to use ``model_file`` (input size, labels, anchors) beside it, atomically.

    For a SavedModel folder a copy also goes inside it (``model_config.json``), so the folder alone loads.
    """
    text = json.dumps({key: cfg[key] for key in MODEL_CONFIG_KEYS}, indent=2)
    write_text_atomically(model_config_path(model_file), text)
    if os.path.isdir(model_file):
        write_text_atomically(os.path.join(model_file, INNER_CONFIG_NAME), text)


def load_model_config(model_file, base_cfg=None):
    """``base_cfg`` (default: components/config.py) updated with the JSON saved beside ``model_file`` (or, for
    a SavedModel folder without one, inside it), if any."""
    config = dict(base_cfg or default_cfg)
    path = model_config_path(model_file)
    inner = os.path.join(model_file, INNER_CONFIG_NAME)
    if not os.path.isfile(path) and os.path.isdir(model_file) and os.path.isfile(inner):
        path = inner
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as handle:
                saved = json.load(handle)
            if not isinstance(saved, dict):
                raise ValueError("expected a JSON object")
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"{path}: unreadable model config ({error})") from None
        # only the model's own keys: inference settings (thresholds, keep_aspect) stay the caller's
        config.update({key: tuple(value) if key == "input_size" else value for key, value in saved.items()
                       if key in MODEL_CONFIG_KEYS})
    return config


def resolve_model_path(model_path):
    """The model for ``model_path``: the file itself, a SavedModel folder itself, or for any other folder
    the newest ``.keras`` file in it."""
    if os.path.isdir(model_path) and not is_saved_model_dir(model_path):
        candidates = [os.path.join(model_path, name) for name in os.listdir(model_path)
                      if name.endswith(MODEL_EXTENSIONS)]
        if not candidates:
            raise ModelLoadError(f"{model_path}: folder holds no model file ({', '.join(MODEL_EXTENSIONS)}) "
                                 "and is not a SavedModel folder")
        return max(candidates, key=os.path.getmtime)
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


def publish_model(write, output, cfg, check=None):
    """Write a model with its config sidecar to ``output``, atomically: nothing of it appears until both are
    complete, and an error or Ctrl-C leaves what was there.

    ``write(path)`` writes the model (file or folder) at ``path`` inside a staging folder beside ``output``;
    ``check(path)``, when given, runs on the staged model before it is published (and may raise). Returns
    ``output``. Raises ProjectError naming ``output`` when the folder cannot be written (disk full, permission).
    """
    folder = os.path.dirname(os.path.abspath(output))
    try:
        with staging_folder(folder) as staging:
            staged = os.path.join(staging, os.path.basename(output))
            write(staged)
            save_model_config(staged, cfg)
            if check is not None:
                check(staged)
            os.replace(model_config_path(staged), model_config_path(output))
            _replace(staged, output)
    except OSError as error:
        raise os_error(error, output) from None
    return output
