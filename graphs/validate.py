"""Validation of a graph directory against its schema.

Every error names the file, the column and, for bad values, the first bad row (0-based,
counted within the file). Fast mode reads only parquet footers and statistics, so a
billion-edge graph validates in the time it takes to open its files; a row group whose
statistics look wrong (or that has none) is scanned to find the row.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from graphs.exceptions import GraphFormatError

if TYPE_CHECKING:
    from graphs.store import GraphDir


def open_parquet(path: Path) -> pq.ParquetFile:
    """Open a part file; an empty or truncated one gets a clear error."""
    if path.stat().st_size == 0:
        raise GraphFormatError(f"{path}: empty file (0 bytes), not a parquet file")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise GraphFormatError(f"{path}: truncated or corrupt parquet file ({err})") from None


def check_columns(path: Path, pf: pq.ParquetFile, expected: pa.Schema) -> None:
    actual = pf.schema_arrow
    missing = [n for n in expected.names if n not in actual.names]
    extra = [n for n in actual.names if n not in expected.names]
    if missing:
        raise GraphFormatError(f"{path}: missing column(s) {missing}; expected {expected.names}")
    if extra:
        raise GraphFormatError(f"{path}: unexpected column(s) {extra}; expected {expected.names}")
    for f in expected:
        got = actual.field(f.name).type
        if got != f.type:
            hint = ""
            if f.name == "ts" and pa.types.is_floating(got):
                nan_row = _first_row(pf, "ts", lambda a: pc.fill_null(pc.is_nan(a), False).to_numpy(zero_copy_only=False))
                if nan_row is not None:
                    hint = f"; NaN timestamp at row {nan_row}"
            raise GraphFormatError(f"{path}: column {f.name!r} has type {got}, expected {f.type}{hint}")


def _first_row(pf: pq.ParquetFile, column: str, is_bad, groups=None) -> int | None:
    """Index within the file of the first row where ``is_bad(values) -> bool[rows]`` holds, or None."""
    before = 0
    for g in range(pf.num_row_groups):
        rows = pf.metadata.row_group(g).num_rows
        if groups is None or g in groups:
            values = pf.read_row_group(g, columns=[column]).column(0)
            mask = is_bad(values)
            hit = np.flatnonzero(mask)
            if hit.size:
                return before + int(hit[0])
        before += rows
    return None


def _stats(pf: pq.ParquetFile, g: int, column: str):
    rg = pf.metadata.row_group(g)
    for c in range(rg.num_columns):
        col = rg.column(c)
        if col.path_in_schema == column:
            s = col.statistics
            if s is None or not s.has_min_max:
                return None
            return s.min, s.max, s.null_count
    return None


def check_range(path: Path, pf: pq.ParquetFile, column: str, lo: int | None, hi: int | None,
                full: bool, nullable: bool = False, what: str = "") -> None:
    """Values of ``column`` must lie in ``[lo, hi)`` (either bound None = open); no nulls unless nullable."""
    suspect = []
    for g in range(pf.num_row_groups):
        st = None if full else _stats(pf, g, column)
        if st is None:
            suspect.append(g)
            continue
        mn, mx, nulls = st
        if (lo is not None and mn < lo) or (hi is not None and mx >= hi) or (nulls and not nullable):
            suspect.append(g)
    if not suspect:
        return

    def bad(a: pa.ChunkedArray) -> np.ndarray:
        nulls = a.is_null().to_numpy(zero_copy_only=False)
        vals = a.fill_null(0).to_numpy()
        out = np.zeros(len(vals), dtype=bool)
        if lo is not None:
            out |= vals < lo
        if hi is not None:
            out |= vals >= hi
        return out & ~nulls if nullable else out | nulls

    row = _first_row(pf, column, bad, set(suspect))
    if row is not None:
        value = pf.read(columns=[column]).column(0)[row].as_py()
        rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'})"
        problem = "is null" if value is None else f"= {value}, outside {rng}"
        raise GraphFormatError(f"{path}: column {column!r}, row {row}: value {problem}{what}")


def _check_type_dir(root: Path, kind: str, known: list[str]) -> None:
    folder = root / kind
    if not folder.is_dir():
        return
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.name not in known:
            raise GraphFormatError(f"{child}: folder for unknown {kind[:-1]} type {child.name!r}; "
                                   f"schema.json knows {known}")


def validate_graph(gdir: GraphDir, full: bool = False) -> None:
    """Check every part file of ``gdir`` against its schema; raise GraphFormatError on the first problem."""
    schema = gdir.schema
    _check_type_dir(gdir.path, "nodes", [n.name for n in schema.node_types])
    _check_type_dir(gdir.path, "edges", [e.key for e in schema.edge_types])
    counts = {n.name: n.count for n in schema.node_types}

    for ntype in schema.node_types:
        files = _open_counted(gdir.path / "nodes" / ntype.name, gdir.node_files(ntype.name), ntype.count)
        seen = np.zeros(ntype.count, dtype=bool) if full else None  # 1 byte per node, full mode only
        for path, pf in files:
            with _reading(path):
                check_columns(path, pf, ntype.arrow_schema())
                check_range(path, pf, "id", 0, ntype.count, full, what=f" (node type {ntype.name!r} has "
                            f"{ntype.count} nodes)")
                for feat in ntype.features:
                    if feat.kind == "categorical":
                        check_range(path, pf, feat.name, 0, feat.cardinality, full, nullable=True,
                                    what=f" (categorical feature, cardinality {feat.cardinality})")
                    if feat.kind == "token_list" and full:
                        _check_tokens(path, pf, feat.name, feat.cardinality)
                    if feat.kind == "dense" and full:
                        _check_finite(path, pf, feat.name, nullable=True)
                if full:
                    _check_unique_ids(path, pf, seen)

    for etype in schema.edge_types:
        for path, pf in _open_counted(gdir.path / "edges" / etype.key, gdir.edge_files(etype.key), etype.count):
            with _reading(path):
                check_columns(path, pf, etype.arrow_schema())
                check_range(path, pf, "src", 0, counts[etype.src], full,
                            what=f" (node type {etype.src!r} has {counts[etype.src]} nodes)")
                check_range(path, pf, "dst", 0, counts[etype.dst], full,
                            what=f" (node type {etype.dst!r} has {counts[etype.dst]} nodes)")
                if etype.ts:
                    check_range(path, pf, "ts", 0, None, full, what=" (timestamps are int64 seconds >= 0)")
                if etype.weight and full:
                    _check_finite(path, pf, "weight", nullable=False)


def _open_counted(folder: Path, files: list[Path], count: int) -> Iterator[tuple[Path, pq.ParquetFile]]:
    """The part files of one type, opened one at a time; their rows (from the footers) must
    add up to ``count``.

    Checked before any value: full mode allocates a byte per node, and a schema.json that
    promises 10**30 nodes must get this error, not a MemoryError. Footers are read in a first
    pass, each file closed after, so a type with thousands of parts never holds them all open.
    """
    rows = 0
    for path in files:
        with open_parquet(path) as pf:
            rows += pf.metadata.num_rows
    if rows != count:
        raise GraphFormatError(f"{folder}: {rows} rows in {len(files)} file(s), schema.json says count={count}")

    def one_at_a_time():
        for path in files:
            with open_parquet(path) as pf:
                yield path, pf
    return one_at_a_time()


@contextmanager
def _reading(path: Path):
    """A file whose footer opens but whose data pages do not (bytes overwritten) gets a clear error."""
    try:
        yield
    except (pa.ArrowException, OSError) as err:
        raise GraphFormatError(f"{path}: truncated or corrupt parquet file ({err})") from None


def _check_finite(path: Path, pf: pq.ParquetFile, column: str, nullable: bool) -> None:
    """Float values (every element of a fixed-size list) must be finite, and not null unless
    ``nullable``; parquet statistics skip NaN, so only full mode scans them."""
    def bad(a: pa.ChunkedArray) -> np.ndarray:
        a = a.combine_chunks()
        nulls = a.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_fixed_size_list(a.type):                  # a null element counts as bad
            out = np.zeros(len(a), dtype=bool)
            values = pc.list_flatten(a).to_numpy(zero_copy_only=False)
            out[pc.list_parent_indices(a).to_numpy()[~np.isfinite(values)]] = True
        else:
            out = ~np.isfinite(a.to_numpy(zero_copy_only=False)) & ~nulls   # nulls read as NaN
        return out if nullable else out | nulls

    row = _first_row(pf, column, bad)
    if row is not None:
        value = pf.read(columns=[column]).column(0)[row].as_py()
        problem = "is null" if value is None else f"{value} is not finite"
        raise GraphFormatError(f"{path}: column {column!r}, row {row}: value {problem}")


def _check_unique_ids(path: Path, pf: pq.ParquetFile, seen: np.ndarray) -> None:
    """Node ids must not repeat (within a file or across the type's files); ``seen: [count]``."""
    before = 0
    for g in range(pf.num_row_groups):
        ids = pf.read_row_group(g, columns=["id"]).column(0).to_numpy()
        order = np.argsort(ids, kind="stable")
        repeats = order[1:][ids[order][1:] == ids[order][:-1]]  # later occurrences within the group
        bad = np.concatenate([np.flatnonzero(seen[ids]), repeats])
        if bad.size:
            row = int(bad.min())
            raise GraphFormatError(f"{path}: column 'id', row {before + row}: "
                                   f"duplicate node id {int(ids[row])}")
        seen[ids] = True
        before += len(ids)


def _check_tokens(path: Path, pf: pq.ParquetFile, column: str, cardinality: int) -> None:
    """Every token of a token_list feature must lie in ``[0, cardinality)``."""
    before = 0
    for g in range(pf.num_row_groups):
        lists = pf.read_row_group(g, columns=[column]).column(0).combine_chunks()
        flat = pc.list_flatten(lists)
        values = flat.fill_null(-1).to_numpy()                  # a null token is out of range too
        bad = np.flatnonzero((values < 0) | (values >= cardinality))
        if bad.size:
            row = int(pc.list_parent_indices(lists).to_numpy()[bad[0]])
            token = flat[int(bad[0])].as_py()
            raise GraphFormatError(f"{path}: column {column!r}, row {before + row}: token "
                                   f"{'null' if token is None else token} outside [0, {cardinality}) "
                                   "(token_list feature)")
        before += len(lists)
