"""The report's table model: one structure rendered to HTML, Markdown, LaTeX and CSV."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = [
    "MARK_DOWN",
    "MARK_UP",
    "Cell",
    "Head",
    "Row",
    "Table",
    "fmt_p",
    "fmt_pm",
    "header_grid",
    "signed",
    "sql_lit",
]

MARK_UP = "▲"  # significantly higher than the reference
MARK_DOWN = "▼"  # significantly lower than the reference


@dataclass
class Cell:
    text: str = ""
    value: float | None = None  # sort key (and the raw number for CSV)
    bold: bool = False
    underline: bool = False
    mark: str = ""  # MARK_UP / MARK_DOWN
    note: str = ""  # small suffix, e.g. a step difference or n
    title: str = ""  # tooltip
    numeric: bool = True
    cls: str = ""

    def plain(self) -> str:
        """Text with mark and note, no formatting (Markdown/CSV use it with their own markup)."""
        out = self.text + self.mark
        return f"{out} ({self.note})" if self.note else out


@dataclass
class Head:
    text: str
    colspan: int = 1
    rowspan: int = 1
    sort: int | None = None  # absolute column index this header sorts by
    note: str = ""
    title: str = ""


@dataclass
class Row:
    cells: list[Cell] = field(default_factory=list)
    group: str | None = None  # a label row spanning the table (family, metric, ...)
    cls: str = ""


@dataclass
class Table:
    id: str  # also the export file stem
    title: str
    header: list[list[Head]]
    rows: list[Row]
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    sql: str = ""  # a query over the documented views that reproduces the numbers
    sortable: bool = True

    @property
    def n_columns(self) -> int:
        return len(header_grid(self.header)[0]) if self.header else 0


def header_grid(header: list[list[Head]]) -> list[list[str]]:
    """Header texts on a full grid (rowspans and colspans resolved; continuations are '')."""
    if not header:
        return []
    n_cols = sum(h.colspan for h in header[0])
    grid: list[list[str | None]] = [[None] * n_cols for _ in header]
    for r, row in enumerate(header):
        c = 0
        for h in row:
            while c < n_cols and grid[r][c] is not None:
                c += 1
            text = h.text + (f" ({h.note})" if h.note else "")
            for dr in range(h.rowspan):
                for dc in range(h.colspan):
                    if r + dr < len(grid) and c + dc < n_cols:
                        grid[r + dr][c + dc] = text if (dr == 0 and dc == 0) else ""
            c += h.colspan
    return [[t or "" for t in row] for row in grid]


def fmt_pm(mean: float | None, std: float | None, scale: float = 100.0, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{scale * mean:.{digits}f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {scale * std:.{digits}f}"
    return text


def fmt_p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"


def signed(value: float, digits: int = 2) -> str:
    """``+1.23`` / ``-0.40``; a value that rounds to zero prints as ``+0.00``, never ``-0.00``."""
    return f"{round(value, digits) + 0.0:+.{digits}f}"


def sql_lit(value: object) -> str:
    """A SQL literal for display in reproduction queries."""
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"
