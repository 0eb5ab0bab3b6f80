"""Readers for recommendation source files: RecBole atomic files and the GroupLens originals.

RecBole atomic files (https://recbole.io/docs/user_guide/data/atomic_files.html) are
UTF-8, tab-separated text with a typed header, one ``name:type`` per column::

    user_id:token   item_id:token   rating:float    timestamp:float
    196             242             3               881250949

Types: ``token`` (a string, kept as written, spaces included), ``token_seq`` (strings
separated by spaces), ``float`` and ``float_seq`` (floats separated by spaces). As in
RecBole, only the space character separates sequence items and empty items are dropped;
only the tab separates fields. Columns are parsed by their declared type, never by a fixed
name. The GroupLens originals (``u.data``, ``u.item``, ``u.user``, ``u.genre``) are read
into the same tables, with RecBole's column names, so one builder serves both.

Errors name the file, the line (1-based, the header is line 1) and the column.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from graphs.exceptions import DataSourceError, GraphFormatError

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
ATOMIC_EXTS = ("inter", "item", "user", "kg", "link")
# Genre flag order of u.item when u.genre is absent (the GroupLens README).
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")
_YEAR_IN_TITLE = re.compile(r"\s*\(\d{4}\)\s*$")


@dataclass
class AtomicTable:
    """One parsed file: ``columns[name]`` holds one value per row, typed per ``types[name]``.

    Missing values: ``None`` for ``token``, ``nan`` for ``float``, ``[]`` for the sequences.
    ``lines[row]`` is the row's line number in ``path``, for error messages.
    """

    path: Path
    types: dict[str, str]
    columns: dict[str, list] = field(default_factory=dict)
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lines)

    def names(self, *kinds: str) -> list[str]:
        """Column names of the given atomic types, in file order."""
        return [n for n, t in self.types.items() if t in kinds]

    def where(self, row: int, column: str) -> str:
        return f"{self.path}: line {self.lines[row]}, column {column!r}"


@dataclass
class AtomicDataset:
    """The tables of one dataset; only ``inter`` is required."""

    name: str
    inter: AtomicTable
    user: AtomicTable | None = None
    item: AtomicTable | None = None
    kg: AtomicTable | None = None
    link: AtomicTable | None = None


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every non-blank line; unreadable files are DataSourceError."""
    try:
        with open(path, encoding=encoding) as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line
    except (OSError, UnicodeDecodeError) as err:
        raise DataSourceError(f"{path}: cannot read ({type(err).__name__}: {err})") from None


def _float(value: str, where: str) -> float:
    if value == "":
        return math.nan
    try:
        return float(value)
    except ValueError:
        raise GraphFormatError(f"{where}: {value!r} is not a float") from None


def _items(value: str) -> list[str]:
    """A sequence cell's items: RecBole splits on the space character only, dropping empties."""
    return [v for v in value.split(" ") if v]


def _parse_value(kind: str, value: str, where: str):
    if kind == "token":
        return value if value != "" else None
    if kind == "token_seq":
        return _items(value)
    if kind == "float":
        return _float(value, where)
    return [_float(v, where) for v in _items(value)]


def _append(table: AtomicTable, number: int, fields: list[str]) -> None:
    if len(fields) != len(table.types):
        raise GraphFormatError(f"{table.path}: line {number}: {len(fields)} fields, the header declares "
                               f"{len(table.types)} ({', '.join(table.types)})")
    for (name, kind), value in zip(table.types.items(), fields):
        where = f"{table.path}: line {number}, column {name!r}"
        table.columns[name].append(_parse_value(kind, value, where))
    table.lines.append(number)


def _header(path: Path, line: str) -> dict[str, str]:
    types: dict[str, str] = {}
    for i, item in enumerate(line.split("\t"), start=1):
        name, sep, kind = item.rpartition(":")
        if not sep or not name or kind not in ATOMIC_TYPES:
            raise GraphFormatError(f"{path}: line 1, column {i} ({item!r}): expected 'name:type' with "
                                   f"type one of {ATOMIC_TYPES}")
        if name in types:
            raise GraphFormatError(f"{path}: line 1, column {i}: duplicate column name {name!r}")
        types[name] = kind
    return types


def read_atomic(path: Path) -> AtomicTable:
    """Parse one RecBole atomic file by the types its header declares."""
    lines = _lines(path, "utf-8-sig")               # -sig: a byte-order mark is not part of the header
    first = next(lines, None)
    if first is None:
        raise GraphFormatError(f"{path}: empty file, expected a 'name:type' header line")
    types = _header(path, first[1])
    table = AtomicTable(path, types, {n: [] for n in types})
    for number, line in lines:
        _append(table, number, line.split("\t"))
    return table


def _genre_names(path: Path) -> tuple[str, ...]:
    """``u.genre``: ``name|index`` per line, indices 0..G-1 giving the flag order of u.item."""
    if not path.is_file():
        return ML100K_GENRES
    names: dict[int, str] = {}
    for number, line in _lines(path, "latin-1"):
        name, _, index = line.partition("|")
        if not index.strip().isdigit():
            raise GraphFormatError(f"{path}: line {number}: expected 'name|index', got {line!r}")
        names[int(index)] = name
    if sorted(names) != list(range(len(names))):
        raise GraphFormatError(f"{path}: genre indices {sorted(names)} are not 0..{len(names) - 1}")
    return tuple(names[i] for i in range(len(names)))


def read_grouplens(folder: Path) -> AtomicDataset:
    """Read ``u.data``/``u.item``/``u.user`` (+ ``u.genre``) into RecBole-shaped tables."""
    inter = AtomicTable(folder / "u.data", {"user_id": "token", "item_id": "token",
                                            "rating": "float", "timestamp": "float"})
    inter.columns = {n: [] for n in inter.types}
    for number, line in _lines(inter.path, "latin-1"):
        _append(inter, number, line.split("\t"))

    user = AtomicTable(folder / "u.user", {"user_id": "token", "age": "token", "gender": "token",
                                           "occupation": "token", "zip_code": "token"})
    user.columns = {n: [] for n in user.types}
    for number, line in _lines(user.path, "latin-1"):
        _append(user, number, line.split("|"))

    genres = _genre_names(folder / "u.genre")
    item = AtomicTable(folder / "u.item", {"item_id": "token", "movie_title": "token_seq",
                                           "release_year": "token", "class": "token_seq"})
    item.columns = {n: [] for n in item.types}
    for number, line in _lines(item.path, "latin-1"):
        fields = line.split("|")
        # id | title | release date | video release date | IMDb URL | one 0/1 flag per genre
        if len(fields) != 5 + len(genres):
            raise GraphFormatError(f"{item.path}: line {number}: {len(fields)} fields, expected "
                                   f"{5 + len(genres)} (5 + one flag per genre of {list(genres)})")
        flags = fields[5:]
        for genre, flag in zip(genres, flags):
            if flag not in ("0", "1"):
                raise GraphFormatError(f"{item.path}: line {number}, genre flag {genre!r}: "
                                       f"{flag!r} is not 0 or 1")
        year = fields[2][-4:] if re.search(r"\d{4}$", fields[2]) else ""
        title = _YEAR_IN_TITLE.sub("", fields[1])
        in_genres = " ".join(g.replace(" ", "_") for g, f in zip(genres, flags) if f == "1")
        _append(item, number, [fields[0], title, year, in_genres])
    return AtomicDataset(folder.name, inter, user=user, item=item)


def _pick(folder: Path, stem: str, ext: str) -> Path | None:
    """``<stem>.<ext>``, else the one ``*.<ext>`` of the folder, else None."""
    exact = folder / f"{stem}.{ext}"
    if exact.is_file():
        return exact
    found = sorted(folder.glob(f"*.{ext}"))
    if len(found) > 1:
        raise DataSourceError(f"{folder}: several .{ext} files {[p.name for p in found]} and none "
                              f"named {exact.name}; keep one dataset per folder")
    return found[0] if found else None


def read_source(folder: Path) -> AtomicDataset:
    """Detect the format of ``folder`` (RecBole atomic or GroupLens) and read its tables."""
    folder = Path(folder)
    wanted = ("RecBole atomic files (<name>.inter, optional .item/.user/.kg/.link) or the "
              "GroupLens files (u.data, u.item, u.user, optional u.genre)")
    if not folder.is_dir():
        raise DataSourceError(f"{folder}: no such folder; expected it to hold {wanted}")
    inters = sorted(folder.glob("*.inter"))
    if len(inters) > 1:
        raise DataSourceError(f"{folder}: several .inter files {[p.name for p in inters]}; "
                              "keep one dataset per folder")
    if inters:
        stem = inters[0].stem
        paths = {ext: _pick(folder, stem, ext) for ext in ATOMIC_EXTS[1:]}
        tables = {ext: read_atomic(p) for ext, p in paths.items() if p is not None}
        return AtomicDataset(stem, read_atomic(inters[0]), **tables)
    if (folder / "u.data").is_file():
        missing = [n for n in ("u.item", "u.user") if not (folder / n).is_file()]
        if missing:
            raise DataSourceError(f"{folder}: has u.data but not {missing}; GroupLens format needs "
                                  "u.data, u.item and u.user")
        return read_grouplens(folder)
    raise DataSourceError(f"{folder}: found neither *.inter nor u.data; expected {wanted}")
