"""Training history: one JSON record per epoch in ``history.jsonl``, and its plot (``training.png``)."""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import numpy as np

from components.atomic_io import save_figure_atomically, write_text_atomically
from components.errors import ProjectError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any

HISTORY_FILE = "history.jsonl"
PLOT_FILE = "training.png"


def read_history(folder: str) -> list[dict[str, Any]]:
    """Epoch records written by training (list of dicts, oldest first)."""
    path = os.path.join(folder, HISTORY_FILE)
    if not os.path.isfile(path):
        return []
    try:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except (ValueError, UnicodeDecodeError) as error:
        raise ProjectError(f"{path}: damaged training history ({error}); remove the bad line or the file") from None


def write_history(folder: str, records: Iterable[Mapping[str, Any]]) -> None:
    """Replace the history file atomically with ``records``."""
    write_text_atomically(os.path.join(folder, HISTORY_FILE), "".join(json.dumps(record) + "\n" for record in records))


def plot_history(records: Sequence[Mapping[str, Any]], png_path: str) -> None:
    """Plot training/validation loss and validation mAP per epoch to ``png_path`` (written atomically)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = [r["epoch"] for r in records]
    figure, (loss_axis, map_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot(epochs, [r["loss"] for r in records], label="train loss")
    loss_axis.plot(epochs, [r.get("val_loss", np.nan) for r in records], label="val loss")
    loss_axis.set_xlabel("epoch"), loss_axis.set_ylabel("multibox loss"), loss_axis.legend(), loss_axis.grid(alpha=.3)
    with_map = [r for r in records if "val_map" in r]
    map_axis.plot([r["epoch"] for r in with_map], [r["val_map"] for r in with_map], "o-", label="mAP")
    for key in sorted({k for r in with_map for k in r if k.startswith("val_map:")}):
        map_axis.plot([r["epoch"] for r in with_map], [r.get(key, np.nan) for r in with_map], "o-",
                      label=f"mAP {key[8:]}", markersize=3)
    for key in sorted({k for r in with_map for k in r if k.startswith("raw_val_map")}):   # without the EMA
        map_axis.plot([r["epoch"] for r in with_map], [r.get(key, np.nan) for r in with_map], "x:",
                      label=f"mAP {key[12:] or 'mean'}, no EMA", markersize=3)
    for key in sorted({k for r in with_map for k in r if k.startswith("val_ap_")}):
        map_axis.plot([r["epoch"] for r in with_map], [r.get(key, np.nan) for r in with_map], ".--",
                      label=f"AP {key[7:]}")
    map_axis.set_xlabel("epoch"), map_axis.set_ylabel("val AP @ IoU 0.5"), map_axis.set_ylim(0, 1)
    map_axis.legend(), map_axis.grid(alpha=.3)
    figure.tight_layout()
    save_figure_atomically(figure, png_path, format="png", dpi=100)
    plt.close(figure)
