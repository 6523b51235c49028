"""A training run's full settings, saved in its checkpoint folder (``run_config.json``) so that ``--resume``
continues the same run: the saved settings are used, and any flag given at resume that changes them is listed
(the schedule and epoch count may change; the classes, input size, anchors, network and batch size may not)."""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from components.atomic_io import write_text_atomically
from components.errors import ProjectError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

RUN_CONFIG_NAME = "run_config.json"
# settings a resumed run cannot change: the model's shape and coding, and the steps per epoch of the
# saved optimizer state
FIXED_KEYS = ("labels_list", "input_size", "min_sizes", "steps", "variances", "clip", "network", "base_channel",
              "head_context", "batch_size")


class ResumeError(ProjectError):
    """Flags given at resume that the saved run cannot take; the message names them."""


def run_config_path(folder: str) -> str:
    return os.path.join(folder, RUN_CONFIG_NAME)


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def save_run_config(folder: str, cfg: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Write ``cfg`` (and ``extra``, e.g. steps_per_epoch) to ``folder/run_config.json`` atomically."""
    content = {"settings": {key: _jsonable(value) for key, value in cfg.items()}, **(extra or {})}
    write_text_atomically(run_config_path(folder), json.dumps(content, indent=1) + "\n")


def load_run_config(folder: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(settings dict, extra dict) saved in ``folder``, or None when the run saved none (older runs).
    Raises ValueError naming the file when it cannot be read."""
    path = run_config_path(folder)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
        settings = content.pop("settings")
    except (OSError, ValueError, KeyError, AttributeError) as error:
        raise ResumeError(f"{path}: unreadable run settings ({error})") from None
    if "input_size" in settings:
        settings["input_size"] = tuple(settings["input_size"])
    return settings, content


def resumed_config(saved: dict[str, Any], given: Mapping[str, Any],
                   defaults: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The settings of a resumed run: ``saved`` (keys it lacks from ``defaults``) with ``given`` applied.

    ``given``: {key: value} set on the command line at resume (flags or a --data file). Returns (settings,
    ["key: old -> new", ...] for the settings that change). Raises ResumeError naming the flags when a
    FIXED_KEYS setting would change.
    """
    settings = {**defaults, **saved}
    changes: list[str] = []
    refused: list[str] = []
    for key, value in given.items():
        old = settings.get(key)
        if _jsonable(old) == _jsonable(value):
            continue
        (refused if key in FIXED_KEYS else changes).append(f"{key}: {old!r} -> {value!r}")
        settings[key] = value
    if refused:
        raise ResumeError(f"--resume: {'; '.join(refused)} would change the saved run (classes, input size, "
                          "anchors, network and batch size are fixed): drop those flags, or start a new run "
                          "with another --checkpoint_dir (--weights to start from this one)")
    return settings, changes
