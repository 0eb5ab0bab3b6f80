"""Graph directories: an atomic streaming writer and a validating reader.

Layout (DESIGN.md)::

    <graph>/schema.json
    <graph>/nodes/<ntype>/part-*.parquet                 id, raw_id, feature columns
    <graph>/edges/<src>__<rel>__<dst>/part-*.parquet     src, dst, ts?, weight?

The writer streams: each ``write_*`` call appends a row group, so memory is bounded by
the batch a caller hands in. Everything goes to a hidden sibling folder that is renamed
into place only when the writer closes cleanly; a failed run leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from graphs.exceptions import ConfigError, GraphFormatError, OutputExistsError
from graphs.schema import GraphSchema

PART_ROWS = 1 << 26  # rows per part file before the writer starts a new one
ROW_GROUP_ROWS = 1 << 20


def temp_sibling(path: Path) -> Path:
    return path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``);
    False where the OS or the filesystem cannot, and nothing was changed."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(tmp: Path, final: Path, overwrite: bool) -> None:
    """Move a finished temp folder into place; the old one (if any) goes only after.

    Replacing swaps the two folders atomically, so a reader, or a crash at any instant,
    sees the old folder or the new one, never neither. Where the swap is not available, two
    renames leave a short window without ``final``; the old copy is then ``.<name>.tmp-*``.
    """
    if final.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise OutputExistsError(f"{final} already exists (pass overwrite=True / --overwrite to replace it)")
        if exchange(tmp, final):
            shutil.rmtree(tmp, ignore_errors=True)          # tmp now holds the old folder
            return
        old = temp_sibling(final)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)


def link_file(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (a copy where links are not allowed), making ``dst``'s folder."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def link_tree(src: Path, dst: Path, skip: set[Path] = frozenset()) -> None:
    """:func:`link_file` every file under ``src`` into ``dst``, except the paths in ``skip``
    (files or folders, relative to ``src``)."""
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        dirs[:] = [d for d in dirs if rel / d not in skip]
        for name in files:
            if rel / name not in skip:
                link_file(Path(root) / name, dst / rel / name)


def row_group_units(files: list[Path], chunk_rows: int | None = None) -> list[dict]:
    """Work items over part files, from their footers: ``{path, group, start, stop}``, one
    per row group, or per ``chunk_rows`` rows of one; :func:`read_units` reads them. A Ray
    Data job built ``from_items`` of these reads in its own tasks, with no file listing."""
    units = []
    for f in files:
        meta = pq.ParquetFile(f).metadata
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            step = chunk_rows or max(n, 1)
            units += [{"path": str(f), "group": g, "start": s, "stop": min(s + step, n)} for s in range(0, n, step)]
    return units


def read_units(units: pa.Table) -> pa.Table:
    """``units``: rows of :func:`row_group_units` -> those rows of the part files, in order."""
    return pa.concat_tables(
        pq.ParquetFile(u["path"]).read_row_group(u["group"]).slice(u["start"], u["stop"] - u["start"])
        for u in units.to_pylist())


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yields a temporary sibling of ``path`` to write; when the block ends it is fsynced
    and renamed onto ``path`` (readers see the old file or the whole new one), and removed
    if the block raised. The one way this project writes a file in place::

        with atomic_file(out / "model.pt") as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, doc: dict) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


class _PartWriter:
    """Appends tables of one type to ``part-00000.parquet``, ``part-00001.parquet``..."""

    def __init__(self, folder: Path, schema: pa.Schema, use_dictionary: bool = True):
        self.folder, self.schema, self.use_dictionary = folder, schema, use_dictionary
        self.rows, self._part, self._part_rows, self._writer = 0, 0, 0, None
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, table: pa.Table) -> None:
        if self._writer is not None and self._part_rows + table.num_rows > PART_ROWS:
            self.close()
            self._part += 1
        if self._writer is None:
            path = self.folder / f"part-{self._part:05d}.parquet"
            self._writer = pq.ParquetWriter(path, self.schema, compression="snappy",
                                            use_dictionary=self.use_dictionary)
            self._part_rows = 0
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.rows += table.num_rows
        self._part_rows += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class GraphWriter:
    """Write a graph directory in batches, atomically.

    ``schema`` names the types and features; the counts written to ``schema.json`` are
    the rows actually written. Use as a context manager::

        with GraphWriter(out, schema) as w:
            w.write_nodes("user", {"id": ids, "raw_id": raw, "age": age})
            w.write_edges("user__rates__movie", {"src": s, "dst": d, "ts": t})
    """

    def __init__(self, out: str | Path, schema: GraphSchema, overwrite: bool = False):
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise OutputExistsError(f"{self.out} already exists (pass overwrite=True / --overwrite to replace it)")
        self.schema, self.overwrite = schema, overwrite
        self.tmp = temp_sibling(self.out)
        self.tmp.mkdir(parents=True)
        self._parts: dict[str, _PartWriter] = {}
        self._linked: dict[str, int] = {}

    def _table(self, columns: dict | pa.Table, schema: pa.Schema, what: str) -> pa.Table:
        table = columns if isinstance(columns, pa.Table) else pa.table(
            {name: columns[name] for name in schema.names if name in columns}
        )
        missing = [n for n in schema.names if n not in table.column_names]
        if missing:
            raise GraphFormatError(f"{what}: missing columns {missing}; expected {schema.names}")
        try:
            return table.select(schema.names).cast(schema)
        except (ValueError, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
            # ValueError: Table.cast raises a plain one for nulls in a non-nullable column
            raise GraphFormatError(f"{what}: cannot store columns as {schema} ({err})") from None

    def write_nodes(self, ntype: str, columns: dict | pa.Table) -> None:
        node_type = self.schema.node_type(ntype)
        table = self._table(columns, node_type.arrow_schema(), f"nodes {ntype!r}")
        key = f"nodes/{ntype}"
        if key not in self._parts:
            self._parts[key] = _PartWriter(self.tmp / "nodes" / ntype, table.schema)
        self._parts[key].write(table)

    def write_edges(self, ekey: str, columns: dict | pa.Table) -> None:
        etype = self.schema.edge_type(ekey)
        table = self._table(columns, etype.arrow_schema(), f"edges {ekey!r}")
        key = f"edges/{ekey}"
        if key not in self._parts:
            # edge ids are high-cardinality: dictionary encoding is wasted work (~35% slower)
            self._parts[key] = _PartWriter(self.tmp / "edges" / ekey, table.schema, use_dictionary=False)
        self._parts[key].write(table)

    def link_nodes(self, ntype: str, files: list[Path], count: int) -> None:
        """Take another graph's part files of ``ntype`` (``count`` rows, the same columns),
        hard-linked instead of rewritten."""
        for f in files:
            link_file(f, self.tmp / "nodes" / ntype / f.name)
        self._linked[f"nodes/{ntype}"] = count

    def close(self) -> GraphSchema:
        """Finish the part files, write ``schema.json`` with the real counts, rename into place."""
        for part in self._parts.values():
            part.close()
        nodes = {n.name: self._rows(f"nodes/{n.name}") for n in self.schema.node_types}
        edges = {e.key: self._rows(f"edges/{e.key}") for e in self.schema.edge_types}
        final = self.schema.with_counts(nodes, edges)
        write_json_atomic(self.tmp / "schema.json", final.to_json())
        replace_dir(self.tmp, self.out, self.overwrite)
        return final

    def abort(self) -> None:
        for part in self._parts.values():
            part.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _rows(self, key: str) -> int:
        return self._parts[key].rows if key in self._parts else self._linked.get(key, 0)

    def __enter__(self) -> GraphWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class GraphDir:
    """A graph directory on disk: its schema and part files, validated on open.

    ``validate="fast"`` checks every file's footer (readable, columns, dtypes, row counts)
    and the parquet min/max statistics (ids in range, timestamps >= 0, no nulls); a row
    group whose statistics look wrong is scanned to name the first bad row. ``"full"``
    scans every value and also finds duplicate node ids and token ids out of range.
    ``"none"`` only reads the schema.
    """

    def __init__(self, path: str | Path, validate: str = "fast"):
        if validate not in ("none", "fast", "full"):
            raise ConfigError(f"validate must be 'none', 'fast' or 'full', got {validate!r}")
        self.path = Path(path).resolve()      # Ray tasks read it from other working directories
        if not self.path.is_dir():
            raise GraphFormatError(f"{self.path}: not a directory")
        self.schema = GraphSchema.load(self.path / "schema.json")
        if validate != "none":
            from graphs.validate import validate_graph

            validate_graph(self, full=(validate == "full"))

    def node_files(self, ntype: str) -> list[Path]:
        return sorted((self.path / "nodes" / ntype).glob("part-*.parquet"))

    def edge_files(self, ekey: str) -> list[Path]:
        return sorted((self.path / "edges" / ekey).glob("part-*.parquet"))

    def read_nodes(self, ntype: str, columns: list[str] | None = None) -> pa.Table:
        """Whole node table of one type, sorted by id (for small types and tests)."""
        files = self.node_files(ntype)
        if not files:
            return self.schema.node_type(ntype).arrow_schema().empty_table()
        table = pa.concat_tables(pq.read_table(f, columns=columns) for f in files)
        return table.sort_by("id") if "id" in table.column_names else table

    def iter_edges(self, ekey: str, batch_rows: int = ROW_GROUP_ROWS) -> Iterator[dict[str, np.ndarray]]:
        """Stream one edge type as numpy batches ``{"src": [B], "dst": [B], "ts"?: [B], "weight"?: [B]}``."""
        for f in self.edge_files(ekey):
            for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows):
                yield {name: batch.column(i).to_numpy() for i, name in enumerate(batch.schema.names)}

    def read_edges(self, ekey: str) -> dict[str, np.ndarray]:
        """Whole edge table of one type (for small graphs and tests)."""
        parts = list(self.iter_edges(ekey))
        if not parts:
            return {name: np.empty(0, dtype=t.to_pandas_dtype())
                    for name, t in zip(self.schema.edge_type(ekey).arrow_schema().names,
                                       self.schema.edge_type(ekey).arrow_schema().types)}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
