"""Prior (anchor) boxes for the SSD heads."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from components.config import ModelSpec


def feature_map_sizes(input_size: Sequence[int], steps: Sequence[int]) -> list[tuple[int, int]]:
    """Feature map (height, width) of each head for an input of ``input_size`` = (h, w) pixels.

    Every stride-2 layer of the network pads 'same', so a map is ``ceil(size / step)``.
    """
    height, width = input_size
    return [(math.ceil(height / step), math.ceil(width / step)) for step in steps]


def padding_pattern(side: int, steps: Sequence[int]) -> tuple[bool, ...]:
    """Which stride-2 layers see an odd ``side`` (pixels of the input along one axis): a tuple of booleans, one
    per halving up to the largest step. A 'same'-padded stride-2 layer pads an odd input on both sides but an
    even one only at the end, so this pattern fixes where each map's cells sit on the image."""
    return tuple(math.ceil(side / 2 ** level) % 2 == 1 for level in range(round(math.log2(max(steps)))))


def aligned_input_size(input_size: Sequence[int], trained_size: Sequence[int], steps: Sequence[int]) -> tuple[int, ...]:
    """The smallest (h, w) of at least ``input_size`` whose maps are padded as at ``trained_size`` (see
    ``padding_pattern``).

    The heads learn where each cell sits on the image at the size they were trained at. At a size whose
    pattern differs (360x480 for a model trained at 240x320) the deeper maps are shifted by up to half a
    cell against the priors, and boxes land off the faces; on a canvas of the aligned size (the image at
    ``input_size``, the rest padding) they do not.
    """
    def side(wanted, trained):
        pattern = padding_pattern(trained, steps)
        while padding_pattern(wanted, steps) != pattern:
            wanted += 1
        return wanted
    return tuple(side(wanted, trained) for wanted, trained in zip(input_size, trained_size))


def priors_per_cell(min_sizes: Sequence[Sequence[Any]]) -> list[int]:
    """Number of priors at each cell of each head, e.g. [3, 2, 2, 3]."""
    return [len(sizes) for sizes in min_sizes]


def prior_box(input_size: Sequence[int], min_sizes: Sequence[Sequence[Any]], steps: Sequence[int],
              clip: bool = False) -> np.ndarray:
    """Priors for an image of ``input_size`` = (h, w) pixels.

    Args:
        min_sizes: per head, the anchor sizes in pixels; an entry is a side length (square anchor)
            or a (width, height) pair (as found by ``dataset/anchor_kmeans.py``).
        steps: stride in pixels of each head.
    Returns:
        float32 array [num_priors, 4] in normalised centre form (cx, cy, w, h), ordered head by head,
        then row, column, anchor -- the order of the network's output rows.
    """
    height, width = input_size
    boxes = []
    for (map_h, map_w), sizes, step in zip(feature_map_sizes(input_size, steps), min_sizes, steps):
        rows, cols = np.meshgrid(np.arange(map_h), np.arange(map_w), indexing="ij")
        cx = (cols.reshape(-1, 1) + 0.5) * step / width
        cy = (rows.reshape(-1, 1) + 0.5) * step / height
        wh = np.array([s if np.ndim(s) else (s, s) for s in sizes], dtype=np.float64)
        anchor_w = np.broadcast_to(wh[:, 0] / width, (cx.shape[0], len(sizes)))
        anchor_h = np.broadcast_to(wh[:, 1] / height, (cx.shape[0], len(sizes)))
        level = np.stack([np.broadcast_to(cx, anchor_w.shape), np.broadcast_to(cy, anchor_w.shape),
                          anchor_w, anchor_h], axis=-1)
        boxes.append(level.reshape(-1, 4))
    priors = np.concatenate(boxes, axis=0).astype(np.float32)
    if clip:
        priors = np.clip(priors, 0.0, 1.0)
    return priors


def priors_from_config(spec: ModelSpec, input_size: Sequence[int] | None = None) -> np.ndarray:
    """Priors [P, 4] (normalised centre form) of the model ``spec`` at ``input_size`` (default: its own)."""
    return prior_box(input_size or spec.input_size, spec.min_sizes, spec.steps, spec.clip)


def mirror_index(priors: np.ndarray, decimals: int = 5) -> np.ndarray:
    """Index [P] of each prior's horizontal mirror image: ``priors[mirror_index(priors)[i]]`` has centre x
    ``1 - cx`` of prior ``i`` and the same centre y and size (priors [P, 4] normalised centre form).

    Raises ValueError when some prior has no mirror image (a head whose cells do not tile the input width).
    """
    priors = np.asarray(priors, np.float64)
    index = {tuple(row): i for i, row in enumerate(np.round(priors, decimals))}
    mirrored = np.round(priors * [-1, 1, 1, 1] + [1, 0, 0, 0], decimals)
    missing = [i for i, row in enumerate(mirrored) if tuple(row) not in index]
    if missing:
        raise ValueError(f"{len(missing)} of {len(priors)} priors have no horizontal mirror image "
                         f"(first: {priors[missing[0]].round(4).tolist()}); every step must divide the input width")
    return np.array([index[tuple(row)] for row in mirrored], np.int64)
