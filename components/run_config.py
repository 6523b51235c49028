"""A training run's full settings, saved in its checkpoint folder (``run_config.json``) so that ``--resume``
continues the same run: the saved settings are used, and any flag given at resume that changes them is listed
(the schedule and epoch count may change; the classes, input size, anchors, network and batch size may not)."""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from components.atomic_io import write_text_atomically
from components.config import Settings, flat_settings, group_keys, plain
from components.errors import ProjectError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

RUN_CONFIG_NAME = "run_config.json"
# settings a resumed run cannot change: the model's shape and coding, and the steps per epoch of the
# saved optimizer state
FIXED_KEYS = (*group_keys("model"), "batch_size")


class ResumeError(ProjectError):
    """Flags given at resume that the saved run cannot take; the message names them."""


def run_config_path(folder: str) -> str:
    return os.path.join(folder, RUN_CONFIG_NAME)


def save_run_config(folder: str, settings: Settings, extra: dict[str, Any] | None = None) -> None:
    """Write ``settings`` (grouped, ``Settings.as_dict``) and ``extra`` (e.g. steps_per_epoch) to
    ``folder/run_config.json`` atomically."""
    content = {"settings": settings.as_dict(), **(extra or {})}
    write_text_atomically(run_config_path(folder), json.dumps(content, indent=1) + "\n")


def load_run_config(folder: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """({setting: value} saved in ``folder``, flattened from the groups (older runs saved them flat), extra
    dict), or None when the run saved none (older runs). Raises ResumeError naming the file when it cannot
    be read."""
    path = run_config_path(folder)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
        saved = content.pop("settings")
        settings = flat_settings(saved)
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:
        raise ResumeError(f"{path}: unreadable run settings ({error})") from None
    return settings, content


def resumed_config(saved: Mapping[str, Any], given: Mapping[str, Any],
                   defaults: Settings) -> tuple[Settings, list[str]]:
    """The settings of a resumed run: ``saved`` ({setting: value}; those it lacks from ``defaults``) with
    ``given`` applied.

    ``given``: {key: value} set on the command line at resume (flags or a --data file). Returns (settings,
    ["key: old -> new", ...] for the settings that change). Raises ResumeError naming the flags when a
    FIXED_KEYS setting would change.
    """
    settings = defaults.replace(**saved)
    changes: list[str] = []
    refused: list[str] = []
    for key, value in given.items():
        old = settings.value(key)
        if plain(old) == plain(value):
            continue
        (refused if key in FIXED_KEYS else changes).append(f"{key}: {plain(old)!r} -> {plain(value)!r}")
    if refused:
        raise ResumeError(f"--resume: {'; '.join(refused)} would change the saved run (classes, input size, "
                          "anchors, network and batch size are fixed): drop those flags, or start a new run "
                          "with another --checkpoint_dir (--weights to start from this one)")
    return settings.replace(**given), changes
