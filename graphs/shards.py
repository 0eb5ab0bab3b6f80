"""The partitioned graph: owner rule and a memory-mapped shard store.

Layout written by :func:`graphs.partition.partition_graph`::

    <parts>/meta.json                                   P, owner rule, edge types, counts, degree stats
    <parts>/shard-<p>/<src>__<rel>__<dst>/indptr.npy    int64 [rows_p + 1]
    <parts>/shard-<p>/<src>__<rel>__<dst>/indices.npy   int32|int64 [E_p]  dst ids within their type
    <parts>/shard-<p>/<src>__<rel>__<dst>/ts.npy        int64 [E_p]        when the type has ts
    <parts>/shard-<p>/<src>__<rel>__<dst>/weight.npy    float32 [E_p]      when the type has weight

Owner rule: node ``g`` (global id) lives in shard ``g % P``. It is a pure function, so
any process routes a node without a table, and a node's row inside its shard is
``(g - offset(type)) // P``, also without a table. Ids are dense and carry no degree order
(loaders assign them by raw id, the synthetic generator scrambles them), so the rule
balances nodes to within one per type and edges to within the hubs' share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from graphs.exceptions import GraphFormatError
from graphs.schema import EdgeType, GraphSchema

META_FORMAT = "hetrec-partitioned"
OWNER_RULE = "global_id % num_parts"


def owner(g: np.ndarray, num_parts: int) -> np.ndarray:
    """Shard of each global id. ``g: [N] int64 -> [N] int64``."""
    return g % num_parts


def first_owned(offset: int, num_parts: int) -> np.ndarray:
    """Smallest global id ``>= offset`` owned by each shard: ``[P]``."""
    p = np.arange(num_parts, dtype=np.int64)
    return offset + (p - offset) % num_parts


def owned_counts(offset: int, count: int, num_parts: int) -> np.ndarray:
    """Nodes of a type (global ids ``[offset, offset+count)``) owned by each shard: ``[P]``."""
    first = first_owned(offset, num_parts)
    return np.maximum(0, (offset + count - first + num_parts - 1) // num_parts)


def local_rows(g: np.ndarray, offset: int, num_parts: int) -> np.ndarray:
    """Row of each global id inside its owner's CSR of its type. ``[N] -> [N]``.

    With ``g = offset + id``, the owned ids of a shard step by P, so the row is ``id // P``.
    """
    return (g - offset) // num_parts


@dataclass
class Neighbors:
    """Neighbours of a batch of B nodes in one edge type, CSR-style.

    ``ptr: [B+1]``, node b's neighbours are ``ids[ptr[b]:ptr[b+1]]`` (ids within the dst
    type); ``ts``/``weight: [M]`` when the edge type has them, else None.
    """

    ptr: np.ndarray
    ids: np.ndarray
    ts: np.ndarray | None = None
    weight: np.ndarray | None = None

    @property
    def degree(self) -> np.ndarray:
        return np.diff(self.ptr)


def gather_ranges(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``range(start[b], end[b])`` for every b, vectorised.

    Returns ``(positions [sum(end-start)], ptr [B+1])``.
    """
    deg = end - start
    ptr = np.zeros(len(deg) + 1, dtype=np.int64)
    np.cumsum(deg, out=ptr[1:])
    pos = np.arange(ptr[-1], dtype=np.int64) + np.repeat(start - ptr[:-1], deg)
    return pos, ptr


class ShardStore:
    """Read side of a partitioned graph; every array is memory-mapped, nothing loaded whole.

    Any process (trainer worker, ILLE actor) can open it; ``shards`` restricts which shards
    it may read (an actor opens only its own).
    """

    def __init__(self, path: str | Path, shards: list[int] | None = None):
        self.path = Path(path).resolve()
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise GraphFormatError(f"{meta_path}: not found (is {self.path} a partitioned graph?)")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != META_FORMAT:
            raise GraphFormatError(f"{meta_path}: field 'format' is {self.meta.get('format')!r}, "
                                   f"expected {META_FORMAT!r}")
        self.num_parts: int = self.meta["num_parts"]
        self.schema = GraphSchema.from_json(self.meta["schema"], str(meta_path))
        self.edge_types: dict[str, EdgeType] = {e.key: e for e in self.schema.edge_types}
        self.shards = list(range(self.num_parts)) if shards is None else list(shards)
        self._csr: dict[tuple[int, str], dict[str, np.ndarray]] = {}

    @cached_property
    def counts(self) -> dict[str, int]:
        return {n.name: n.count for n in self.schema.node_types}

    @property
    def graph(self) -> Path:
        """The graph directory these shards were built from."""
        return Path(self.meta["graph"])

    def edge_types_from(self, ntype: str) -> list[EdgeType]:
        """Edge types whose source is ``ntype`` (reverses included): all of a node's neighbours."""
        return [e for e in self.schema.edge_types if e.src == ntype]

    def csr(self, part: int, ekey: str) -> dict[str, np.ndarray]:
        """``{"indptr": [rows+1], "indices": [E], "ts"?: [E], "weight"?: [E]}`` of one shard, mmapped."""
        if part not in self.shards:
            raise GraphFormatError(f"shard {part} is not open in this store (open: {self.shards})")
        if (part, ekey) not in self._csr:
            folder = self.path / f"shard-{part:05d}" / ekey
            if ekey not in self.edge_types or not folder.is_dir():
                raise GraphFormatError(f"{folder}: no such edge type in the partitioned graph")
            self._csr[(part, ekey)] = {
                f.stem: np.load(f, mmap_mode="r") for f in sorted(folder.glob("*.npy"))
            }
        return self._csr[(part, ekey)]

    def _rows(self, ekey: str, ids: np.ndarray):
        """Owner shard, CSR start and degree of each source id: ``(etype, parts, start, deg)``, each ``[B]``."""
        etype = self.edge_types.get(ekey)
        if etype is None:
            raise GraphFormatError(f"unknown edge type {ekey!r}; known: {sorted(self.edge_types)}")
        ids = np.asarray(ids, dtype=np.int64)
        count = self.counts[etype.src]
        if ids.size and (ids.min() < 0 or ids.max() >= count):
            bad = ids[(ids < 0) | (ids >= count)][0]
            raise GraphFormatError(f"node id {bad} out of range for type {etype.src!r} ({count} nodes)")
        offset = self.schema.offsets[etype.src]
        g = ids + offset
        parts, rows = owner(g, self.num_parts), local_rows(g, offset, self.num_parts)
        start = np.zeros(len(ids), dtype=np.int64)
        deg = np.zeros(len(ids), dtype=np.int64)
        for p in np.unique(parts):
            sel = parts == p
            indptr = self.csr(int(p), ekey)["indptr"]
            start[sel] = indptr[rows[sel]]
            deg[sel] = indptr[rows[sel] + 1] - start[sel]
        return etype, parts, start, deg

    def neighbors(self, ekey: str, ids: np.ndarray, cap: int | None = None) -> Neighbors:
        """Out-neighbours in edge type ``ekey`` of source nodes ``ids: [B]`` (ids within the src type).

        ``cap``: at most this many per node, evenly spaced over its CSR row (deterministic),
        so a hub costs ``cap`` reads, not its degree.
        """
        etype, parts, start, full = self._rows(ekey, ids)
        deg = full if cap is None else np.minimum(full, cap)
        ptr = np.zeros(len(deg) + 1, dtype=np.int64)
        np.cumsum(deg, out=ptr[1:])
        out = {"ids": np.empty(ptr[-1], dtype=np.int64)}
        if etype.ts:
            out["ts"] = np.empty(ptr[-1], dtype=np.int64)
        if etype.weight:
            out["weight"] = np.empty(ptr[-1], dtype=np.float32)
        for p in np.unique(parts):
            sel = np.flatnonzero(parts == p)
            dest, _ = gather_ranges(ptr[sel], ptr[sel] + deg[sel])
            if cap is None or not (full[sel] > deg[sel]).any():
                pos = dest + np.repeat(start[sel] - ptr[sel], deg[sel])
            else:                                                         # the j-th kept of a row of
                row = np.repeat(np.arange(len(sel)), deg[sel])            # `full` is at j * full // kept
                pos = start[sel][row] + (dest - ptr[sel][row]) * full[sel][row] // deg[sel][row]
            arrays = self.csr(int(p), ekey)
            out["ids"][dest] = arrays["indices"][pos]
            for col in ("ts", "weight"):
                if col in out:
                    out[col][dest] = arrays[col][pos]
        return Neighbors(ptr, out["ids"], out.get("ts"), out.get("weight"))

    def row_spans(self, ekey: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where the neighbours of ``ids: [B]`` in ``ekey`` live: ``(parts, start, degree)``, each
        ``[B]``; row b is ``csr(parts[b], ekey)[...][start[b]:start[b] + degree[b]]``."""
        return self._rows(ekey, ids)[1:]

    def read_at(self, ekey: str, parts: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Neighbour ids (and ts, when the type has them) at CSR positions ``pos: [M]`` of shards
        ``parts: [M]``: reads only those entries, so a sampled hub costs its sample, not its row."""
        etype = self.edge_types[ekey]
        ids = np.empty(len(pos), dtype=np.int64)
        ts = np.empty(len(pos), dtype=np.int64) if etype.ts else None
        for p in np.unique(parts):
            sel = np.flatnonzero(parts == p)
            arrays = self.csr(int(p), ekey)
            ids[sel] = arrays["indices"][pos[sel]]
            if ts is not None:
                ts[sel] = arrays["ts"][pos[sel]]
        return ids, ts

    def degree(self, ekey: str, ids: np.ndarray) -> np.ndarray:
        """Out-degree in ``ekey`` of ``ids: [B]`` -> ``[B]``, without touching the indices."""
        return self._rows(ekey, ids)[3]
