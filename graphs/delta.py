"""A partitioned graph plus the changes since it was partitioned: the read side ILLE uses.

:class:`DeltaGraph` answers the same ``neighbors`` / ``degree`` questions as
:class:`~graphs.shards.ShardStore`, over the memory-mapped base shards plus an
append-only delta of added edges, minus removed edges, and over nodes added after the
base (their ids continue each type's dense range: the first new user is ``count(user)``).

Edges are directed here, exactly as in the shards: an updater adds the half-edges whose
source it owns (the owner rule), and the reverse half-edge goes to the owner of the
other end. Memory is the delta only; the base stays on disk.
"""

from __future__ import annotations

import numpy as np

from graphs.exceptions import GraphFormatError
from graphs.shards import Neighbors, ShardStore, gather_ranges

_PAIR = np.int64(1) << 32   # removed-edge key: src * 2**32 + dst (ids below 2**32)


class _EdgeLog:
    """Added half-edges of one edge type: chunks appended, sorted by src on first read."""

    def __init__(self) -> None:
        self.chunks: list[tuple[np.ndarray, ...]] = []
        self.sorted: tuple[np.ndarray, ...] | None = None   # src, dst, ts, weight; by src

    def append(self, src, dst, ts, weight) -> None:
        self.chunks.append((src, dst, ts, weight))
        self.sorted = None

    def columns(self) -> tuple[np.ndarray, ...]:
        if self.sorted is None:
            cols = [np.concatenate(c) for c in zip(*self.chunks)]
            order = np.argsort(cols[0], kind="stable")
            self.sorted = tuple(c[order] for c in cols)
            self.chunks = [self.sorted]
        return self.sorted


class DeltaGraph:
    """Base shard store + added nodes + added and removed half-edges.

    ``counts[t]``: nodes of type t now (base + added). ``neighbors(ekey, ids [B], cap)``
    returns a :class:`Neighbors` whose rows list base neighbours first, then added ones,
    without removed edges; ``ts`` and ``weight`` are always filled (0 and 1 where the edge
    type has none). Ids of added nodes are accepted everywhere an id is.
    """

    def __init__(self, store: ShardStore):
        self.store = store
        self.schema, self.edge_types = store.schema, store.edge_types
        self.base_counts = dict(store.counts)
        self.counts = dict(store.counts)
        self._added: dict[str, _EdgeLog] = {}
        self._removed: dict[str, set[int]] = {}
        self._removed_src: dict[str, set[int]] = {}
        self.changes: dict[str, dict[int, int]] = {}    # ntype -> {id: half-edges added or removed}

    def edge_types_from(self, ntype: str):
        return self.store.edge_types_from(ntype)

    def add_nodes(self, ntype: str, n: int) -> np.ndarray:
        """Append ``n`` nodes of ``ntype``; returns their ids ``[n]``."""
        if ntype not in self.counts:
            raise GraphFormatError(f"unknown node type {ntype!r}; known: {sorted(self.counts)}")
        first = self.counts[ntype]
        self.counts[ntype] = first + n
        return np.arange(first, first + n, dtype=np.int64)

    def add_edges(self, ekey: str, src, dst, ts=None, weight=None) -> None:
        """Add half-edges ``src -> dst`` of ``ekey`` (each ``[M]``; ts int64, weight float32)."""
        etype, src, dst = self._check(ekey, src, dst)
        ts = np.zeros(len(src), np.int64) if ts is None else np.asarray(ts, np.int64)
        weight = np.ones(len(src), np.float32) if weight is None else np.asarray(weight, np.float32)
        self._added.setdefault(ekey, _EdgeLog()).append(src, dst, ts, weight)
        removed = self._removed.get(ekey)
        if removed:
            removed.difference_update((src * _PAIR + dst).tolist())
        self._count_changes(etype.src, src)

    def remove_edges(self, ekey: str, src, dst) -> None:
        """Remove half-edges ``src -> dst`` of ``ekey`` (base or added; all copies)."""
        etype, src, dst = self._check(ekey, src, dst)
        self._removed.setdefault(ekey, set()).update((src * _PAIR + dst).tolist())
        self._removed_src.setdefault(ekey, set()).update(src.tolist())
        self._count_changes(etype.src, src)

    def changed(self, ntype: str, ids: np.ndarray) -> np.ndarray:
        """Half-edges added or removed at each of ``ids: [B]`` since the base -> ``[B]``."""
        seen = self.changes.get(ntype, {})
        return np.fromiter((seen.get(int(i), 0) for i in ids), np.int64, len(ids))

    def neighbors(self, ekey: str, ids: np.ndarray, cap: int | None = None) -> Neighbors:
        """Neighbours of ``ids: [B]`` in ``ekey``, base then added, removed ones dropped.

        ``cap`` bounds the base part per node (see :meth:`ShardStore.neighbors`).
        """
        etype, ids, _ = self._check(ekey, ids, np.zeros(0, np.int64))
        owner, dst, ts, weight = [], [], [], []
        in_base = np.flatnonzero(ids < self.base_counts[etype.src])
        if len(in_base):
            nb = self.store.neighbors(ekey, ids[in_base], cap=cap)
            owner.append(np.repeat(in_base, nb.degree))
            dst.append(nb.ids)
            ts.append(nb.ts if nb.ts is not None else np.zeros(len(nb.ids), np.int64))
            weight.append(nb.weight if nb.weight is not None else np.ones(len(nb.ids), np.float32))
        if ekey in self._added:
            a_src, a_dst, a_ts, a_w = self._added[ekey].columns()
            lo, hi = np.searchsorted(a_src, ids, "left"), np.searchsorted(a_src, ids, "right")
            pos, ptr = gather_ranges(lo, hi)
            owner.append(np.repeat(np.arange(len(ids)), np.diff(ptr)))
            dst.append(a_dst[pos])
            ts.append(a_ts[pos])
            weight.append(a_w[pos])
        if not owner:
            return Neighbors(np.zeros(len(ids) + 1, np.int64), np.zeros(0, np.int64),
                             np.zeros(0, np.int64), np.zeros(0, np.float32))
        owner, dst, ts, weight = (np.concatenate(c) for c in (owner, dst, ts, weight))
        if self._removed.get(ekey):
            gone = np.fromiter(self._removed[ekey], np.int64, len(self._removed[ekey]))
            keep = ~np.isin(ids[owner] * _PAIR + dst, gone)
            owner, dst, ts, weight = owner[keep], dst[keep], ts[keep], weight[keep]
        ptr = np.zeros(len(ids) + 1, np.int64)
        np.cumsum(np.bincount(owner, minlength=len(ids)), out=ptr[1:])
        if len(owner) > 1 and (owner[1:] < owner[:-1]).any():        # base then added: regroup
            order = np.argsort(owner, kind="stable")
            dst, ts, weight = dst[order], ts[order], weight[order]
        return Neighbors(ptr, dst, ts, weight)

    def degree(self, ekey: str, ids: np.ndarray) -> np.ndarray:
        """Current out-degree in ``ekey`` of ``ids: [B]`` -> ``[B]``: base indptr plus added
        half-edges (a binary search), counted exactly only where edges were removed."""
        ids = np.asarray(ids, np.int64)
        etype = self._check(ekey, ids, np.zeros(0, np.int64))[0]
        base = ids < self.base_counts[etype.src]
        out = np.zeros(len(ids), np.int64)
        out[base] = self.store.degree(ekey, ids[base])
        if ekey in self._added:
            a_src = self._added[ekey].columns()[0]
            out += np.searchsorted(a_src, ids, "right") - np.searchsorted(a_src, ids, "left")
        if self._removed.get(ekey):
            hit = np.flatnonzero(np.isin(ids, list(self._removed_src[ekey])))
            if len(hit):
                out[hit] = self.neighbors(ekey, ids[hit]).degree
        return out

    def _check(self, ekey: str, src, dst):
        etype = self.edge_types.get(ekey)
        if etype is None:
            raise GraphFormatError(f"unknown edge type {ekey!r}; known: {sorted(self.edge_types)}")
        src, dst = np.asarray(src, np.int64).ravel(), np.asarray(dst, np.int64).ravel()
        for name, ids, ntype in (("src", src, etype.src), ("dst", dst, etype.dst)):
            bad = (ids < 0) | (ids >= self.counts[ntype])
            if bad.any():
                raise GraphFormatError(f"edge type {ekey!r}: {name} id {ids[bad][0]} out of range for "
                                       f"type {ntype!r} ({self.counts[ntype]} nodes)")
        return etype, src, dst

    def _count_changes(self, ntype: str, ids: np.ndarray) -> None:
        seen = self.changes.setdefault(ntype, {})
        for i, c in zip(*np.unique(ids, return_counts=True)):
            seen[int(i)] = seen.get(int(i), 0) + int(c)
