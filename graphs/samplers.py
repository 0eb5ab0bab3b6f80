"""Samplers over the shard store: fan-out mini-batches for training, k-nearest BFS for ILLE.

Both read only the CSR rows of the nodes they touch (memory-mapped), so their cost is
set by the batch and the fan-out, never by the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from graphs.shards import ShardStore, first_owned, gather_ranges


@dataclass
class SampledSubgraph:
    """A heterogeneous sampled neighbourhood.

    ``nodes[ntype]: [N_t]`` ids within the type; the seeds come first, in the order given.
    ``edges[ekey]: [2, E]`` local indices (row 0 into ``nodes[src]``, row 1 into
    ``nodes[dst]``) of the sampled edges of CSR type ``ekey``: from a frontier node (src)
    to its sampled neighbour (dst). Messages towards the seeds flow dst -> src.
    ``edge_ts[ekey]: [E]`` when the type has timestamps.
    """

    nodes: dict[str, np.ndarray]
    edges: dict[str, np.ndarray] = field(default_factory=dict)
    edge_ts: dict[str, np.ndarray] = field(default_factory=dict)


class _NodeIndex:
    """Assigns local indices to (type, id) pairs as they are discovered, vectorised.

    Per type: ``ids`` in local order, plus a sorted copy and its permutation for lookups.
    """

    def __init__(self, seeds: dict[str, np.ndarray]):
        self.ids: dict[str, np.ndarray] = {}
        self._sorted: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for t, v in seeds.items():
            self._set(t, np.asarray(v, dtype=np.int64))

    def _set(self, ntype: str, ids: np.ndarray) -> None:
        self.ids[ntype] = ids
        perm = np.argsort(ids, kind="stable")
        self._sorted[ntype] = (ids[perm], perm)

    def add(self, ntype: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local index of every id ``[M]``, and the ids new to this subgraph (first-seen order)."""
        known = self.ids.get(ntype, np.empty(0, dtype=np.int64))
        srt, perm = self._sorted.get(ntype, (known, known))
        pos = np.searchsorted(srt, ids)
        found = np.zeros(len(ids), dtype=bool)
        inside = pos < len(srt)
        found[inside] = srt[pos[inside]] == ids[inside]
        local = np.empty(len(ids), dtype=np.int64)
        local[found] = perm[pos[found]]
        uniq, first, inverse = np.unique(ids[~found], return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # new ids numbered in first-seen order
        rank = np.empty(len(uniq), dtype=np.int64)
        rank[order] = np.arange(len(uniq))
        local[~found] = len(known) + rank[inverse]
        new = uniq[order]
        self._set(ntype, np.concatenate([known, new]))
        return local, new

    def nodes(self) -> dict[str, np.ndarray]:
        return dict(self.ids)


def sample_fanout(store: ShardStore, seeds: dict[str, np.ndarray], fanouts: list[int],
                  rng: np.random.Generator, edge_types: list[str] | None = None) -> SampledSubgraph:
    """Uniform fan-out neighbour sampling, hop by hop (GraphSAGE style).

    At each hop every frontier node keeps up to ``fanouts[hop]`` neighbours per edge type:
    all of them when its degree is at most the fan-out, else a uniform sample without
    replacement. ``edge_types`` limits the types followed (default: all, reverses included).
    Seeds must be unique within each type.
    """
    if any(f < 1 for f in fanouts):
        raise ValueError(f"fanouts must all be >= 1, got {fanouts}")
    for ntype, ids in seeds.items():
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"seeds of type {ntype!r} repeat ids; pass np.unique(ids) and map back "
                             "with return_inverse")
    index = _NodeIndex(seeds)
    frontier = {t: np.asarray(v, dtype=np.int64) for t, v in seeds.items()}
    edges: dict[str, list[np.ndarray]] = {}
    edge_ts: dict[str, list[np.ndarray]] = {}
    allowed = set(edge_types) if edge_types is not None else None
    for fanout in fanouts:
        nxt: dict[str, list[np.ndarray]] = {}
        for ntype, ids in frontier.items():
            if ids.size == 0:
                continue
            src_local, _ = index.add(ntype, ids)
            for etype in store.edge_types_from(ntype):
                if allowed is not None and etype.key not in allowed:
                    continue
                nb = store.neighbors(etype.key, ids)
                pick = _choose(nb.degree, fanout, rng)
                if pick.size == 0:
                    continue
                owner_pos = np.searchsorted(nb.ptr, pick, side="right") - 1
                dst_local, new = index.add(etype.dst, nb.ids[pick])
                edges.setdefault(etype.key, []).append(np.stack([src_local[owner_pos], dst_local]))
                if nb.ts is not None:
                    edge_ts.setdefault(etype.key, []).append(nb.ts[pick])
                nxt.setdefault(etype.dst, []).append(new)
        frontier = {t: np.unique(np.concatenate(v)) for t, v in nxt.items()}
    return SampledSubgraph(index.nodes(), {k: np.concatenate(v, axis=1) for k, v in edges.items()},
                           {k: np.concatenate(v) for k, v in edge_ts.items()})


def _choose(degree: np.ndarray, fanout: int, rng: np.random.Generator) -> np.ndarray:
    """Positions (into the concatenated neighbour list) kept for each node, ``[sum(min(d, f))]``.

    Rows of at most ``fanout`` are kept whole. Larger rows keep the ``fanout`` candidates
    with the smallest random keys (a uniform sample without replacement); a row above
    ``4 * fanout`` first draws ``4 * fanout`` candidate positions (about 2.5 * fanout distinct
    on average), so no row costs more than O(fanout). One lexsort for all rows, no loop.
    """
    ptr = np.zeros(len(degree) + 1, dtype=np.int64)
    np.cumsum(degree, out=ptr[1:])
    small = degree <= fanout
    keep_all, _ = gather_ranges(ptr[:-1][small], ptr[1:][small])
    big = ~small & (degree <= 4 * fanout)
    hub = degree > 4 * fanout
    cand_big, _ = gather_ranges(ptr[:-1][big], ptr[1:][big])
    draws = ptr[:-1][hub, None] + (rng.random((int(hub.sum()), 4 * fanout)) * degree[hub, None]).astype(np.int64)
    cand = np.concatenate([cand_big, np.unique(draws.ravel())])
    if cand.size == 0:
        return np.sort(keep_all)
    row = np.searchsorted(ptr, cand, side="right") - 1
    order = np.lexsort((rng.random(len(cand)), row))
    row_sorted = row[order]
    rank = np.arange(len(cand)) - np.searchsorted(row_sorted, row_sorted, side="left")
    return np.sort(np.concatenate([keep_all, cand[order][rank < fanout]]))


@dataclass
class KNeighbors:
    """Up to k neighbours of one node for ILLE, best first.

    ``types: [k']`` node type names, ``ids: [k']`` ids within their type, ``hops: [k']``
    1 or 2, ``weight``/``ts: [k']`` of the connecting edge (1.0 / 0 where absent; for a
    2-hop neighbour, of its best path), ``paths: [k']`` how many paths reach it.
    """

    types: list[str]
    ids: np.ndarray
    hops: np.ndarray
    weight: np.ndarray
    ts: np.ndarray
    paths: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def _one_hop(store: ShardStore, ntype: str, ids: np.ndarray):
    """All out-neighbours of ``ids`` over every edge type from ``ntype``, as flat arrays."""
    types, nbrs, weights, times, origin = [], [], [], [], []
    for etype in store.edge_types_from(ntype):
        nb = store.neighbors(etype.key, ids)
        if nb.ids.size == 0:
            continue
        types += [etype.dst] * nb.ids.size
        nbrs.append(nb.ids)
        weights.append(nb.weight if nb.weight is not None else np.ones(nb.ids.size, np.float32))
        times.append(nb.ts if nb.ts is not None else np.zeros(nb.ids.size, np.int64))
        origin.append(np.repeat(np.arange(len(ids)), nb.degree))
    if not nbrs:
        e = np.empty(0, np.int64)
        return [], e, np.empty(0, np.float32), e, e
    return types, np.concatenate(nbrs), np.concatenate(weights), np.concatenate(times), np.concatenate(origin)


def _rank(types: list[str], ids: np.ndarray, weight: np.ndarray, ts: np.ndarray,
          exclude: set[tuple[str, int]]) -> tuple[list[tuple[str, int]], dict]:
    """Unique candidates ranked by (paths, weight, recency), best first; excluded ones dropped."""
    best: dict[tuple[str, int], list] = {}
    for t, i, w, s in zip(types, ids.tolist(), weight.tolist(), ts.tolist()):
        key = (t, i)
        if key in exclude:
            continue
        cur = best.get(key)
        if cur is None:
            best[key] = [1, w, s]
        else:
            cur[0] += 1
            if (w, s) > (cur[1], cur[2]):
                cur[1], cur[2] = w, s
    order = sorted(best, key=lambda k: (-best[k][0], -best[k][1], -best[k][2], k))
    return order, best


def k_hop_neighbors(store: ShardStore, ntype: str, node: int, k: int = 8,
                    has_embedding: Callable[[str, np.ndarray], np.ndarray] | None = None) -> KNeighbors:
    """BFS for ILLE: 1-hop neighbours first, then 2-hop, until ``k`` are found.

    Within a hop, candidates rank by the number of paths reaching them, then edge weight,
    then recency (ts). ``has_embedding(ntype, ids) -> bool [len(ids)]`` filters out nodes
    without an embedding (new nodes). The node itself is never its own neighbour.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    chosen: list[tuple[str, int, int, float, int, int]] = []
    exclude = {(ntype, int(node))}
    frontier_types, f_ids, f_w, f_ts, _ = _one_hop(store, ntype, np.array([node], dtype=np.int64))
    hop_sets = [(frontier_types, f_ids, f_w, f_ts)]
    for hop in (1, 2):
        types, ids, w, ts = hop_sets[hop - 1]
        order, info = _rank(types, ids, w, ts, exclude)
        order = _filter_embedded(order, has_embedding)
        for key in order[: k - len(chosen)]:
            paths, wt, tt = info[key]
            chosen.append((key[0], key[1], hop, wt, tt, paths))
        if len(chosen) >= k or hop == 2:
            break
        exclude |= {(t, int(i)) for t, i in zip(types, ids.tolist())}
        # 2-hop: neighbours of every 1-hop neighbour, grouped by type for vectorised reads
        second = ([], [], [], [])
        for t in sorted(set(types)):
            sel = np.array([x == t for x in types])
            uniq = np.unique(ids[sel])
            t2, i2, w2, s2, _ = _one_hop(store, t, uniq)
            for acc, part in zip(second, (t2, i2, w2, s2)):
                acc.append(part)
        hop_sets.append((sum(second[0], []),
                         np.concatenate(second[1]) if second[1] else np.empty(0, np.int64),
                         np.concatenate(second[2]) if second[2] else np.empty(0, np.float32),
                         np.concatenate(second[3]) if second[3] else np.empty(0, np.int64)))
    return KNeighbors([c[0] for c in chosen], np.array([c[1] for c in chosen], dtype=np.int64),
                      np.array([c[2] for c in chosen], dtype=np.int64),
                      np.array([c[3] for c in chosen], dtype=np.float32),
                      np.array([c[4] for c in chosen], dtype=np.int64),
                      np.array([c[5] for c in chosen], dtype=np.int64))


def _filter_embedded(order: list[tuple[str, int]], has_embedding) -> list[tuple[str, int]]:
    if has_embedding is None or not order:
        return order
    keep = []
    for t in sorted({t for t, _ in order}):
        group = [key for key in order if key[0] == t]
        mask = has_embedding(t, np.array([i for _, i in group], dtype=np.int64))
        keep += [key for key, m in zip(group, mask) if m]
    rank = {key: i for i, key in enumerate(order)}
    return sorted(keep, key=rank.__getitem__)


def iter_seed_edges(store: ShardStore, ekey: str, parts: list[int], batch_size: int,
                    rng: np.random.Generator) -> Iterator[dict[str, np.ndarray]]:
    """Shuffled batches of the edges owned by ``parts`` (the owner rule: by source node).

    Yields ``{"src": [B], "dst": [B], "ts"?: [B], "weight"?: [B]}`` with ids within their
    types. A trainer worker passes the shards it owns, so workers see disjoint edges. One
    shard is read at a time, in random order, so memory is bounded by the largest shard's
    edge arrays of this type, not by the graph.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    etype = store.edge_types[ekey]
    offset = store.schema.offsets[etype.src]
    for part in rng.permutation(np.asarray(parts, dtype=np.int64)):
        csr = store.csr(int(part), ekey)
        deg = np.diff(csr["indptr"])
        first = first_owned(offset, store.num_parts)[part]
        src = np.repeat(first + np.arange(len(deg), dtype=np.int64) * store.num_parts - offset, deg)
        order = rng.permutation(len(src))
        for lo in range(0, len(order), batch_size):
            sel = order[lo:lo + batch_size]
            batch = {"src": src[sel], "dst": np.asarray(csr["indices"][sel], dtype=np.int64)}
            for col in ("ts", "weight"):
                if col in csr:
                    batch[col] = np.asarray(csr[col][sel])
            yield batch
