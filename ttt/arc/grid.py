"""ARC grids: an immutable, validated value type, plus text rendering and lenient parsing of model output.

A grid is 1–30 rows by 1–30 columns of colours 0–9. Construction validates and raises `GridError` naming where
the grid came from (task, example) and what is wrong; parsing model output never raises — it returns a
`ParsedGrid` carrying the failure reason, because garbage from a model is data to record, not a crash.

Text formats (`GridFormat`):
- ``nested``: Python nested lists, ``[[0, 1], [2, 3]]`` (the default; JSON-compatible).
- ``numpy``: NumPy's ``str()`` of the array, ``[[0 1]\\n [2 3]]`` — the literal text SEAL's code writes,
  because its grids are NumPy arrays passed through ``str()``.
- ``digits``: one line of digits per row, ``01\\n23`` (compact: about a token per cell for most tokenizers).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Literal

MAX_SIDE = 30
GridFormat = Literal["nested", "numpy", "digits"]
GRID_FORMATS: tuple[str, ...] = ("nested", "numpy", "digits")

Rows = tuple[tuple[int, ...], ...]


class GridError(ValueError):
    """An invalid grid in input data (a task file, a dataset): names where it came from and what is wrong."""


class GridTooLargeError(GridError):
    """An augmentation produced a grid with a side over 30; callers filter such tasks out."""


def _where(task_id: str | None, where: str | None) -> str:
    parts = [p for p in (f"task {task_id}" if task_id else None, where) if p]
    return (", ".join(parts) + ": ") if parts else ""


class Grid:
    """An immutable, hashable ARC grid. Equality and hashing are by content.

    `Grid(data, task_id=..., where=...)` accepts any nested sequence of integers (lists, tuples, NumPy
    arrays); `task_id` and `where` (e.g. ``"train[2].output"``) only serve the error message.
    """

    __slots__ = ("_hash", "_rows")

    def __init__(self, data: Any, *, task_id: str | None = None, where: str | None = None) -> None:
        rows = _validated_rows(data, _where(task_id, where))
        object.__setattr__(self, "_rows", rows)
        object.__setattr__(self, "_hash", hash(rows))

    @classmethod
    def _trusted(cls, rows: Rows) -> Grid:
        """Wrap rows produced by our own transforms of valid grids: values are known to be 0–9 and the
        shape rectangular, so only the size is checked (scale/tile/reflect can exceed 30)."""
        height, width = len(rows), len(rows[0])
        if height > MAX_SIDE or width > MAX_SIDE:
            raise GridTooLargeError(f"grid of {height}x{width} exceeds the {MAX_SIDE}x{MAX_SIDE} limit")
        grid = object.__new__(cls)
        object.__setattr__(grid, "_rows", rows)
        object.__setattr__(grid, "_hash", hash(rows))
        return grid

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Grid is immutable")

    @property
    def rows(self) -> Rows:
        return self._rows

    @property
    def height(self) -> int:
        return len(self._rows)

    @property
    def width(self) -> int:
        return len(self._rows[0])

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self._rows), len(self._rows[0]))

    def colors(self) -> frozenset[int]:
        return frozenset(v for row in self._rows for v in row)

    def to_list(self) -> list[list[int]]:
        return [list(row) for row in self._rows]

    def to_text(self, fmt: GridFormat = "nested") -> str:
        return grid_to_text(self, fmt)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Grid) and self._rows == other._rows

    def __hash__(self) -> int:
        return self._hash

    def __lt__(self, other: Grid) -> bool:  # a total order for deterministic sorting of candidates
        return (self.shape, self._rows) < (other.shape, other._rows)

    def __repr__(self) -> str:
        return f"Grid({self.to_list()!r})"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable for multiprocessing (data only, never from outside)
        return (Grid, (self.to_list(),))


def _validated_rows(data: Any, where: str) -> Rows:
    if isinstance(data, Grid):
        return data.rows
    if hasattr(data, "tolist"):  # NumPy arrays: iterate plain Python ints
        data = data.tolist()
    if isinstance(data, (str, bytes)) or not isinstance(data, Sequence):
        raise GridError(f"{where}a grid must be a list of rows, got {type(data).__name__}")
    if not 1 <= len(data) <= MAX_SIDE:
        raise GridError(f"{where}a grid needs 1 to {MAX_SIDE} rows, got {len(data)}")
    rows: list[tuple[int, ...]] = []
    width = None
    for r, row in enumerate(data):
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
            raise GridError(f"{where}row {r} must be a list of integers, got {type(row).__name__}")
        if width is None:
            width = len(row)
            if not 1 <= width <= MAX_SIDE:
                raise GridError(f"{where}a grid needs 1 to {MAX_SIDE} columns, row 0 has {width}")
        elif len(row) != width:
            raise GridError(f"{where}row {r} has {len(row)} cells but row 0 has {width} (grids must be rectangular)")
        cells = []
        for c, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, Integral) or not 0 <= int(value) <= 9:
                raise GridError(f"{where}cell ({r}, {c}) is {value!r}; colours must be integers 0-9")
            cells.append(int(value))
        rows.append(tuple(cells))
    return tuple(rows)


# ------------------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------------------


def grid_to_text(grid: Grid, fmt: GridFormat = "nested") -> str:
    """Render a grid in one of `GRID_FORMATS` (see the module docstring)."""
    rows = grid.rows
    if fmt == "nested":
        return "[" + ", ".join("[" + ", ".join(map(str, row)) + "]" for row in rows) + "]"
    if fmt == "numpy":
        return "[" + "\n ".join("[" + " ".join(map(str, row)) + "]" for row in rows) + "]"
    if fmt == "digits":
        return "\n".join("".join(map(str, row)) for row in rows)
    raise ValueError(f"unknown grid format {fmt!r}; expected one of {', '.join(GRID_FORMATS)}")


def grid_alphabet(fmt: GridFormat = "nested") -> str:
    """Every character `grid_to_text` can write in format `fmt` (for decoding constrained to a grid)."""
    extra = {"nested": "[], ", "numpy": "[] \n", "digits": "\n"}[check_format(fmt)]
    return "0123456789" + extra


def check_format(fmt: str) -> GridFormat:
    if fmt not in GRID_FORMATS:
        raise ValueError(f"unknown grid format {fmt!r}; expected one of {', '.join(GRID_FORMATS)}")
    return fmt  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------------------
# Parsing (model output or any text): never raises on bad text
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedGrid:
    """The outcome of parsing text: a grid, or the reason there is none. `text` is what was parsed."""

    text: str
    grid: Grid | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.grid is not None


_ROW_RE = re.compile(r"\[([^\[\]]*)\]")
_CELL_SPLIT_RE = re.compile(r"[,\s]+")


_ASCII_DIGITS = frozenset("0123456789")


def parse_grid(text: str, fmt: GridFormat = "nested", *, footer: str = "#") -> ParsedGrid:
    """Parse a grid from `text` written in `fmt`; the answer ends at the first `footer` (SEAL's ``#``).

    Lenient where it is safe: leading/trailing whitespace is ignored, and the bracket formats (``nested`` and
    ``numpy``) accept each other's separators. Never evaluates the text. Failures are returned, not raised.
    """
    if not isinstance(text, str):
        return ParsedGrid(text=repr(text), error=f"output is {type(text).__name__}, not text")
    body = text.split(footer, 1)[0] if footer else text
    body = body.strip()
    if not body:
        return ParsedGrid(text=text, error="empty output")
    if fmt in ("nested", "numpy"):
        rows_or_error = _parse_bracketed(body)
    elif fmt == "digits":
        rows_or_error = _parse_digit_rows(body)
    else:
        return ParsedGrid(text=text, error=f"unknown grid format {fmt!r}")
    if isinstance(rows_or_error, str):
        return ParsedGrid(text=text, error=rows_or_error)
    try:
        return ParsedGrid(text=text, grid=Grid(rows_or_error))
    except GridError as exc:
        return ParsedGrid(text=text, error=str(exc))


def _parse_bracketed(body: str) -> list[list[int]] | str:
    start = body.find("[[")
    if start < 0:
        return "no '[[' found: not a nested-list grid"
    end = body.find("]]", start)
    if end < 0:
        return "unterminated grid: no closing ']]'"
    block = body[start : end + 2]
    inner = block[1:-1]
    rows_text = _ROW_RE.findall(inner)
    # Anything but separators between the rows means the structure is not a plain list of lists.
    leftover = _ROW_RE.sub("", inner).replace(",", "").strip()
    if leftover:
        return f"unexpected text between rows: {leftover[:40]!r}"
    rows: list[list[int]] = []
    for r, row_text in enumerate(rows_text):
        cells = [c for c in _CELL_SPLIT_RE.split(row_text.strip()) if c]
        if not cells:
            return f"row {r} is empty"
        for c in cells:
            if len(c) != 1 or c not in _ASCII_DIGITS:  # str.isdigit() also accepts '²', '①', ...
                return f"row {r} has cell {c[:12]!r}; colours must be single digits 0-9"
        rows.append([int(c) for c in cells])
    return rows


def _parse_digit_rows(body: str) -> list[list[int]] | str:
    rows: list[list[int]] = []
    for r, line in enumerate(body.splitlines()):
        cells = line.replace(" ", "").strip()
        if not cells:
            if rows:
                break  # a blank line ends the grid
            continue
        if not all(c in _ASCII_DIGITS for c in cells):
            if rows:
                break  # trailing text after the grid is ignored
            return f"line {r} is not a row of digits: {line[:40]!r}"
        rows.append([int(c) for c in cells])
    if not rows:
        return "no digit rows found"
    return rows
