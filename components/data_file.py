"""Data-set description files (``--data FILE``): which VOC folders and splits to train and validate on, the
class names and the label aliases, in one small YAML file (see data/ilc2021.yaml)::

    name: ilc2021                # TFRecords: <tfrecord_dir>/<name>_<split>.tfrecord
    root: ../datasets/ILC2021    # VOC paths below are relative to this; itself relative to this file
    names: [mask, unmask, incorrect]
    aliases: {with_mask: mask, without_mask: unmask, with_incorrect_mask: incorrect}
    train: [{path: ., split: train}]
    val: [{path: ., split: val}]

Each split lists one or more sources: ``{path, split}`` (``name`` optional), or just a split name of the VOC
folder at ``root``. Class names map to themselves; an alias may map to ``ignore``. ``tfrecord_dir``
(default ``dataset``, relative to the working directory) says where the converter writes the TFRecords.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from components.config import IGNORE_LABEL
from components.errors import ProjectError

if TYPE_CHECKING:
    from typing import Any

SPLITS = ("train", "val")
DEFAULT_TFRECORD_DIR = "dataset"
KNOWN_KEYS = {"name", "root", "names", "aliases", "train", "val", "tfrecord_dir"}


class DataFileError(ProjectError):
    """A data file that cannot be used; the message names the file and the problem."""


@dataclass
class Source:
    """One VOC folder and split, and the TFRecord it is converted to."""
    name: str
    voc_path: str
    split: str
    tfrecord: str


@dataclass
class DataSpec:
    """A parsed data file: class names (no background), aliases and the sources of each split."""
    path: str
    name: str
    root: str
    names: list
    aliases: dict
    sources: dict = field(default_factory=dict)   # split ("train" / "val") -> list of Source

    @property
    def labels_list(self) -> list[str]:
        return ["background"] + list(self.names)

    def settings(self) -> dict[str, Any]:
        """The config keys this file sets: labels_list, label_aliases, train_tfrecord, val_tfrecord."""
        return {"labels_list": self.labels_list, "label_aliases": dict(self.aliases),
                "train_tfrecord": [source.tfrecord for source in self.sources.get("train", [])],
                "val_tfrecord": [source.tfrecord for source in self.sources.get("val", [])]}

    def check_root(self) -> None:
        """Raise DataFileError (with the fix) when a source's VOC folder does not exist."""
        for sources in self.sources.values():
            for source in sources:
                if not os.path.isdir(source.voc_path):
                    raise DataFileError(f"{self.path}: VOC folder {source.voc_path} not found; set root: in "
                                        f"{self.path} or pass --root /path/to/your/data")


def _read_yaml(path):
    import yaml
    if not os.path.isfile(path):
        raise DataFileError(f"{path}: data file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            content = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as error:
        raise DataFileError(f"{path}: not a readable YAML file ({str(error).splitlines()[0]})") from None
    if not isinstance(content, dict):
        raise DataFileError(f"{path}: expected a mapping with names:, train: and val:")
    return content


def _names(content, path):
    names = content.get("names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise DataFileError(f"{path}: names: must be a list of class names, e.g. [mask, unmask]")
    bad = [n for n in names if n in ("background", IGNORE_LABEL)] or [n for n in names if names.count(n) > 1]
    if bad:
        raise DataFileError(f"{path}: names: {bad[0]!r} is reserved or listed twice")
    return [str(n) for n in names]


def _aliases(content, names, path):
    aliases = content.get("aliases") or {}
    if not isinstance(aliases, dict):
        raise DataFileError(f"{path}: aliases: must map VOC labels to class names, e.g. {{face_mask: mask}}")
    aliases = {str(label): str(target) for label, target in aliases.items()}
    wrong = {label: target for label, target in aliases.items() if target not in names and target != IGNORE_LABEL}
    if wrong:
        label, target = next(iter(wrong.items()))
        raise DataFileError(f"{path}: aliases: {label} -> {target!r}, which is not in names: {names} "
                            f"(add it to names: or map {label} to ignore)")
    return {**{name: name for name in names}, **aliases}


def _sources(content, split, name, root, tfrecord_dir, path):
    entries = content.get(split) or []
    if isinstance(entries, (str, dict)):
        entries = [entries]
    if not isinstance(entries, list):
        raise DataFileError(f"{path}: {split}: must list sources such as {{path: ., split: {split}}}")
    sources = []
    for entry in entries:
        entry = {"path": ".", "split": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("split"), str):
            raise DataFileError(f"{path}: {split}: each source needs a split:, got {entry!r}")
        folder = str(entry.get("path", "."))
        source_name = str(entry.get("name") or (name if len(entries) == 1 else
                                                f"{name}_{os.path.basename(os.path.normpath(folder))}"))
        sources.append(Source(source_name, os.path.normpath(os.path.join(root, folder)), entry["split"],
                              os.path.join(tfrecord_dir, f"{source_name}_{split}.tfrecord")))
    if len({source.tfrecord for source in sources}) != len(sources):
        raise DataFileError(f"{path}: {split}: two sources share a TFRecord name; give each a name:")
    return sources


def load_data_file(path: str, root: str | None = None) -> DataSpec:
    """Parse the data file at ``path``; ``root`` (e.g. from ``--root``) replaces its ``root:``.

    A relative ``root:`` is relative to the file's folder, a relative ``--root`` to the working directory.
    Raises DataFileError naming the file and the key when something is missing or inconsistent. The VOC
    folders are not required to exist here (see ``DataSpec.check_root``).
    """
    content = _read_yaml(path)
    unknown = sorted(set(content) - KNOWN_KEYS)
    if unknown:
        raise DataFileError(f"{path}: unknown key {unknown[0]}: (expected {', '.join(sorted(KNOWN_KEYS))})")
    name = str(content.get("name") or os.path.splitext(os.path.basename(path))[0])
    if root is None:
        root = os.path.join(os.path.dirname(os.path.abspath(path)), str(content.get("root", ".")))
    root = os.path.abspath(root)
    names = _names(content, path)
    tfrecord_dir = str(content.get("tfrecord_dir", DEFAULT_TFRECORD_DIR))
    spec = DataSpec(path, name, root, names, _aliases(content, names, path))
    for split in SPLITS:
        spec.sources[split] = _sources(content, split, name, root, tfrecord_dir, path)
    if not spec.sources["train"] and not spec.sources["val"]:
        raise DataFileError(f"{path}: lists no train: or val: sources")
    return spec
