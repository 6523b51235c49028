"""The folders of a mAP run over one or several validation sets: mAP/detect.py writes them, compute_mAP.py reads them.

One set: ``<output_dir>/detection-results`` and ``<output_dir>/ground-truth``. Several: those two folders in
``<output_dir>/<set name>/`` for each set, a set being named by its VOC folder (made unique) or by its data-file
source. Standard library only, so that detect.py stays light until its model is loaded.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from components.errors import ProjectError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from components.data_file import Source

DETECTION_DIR_NAME = "detection-results"
GROUND_TRUTH_DIR_NAME = "ground-truth"
RESULTS_DIR_NAME = "map-results"
SUMMARY_FILE_NAME = "summary.txt"
MEAN_ROW_NAME = "mean"


@dataclass
class EvaluationSet:
    """One validation set: its name (an output folder name), VOC folder and split (ImageSets/Main/<split>.txt)."""
    name: str
    dataset_path: str
    split: str


def folder_name(path: str) -> str:
    """The last component of ``path`` (``Maskdata/`` -> ``Maskdata``)."""
    return os.path.basename(os.path.normpath(os.path.abspath(path)))


def unique_names(names: Iterable[str]) -> list[str]:
    """``names`` with repeats told apart by a suffix: ``[val, val, ilc]`` -> ``[val, val_2, ilc]``."""
    result, taken = [], set()
    for name in names:
        candidate, number = name, 1
        while candidate in taken:
            number += 1
            candidate = f"{name}_{number}"
        taken.add(candidate)
        result.append(candidate)
    return result


def sets_from_folders(dataset_paths: Sequence[str], split: str) -> list[EvaluationSet]:
    """One EvaluationSet per VOC folder, all of the same ``split``, named by their folders (made unique)."""
    names = unique_names([folder_name(path) for path in dataset_paths])
    return [EvaluationSet(name, path, split) for name, path in zip(names, dataset_paths)]


def folder_sets(dataset_paths: Sequence[str], split: str) -> list[EvaluationSet]:
    """The sets of VOC folders (:func:`sets_from_folders`), each checked to exist first; raises ProjectError
    ``<path>: dataset folder not found`` naming the first missing one."""
    for path in dataset_paths:
        if not os.path.isdir(path):
            raise ProjectError(f"{path}: dataset folder not found")
    return sets_from_folders(dataset_paths, split)


def sets_from_sources(sources: Sequence[Source]) -> list[EvaluationSet]:
    """One EvaluationSet per data-file source (``components.data_file.Source``: name, voc_path, split)."""
    names = unique_names([source.name for source in sources])
    return [EvaluationSet(name, source.voc_path, source.split) for name, source in zip(names, sources)]


def set_output_dirs(output_dir: str, names: Sequence[str]) -> dict[str, str]:
    """{set name: folder its detection-results/ and ground-truth/ go to}: ``output_dir`` itself for one set
    (the layout of a single-set run), ``<output_dir>/<name>`` for each of several."""
    if len(names) == 1:
        return {names[0]: output_dir}
    return {name: os.path.join(output_dir, name) for name in names}


def result_dirs(set_dir: str) -> tuple[str, str]:
    """(ground-truth folder, detection folder) of a set folder as mAP/detect.py writes it."""
    return os.path.join(set_dir, GROUND_TRUTH_DIR_NAME), os.path.join(set_dir, DETECTION_DIR_NAME)


def named_set_dirs(set_dirs: Sequence[str]) -> dict[str, str]:
    """{set name: folder} of folders each holding ``ground-truth/`` and ``detection-results/``, named by the
    folder (made unique), in order; raises ProjectError naming the first folder that does not exist."""
    for set_dir in set_dirs:
        if not os.path.isdir(set_dir):
            raise ProjectError(f"{set_dir}: set folder not found (expected {GROUND_TRUTH_DIR_NAME}/ and "
                               f"{DETECTION_DIR_NAME}/ in it)")
    return dict(zip(unique_names([folder_name(set_dir) for set_dir in set_dirs]), set_dirs))
