"""The one report writer of the benchmarks: a :class:`Report` (a heading and its tables, each with the lines
above and below it) rendered as Markdown (for ``docs/`` and ``--output`` files) or as plain text with aligned
columns (for a terminal), and written atomically."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from components.atomic_io import write_text_atomically

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, TextIO


@dataclass
class Table:
    """A table of text cells: ``title`` lines above it, ``columns`` (``right``: the columns aligned right, numbers),
    ``rows`` (one cell per column, ``str()`` of each), ``notes`` lines below it."""
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]] = ()
    title: Sequence[str] = ()
    notes: Sequence[str] = ()
    right: Sequence[str] = ()

    def cells(self) -> list[list[str]]:
        """The rows as text, each as long as ``columns`` (missing cells empty)."""
        width = len(self.columns)
        return [[str(cell) for cell in row][:width] + [""] * (width - len(row)) for row in self.rows]

    def markdown_lines(self) -> list[str]:
        """The table alone in Markdown: header, alignment row, one line per row."""
        lines = ["| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---:" if column in self.right else "---" for column in self.columns) + "|"]
        return lines + ["| " + " | ".join(row) + " |" for row in self.cells()]

    def text_lines(self) -> list[str]:
        """The table alone as plain text: columns padded to their widest cell, two spaces apart."""
        rows = [list(self.columns)] + self.cells()
        widths = [max(len(row[index]) for row in rows) for index in range(len(self.columns))]

        def line(row: Sequence[str]) -> str:
            return "  ".join(cell.rjust(width) if column in self.right else cell.ljust(width)
                             for cell, width, column in zip(row, widths, self.columns)).rstrip()

        return [line(rows[0]), line(["-" * width for width in widths])] + [line(row) for row in rows[1:]]


@dataclass
class Report:
    """A benchmark's report: ``heading`` (one line; none when empty) and its tables in order."""
    heading: str = ""
    tables: list[Table] = field(default_factory=list)

    def _render(self, markdown: bool) -> str:
        blocks: list[list[str]] = []
        if self.heading:
            blocks.append([f"# {self.heading}"] if markdown else [self.heading, "=" * len(self.heading)])
        for table in self.tables:
            if table.title:
                blocks.append(list(table.title))
            blocks.append(table.markdown_lines() if markdown else table.text_lines())
            if table.notes:
                blocks.append(list(table.notes))
        return "\n\n".join("\n".join(block) for block in blocks) + "\n"

    def markdown(self) -> str:
        """The report in Markdown, blocks (heading, title lines, table, notes) a blank line apart."""
        return self._render(markdown=True)

    def text(self) -> str:
        """The report as plain text with aligned columns (a terminal's form)."""
        return self._render(markdown=False)

    def write(self, path: str) -> None:
        """Write the Markdown report to ``path`` atomically (its folder made where missing)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_text_atomically(path, self.markdown())

    def show(self, stream: TextIO | None = None) -> None:
        """Print the report to ``stream`` (default stdout): plain text on a terminal, else Markdown (a pipe or a
        file gets what ``write`` writes)."""
        stream = sys.stdout if stream is None else stream
        print(self.text() if stream.isatty() else self.markdown(), end="", file=stream)
