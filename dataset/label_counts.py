"""Counting the labels of a VOC split before using it, so that labels the config does not know fail loudly:
a table of boxes per VOC label and the class each maps to, then one error naming the unknown ones."""
from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING

from lxml import etree

from dataset.voc import VOCError, read_split

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any

UNKNOWN = "UNKNOWN"
SKIP_FLAG = "--skip_unknown_labels"


def count_labels(dataset_path: str, names: Iterable[str]) -> Counter[str]:
    """Counter of the raw ``<object><name>`` labels in the xml files of ``names`` (unreadable files are left
    to the caller's reader, which reports them)."""
    counts: Counter[str] = Counter()
    for name in names:
        path = os.path.join(dataset_path, "Annotations", f"{name}.xml")
        try:
            root = etree.parse(path).getroot()
        except (OSError, etree.XMLSyntaxError):
            continue
        counts.update((obj.findtext("name") or "").strip() for obj in root.iter("object"))
    return counts


def format_label_table(counts: Mapping[str, int], label_aliases: Mapping[str, str], title: str = "") -> str:
    """The table: one row per VOC label (most boxes first) with its class (or UNKNOWN) and box count."""
    rows = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    width = max([len(label) for label, _ in rows] + [9])
    lines = [title] if title else []
    lines.append(f"  {'VOC label':<{width}}  {'class':<12} {'boxes':>6}")
    lines += [f"  {label or '(empty)':<{width}}  {label_aliases.get(label, UNKNOWN):<12} {count:6d}"
              for label, count in rows]
    return "\n".join(lines)


def unknown_labels(counts: Mapping[str, int], label_aliases: Mapping[str, str]) -> dict[str, int]:
    """{label: boxes} of the labels ``label_aliases`` does not map."""
    return {label: count for label, count in counts.items() if label not in label_aliases}


def check_known_labels(counts: Mapping[str, int], label_aliases: Mapping[str, str], where: str,
                       fix_file: str | None = None) -> None:
    """Raise VOCError naming the unknown labels of ``counts`` and what to change (the data file's aliases:
    or --label_aliases, or the skip flag)."""
    unknown = unknown_labels(counts, label_aliases)
    if not unknown:
        return
    listed = ", ".join(f"{label!r} ({count} boxes)" for label, count in
                       sorted(unknown.items(), key=lambda item: -item[1]))
    fix = f"aliases: in {fix_file}" if fix_file else "--label_aliases (or aliases: in a --data file)"
    raise VOCError(f"{where}: unknown labels {listed}: map them to a class or 'ignore' under {fix}, "
                   f"or pass {SKIP_FLAG} to leave them out")


def report_split_labels(dataset_path: str, split: str, label_aliases: Mapping[str, str], skip_unknown: bool = False,
                        fix_file: str | None = None, log: Callable[[str], Any] | None = None) -> Counter[str]:
    """Count the labels of a VOC split, ``log`` their table (e.g. ``print``), and raise VOCError on unknown
    labels unless ``skip_unknown``; returns the Counter. The one label check of the converter, kmeans and detect."""
    counts = count_labels(dataset_path, read_split(dataset_path, split))
    (log or (lambda text: None))(format_label_table(counts, label_aliases, title=f"{dataset_path} ({split}):"))
    if not skip_unknown:
        check_known_labels(counts, label_aliases, f"{dataset_path} ({split})", fix_file)
    return counts


def report_splits_labels(splits: Sequence[tuple[str, str]], label_aliases: Mapping[str, str],
                         skip_unknown: bool = False, fix_file: str | None = None,
                         log: Callable[[str], Any] | None = None) -> list[Counter[str]]:
    """:func:`report_split_labels` over several ``(dataset_path, split)``: every table first, then one VOCError
    naming the unknown labels of every split at once (not the first split's only). Returns the Counters."""
    counts = [report_split_labels(path, split, label_aliases, True, fix_file, log) for path, split in splits]
    if skip_unknown:
        return counts
    found = [(f"{path} ({split})", unknown_labels(counted, label_aliases))
             for (path, split), counted in zip(splits, counts)]
    found = [(where, unknown) for where, unknown in found if unknown]
    if found:
        listed = "; ".join(where + ": " + ", ".join(f"{label!r} ({count} boxes)" for label, count in
                                                    sorted(unknown.items(), key=lambda item: -item[1]))
                           for where, unknown in found)
        fix = f"aliases: in {fix_file}" if fix_file else "--label_aliases (or aliases: in a --data file)"
        raise VOCError(f"unknown labels in {len(found)} split(s): {listed}: map them to a class or 'ignore' "
                       f"under {fix}, or pass {SKIP_FLAG} to leave them out")
    return counts
