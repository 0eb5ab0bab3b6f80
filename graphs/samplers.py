"""Samplers over the shard store: fan-out mini-batches for training, k-neighbour rings for ILLE.

Both read only the CSR entries they keep or scan (memory-mapped), so their cost is set
by the batch and the fan-out, never by the graph or a hub's degree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from graphs.exceptions import ConfigError
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


FANOUT_SCOPES = ("relation", "node", "edge")


def sample_fanout(store: ShardStore, seeds: dict[str, np.ndarray], fanouts: list[int],
                  rng: np.random.Generator | None, edge_types: list[str] | None = None,
                  per: str = "relation") -> SampledSubgraph:
    """Uniform fan-out neighbour sampling, hop by hop (GraphSAGE style).

    ``per="relation"``: at each hop every frontier node keeps up to ``fanouts[hop]``
    neighbours per edge type. ``per="node"``: up to ``fanouts[hop]`` over all its edge
    types together, shared out by water-filling (:func:`relation_quotas`), so a node with
    20 relations costs the same as one with 2 and a relation with one edge keeps it.
    ``per="edge"``: up to ``fanouts[hop]`` over all its edge types together, uniform over
    its edges (GraphSAGE on the graph without types): a relation's share follows its degree
    (:func:`edge_quotas`), so a movie's users are not crowded out by 25 small KG relations.
    Within an edge type a node keeps all its neighbours when its degree is at most its
    quota, else a uniform sample without replacement. ``rng=None``: no randomness; a row
    keeps ``quota`` evenly spaced neighbours and left-over draws go to the first relations,
    so a node's neighbourhood is the same whatever else is in the batch (inference).
    ``edge_types`` limits the types followed (default: all, reverses included). Seeds must be
    unique within each type.
    """
    if any(f < 1 for f in fanouts):
        raise ConfigError(f"fanouts must all be >= 1, got {fanouts}")
    if per not in FANOUT_SCOPES:
        raise ConfigError(f"per must be one of {FANOUT_SCOPES}, got {per!r}")
    for ntype, ids in seeds.items():
        if len(np.unique(ids)) != len(ids):
            raise ConfigError(f"seeds of type {ntype!r} repeat ids; pass np.unique(ids) and map back "
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
            etypes = [e for e in store.edge_types_from(ntype) if allowed is None or e.key in allowed]
            spans = [store.row_spans(e.key, ids) for e in etypes]            # (parts, start, degree)
            share = relation_quotas if per == "node" else edge_quotas
            quotas = (share(np.stack([deg for _, _, deg in spans]), fanout, rng)
                      if per != "relation" and spans else [fanout] * len(spans))
            for etype, (parts, start, deg), quota in zip(etypes, spans, quotas):
                pick = _choose(deg, quota, rng)      # positions in the rows laid end to end
                if pick.size == 0:
                    continue
                ptr = np.concatenate([[0], np.cumsum(deg)])
                owner_pos = np.searchsorted(ptr, pick, side="right") - 1
                nb_ids, nb_ts = store.read_at(etype.key, parts[owner_pos], start[owner_pos] + pick - ptr[owner_pos])
                dst_local, new = index.add(etype.dst, nb_ids)
                edges.setdefault(etype.key, []).append(np.stack([src_local[owner_pos], dst_local]))
                if nb_ts is not None:
                    edge_ts.setdefault(etype.key, []).append(nb_ts)
                nxt.setdefault(etype.dst, []).append(new)
        frontier = {t: np.unique(np.concatenate(v)) for t, v in nxt.items()}
    return SampledSubgraph(index.nodes(), {k: np.concatenate(v, axis=1) for k, v in edges.items()},
                           {k: np.concatenate(v) for k, v in edge_ts.items()})


def relation_quotas(degree: np.ndarray, budget: int, rng: np.random.Generator | None) -> np.ndarray:
    """Share ``budget`` draws of each node among its relations by water-filling.

    ``degree: [R, N]`` (relation r's degree of node n) -> quotas ``[R, N]`` int64 with
    ``quota <= degree`` and ``sum_r quota = min(budget, sum_r degree)``: every relation gets
    ``min(degree, L)`` for the largest level L that fits the budget, and the draws left
    over go one each to relations above the level, chosen at random (``rng=None``: the
    first ones).
    """
    levels = np.arange(budget + 1)[:, None, None]
    used = np.minimum(degree[None], levels).sum(1)                      # [budget+1, N]
    level = (used <= budget).sum(0) - 1                                # [N], used(0) = 0
    quota = np.minimum(degree, level)
    left = budget - quota.sum(0)                                       # [N]
    above = degree > level
    order = rng.random(degree.shape) if rng is not None else np.broadcast_to(
        np.arange(len(degree), dtype=np.float64)[:, None], degree.shape)
    key = np.where(above, order, np.inf)
    rank = key.argsort(0, kind="stable").argsort(0, kind="stable")
    return quota + (above & (rank < left)).astype(np.int64)


def edge_quotas(degree: np.ndarray, budget: int, rng: np.random.Generator | None) -> np.ndarray:
    """Share ``budget`` draws of each node among its relations as a uniform sample of
    ``min(budget, sum_r degree)`` of its edges would: ``degree: [R, N]`` -> quotas ``[R, N]``
    int64 with ``quota <= degree`` (``rng=None``: evenly spaced edges, so quotas follow the
    degrees, the first relations first)."""
    R, N = degree.shape
    total = degree.sum(0)                                              # [N]
    pick = _choose(total, budget, rng)                                 # positions in the nodes' edges end to end
    ptr = np.concatenate([[0], np.cumsum(total)])
    node = np.searchsorted(ptr, pick, side="right") - 1
    ends = np.cumsum(degree, axis=0)                                   # [R, N], relation r ends at ends[r, n]
    rel = (pick - ptr[node] >= ends[:, node]).sum(0)                   # [picks]
    return np.bincount(rel * N + node, minlength=R * N).reshape(R, N).astype(np.int64)


def _choose(degree: np.ndarray, fanout: int | np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """Positions (into the concatenated neighbour list) kept for each node, ``[sum(min(d, f))]``.

    ``fanout``: one for every node, or ``[N]``. Rows of at most ``fanout`` are kept whole.
    Larger rows keep the ``fanout`` candidates with the smallest random keys (a uniform
    sample without replacement); a row above ``4 * fanout`` first draws ``4 * fanout``
    candidate positions (about 2.5 * fanout distinct on average), so no row costs more than
    O(fanout). One lexsort for all rows, no loop. ``rng=None``: a larger row keeps
    positions ``j * degree // fanout`` for ``j < fanout``.
    """
    f = np.broadcast_to(np.asarray(fanout, dtype=np.int64), degree.shape)
    ptr = np.zeros(len(degree) + 1, dtype=np.int64)
    np.cumsum(degree, out=ptr[1:])
    small = degree <= f
    keep_all, _ = gather_ranges(ptr[:-1][small], ptr[1:][small])
    if rng is None:
        row_f = f[~small]
        j, _ = gather_ranges(np.zeros(len(row_f), dtype=np.int64), row_f)
        row = np.repeat(np.flatnonzero(~small), row_f)
        return np.sort(np.concatenate([keep_all, ptr[row] + j * degree[row] // f[row]]))
    big = ~small & (degree <= 4 * f)
    hub = (degree > 4 * f) & (f > 0)
    cand_big, _ = gather_ranges(ptr[:-1][big], ptr[1:][big])
    width = 4 * int(f[hub].max()) if hub.any() else 0
    draws = ptr[:-1][hub, None] + (rng.random((int(hub.sum()), width)) * degree[hub, None]).astype(np.int64)
    draws = draws[np.arange(width)[None, :] < 4 * f[hub, None]]
    cand = np.concatenate([cand_big, np.unique(draws.ravel())])
    if cand.size == 0:
        return np.sort(keep_all)
    row = np.searchsorted(ptr, cand, side="right") - 1
    order = np.lexsort((rng.random(len(cand)), row))
    row_sorted = row[order]
    rank = np.arange(len(cand)) - np.searchsorted(row_sorted, row_sorted, side="left")
    return np.sort(np.concatenate([keep_all, cand[order][rank < f[row_sorted]]]))


# ILLE neighbour rings. A node is named by a key ``type_index << 40 | id``, so neighbours of
# every type sit in one array.
_SHIFT = 40
_ID_MASK = (np.int64(1) << _SHIFT) - 1


def node_key(type_index: np.ndarray | int, ids: np.ndarray) -> np.ndarray:
    """``[N]`` keys naming (type, id) pairs; ids below 2**40."""
    return (np.asarray(type_index, np.int64) << _SHIFT) | np.asarray(ids, np.int64)


def split_key(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`node_key`: ``(type_index [N], ids [N])``."""
    keys = np.asarray(keys, np.int64)
    return keys >> _SHIFT, keys & _ID_MASK


@dataclass
class NeighborSets:
    """CSR of chosen neighbours: node b's are ``keys[ptr[b]:ptr[b+1]]``, best first.

    ``hop``: 1 or 2 per neighbour; ``degree1: [B]`` distinct 1-hop neighbours found.
    """

    ptr: np.ndarray
    keys: np.ndarray
    hop: np.ndarray
    degree1: np.ndarray


def concat_neighbors(parts: list[NeighborSets]) -> NeighborSets:
    """The rows of ``parts`` one after the other (``B = sum B_i``)."""
    deg = np.concatenate([np.diff(p.ptr) for p in parts]) if parts else np.zeros(0, np.int64)
    cat = lambda name, dtype: np.concatenate([getattr(p, name) for p in parts]) if parts else np.zeros(0, dtype)  # noqa: E731
    return NeighborSets(np.r_[0, np.cumsum(deg)].astype(np.int64), cat("keys", np.int64), cat("hop", np.int8),
                        cat("degree1", np.int64))


def merge_neighbors(sets: NeighborSets, rows: np.ndarray, other: NeighborSets) -> NeighborSets:
    """``sets`` with its empty rows ``rows [R]`` taken from ``other`` (R rows, in that order)."""
    deg, fill = np.diff(sets.ptr), np.diff(other.ptr)
    owner = np.concatenate([np.repeat(np.arange(len(deg)), deg), np.repeat(rows, fill)])
    order = np.argsort(owner, kind="stable")
    deg = deg.copy()
    deg[rows] = fill
    degree1 = sets.degree1.copy()
    degree1[rows] = other.degree1
    return NeighborSets(np.r_[0, np.cumsum(deg)].astype(np.int64), np.concatenate([sets.keys, other.keys])[order],
                        np.concatenate([sets.hop, other.hop])[order], degree1)


def _ring(graph, types: list[str], owner: np.ndarray, keys: np.ndarray, scan: int):
    """All neighbours of the nodes ``keys [N]`` (each belonging to batch node ``owner[n]``).

    Returns ``(owner [M], key [M], weight [M], ts [M])`` over every relation out of each
    node's type, at most ``scan`` per node and relation.
    """
    t_idx, ids = split_key(keys)
    out = [[], [], [], []]
    for t in np.unique(t_idx):
        sel = np.flatnonzero(t_idx == t)
        for etype in graph.edge_types_from(types[t]):
            nb = graph.neighbors(etype.key, ids[sel], cap=scan)
            out[0].append(np.repeat(owner[sel], nb.degree))
            out[1].append(node_key(types.index(etype.dst), nb.ids))
            out[2].append(nb.weight if nb.weight is not None else np.ones(len(nb.ids), np.float32))
            out[3].append(nb.ts if nb.ts is not None else np.zeros(len(nb.ids), np.int64))
    if not out[0]:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
    return tuple(np.concatenate(c) for c in out)


def _pair_ids(owner: np.ndarray, key: np.ndarray) -> np.ndarray:
    """One int64 per (owner, key) pair, equal iff the pairs are: ``owner * M + rank(key)``."""
    _, rank = np.unique(key, return_inverse=True)
    return owner.astype(np.int64) * (len(key) + 1) + rank.ravel()


def _dedupe(owner, key, weight, ts):
    """One row per (owner, key): the number of rows as paths, max weight, latest ts."""
    _, first, inv, paths = np.unique(_pair_ids(owner, key), return_index=True, return_inverse=True,
                                     return_counts=True)
    inv = inv.ravel()
    w = np.full(len(first), -np.inf)
    np.maximum.at(w, inv, weight)
    t = np.full(len(first), np.iinfo(np.int64).min)
    np.maximum.at(t, inv, ts)
    return owner[first], key[first], paths, w, t


def _pairs_in(o_a, k_a, o_b, k_b) -> np.ndarray:
    """``[len(o_a)]`` bool: is the pair (o_a, k_a) among the pairs (o_b, k_b)?"""
    ids = _pair_ids(np.concatenate([o_a, o_b]), np.concatenate([k_a, k_b]))
    return np.isin(ids[:len(o_a)], ids[len(o_a):])


def select_neighbors(graph, types: list[str], targets: np.ndarray, k: int | Callable = 8, scan: int = 32,
                     expand: int = 8, scan2: int = 8, usable=None, walk_all: bool = False) -> NeighborSets:
    """BFS for ILLE: ``k`` neighbours of each of ``targets: [B]`` (node keys), 1-hop first,
    then 2-hop, vectorised over the batch.

    ``graph``: a :class:`ShardStore` or :class:`~graphs.delta.DeltaGraph`. Ranking, best
    first: hop; for 2-hop nodes the number of paths through the 1-hop ring (shared
    neighbours); then edge weight; then recency (ts). ``k``: an int, or a function of the
    distinct 1-hop degree ``[B] -> [B]`` (adaptive k). ``usable(keys [M]) -> [M] bool``
    says which nodes may serve as neighbours (have an embedding, or are solved in the same
    batch); None: all. A target is never its own neighbour. Cost per target: ``scan``
    reads per relation for the 1-hop ring, and ``expand * scan2`` per relation for the
    2-hop ring, read only when the 1-hop ring is short of k. ``walk_all``: the 2-hop ring is
    reached through every 1-hop node, usable or not (an item reached through its users),
    instead of through the usable ones only.
    """
    B = len(targets)
    idx = np.arange(B)
    o1, k1, w1, t1 = _ring(graph, types, idx, targets, scan)
    keep = k1 != targets[o1]
    o1, k1, p1, w1, t1 = _dedupe(o1[keep], k1[keep], w1[keep], t1[keep])
    ring1 = (o1, k1)                                             # every 1-hop node
    walk = (o1, k1, w1, t1)
    if usable is not None:
        keep = usable(k1)
        o1, k1, p1, w1, t1 = o1[keep], k1[keep], p1[keep], w1[keep], t1[keep]
        walk = walk if walk_all else (o1, k1, w1, t1)
    degree1 = np.bincount(o1, minlength=B)
    want = k(degree1) if callable(k) else np.full(B, k, np.int64)
    if (want < 1).any():
        raise ConfigError(f"k must be >= 1, got {k if not callable(k) else int(want.min())}")
    # 2-hop ring, from the best `expand` 1-hop nodes of the targets still short of k.
    wo, wk, ww, wt = walk
    order = np.lexsort((-wt, -ww, wo))
    wo, wk = wo[order], wk[order]
    rank1 = np.arange(len(wo)) - np.searchsorted(wo, wo, "left")
    short = degree1 < want
    src = short[wo] & (rank1 < expand)
    o2, k2, w2, t2 = _ring(graph, types, wo[src], wk[src], scan2)
    if len(o2):
        keep = (k2 != targets[o2]) & ~_pairs_in(o2, k2, *ring1)
        if usable is not None:
            keep &= usable(k2)
        o2, k2, p2, w2, t2 = _dedupe(o2[keep], k2[keep], w2[keep], t2[keep])
    else:
        p2 = np.zeros(0, np.int64)
        w2 = w2.astype(np.float64)
    owner = np.concatenate([o1, o2])
    keys = np.concatenate([k1, k2])
    hop = np.concatenate([np.ones(len(o1), np.int8), np.full(len(o2), 2, np.int8)])
    paths = np.concatenate([np.zeros(len(o1)), p2])              # paths rank only 2-hop nodes
    weight = np.concatenate([w1, w2])
    ts = np.concatenate([t1, t2])
    order = np.lexsort((-ts, -weight, -paths, hop, owner))
    owner, keys, hop = owner[order], keys[order], hop[order]
    rank = np.arange(len(owner)) - np.searchsorted(owner, owner, "left")
    take = rank < want[owner]
    owner, keys, hop = owner[take], keys[take], hop[take]
    ptr = np.zeros(B + 1, np.int64)
    np.cumsum(np.bincount(owner, minlength=B), out=ptr[1:])
    return NeighborSets(ptr, keys, hop, degree1)


def iter_seed_edges(store: ShardStore, ekey: str, parts: list[int], batch_size: int,
                    rng: np.random.Generator) -> Iterator[dict[str, np.ndarray]]:
    """Shuffled batches of the edges owned by ``parts`` (the owner rule: by source node).

    Yields ``{"src": [B], "dst": [B], "ts"?: [B], "weight"?: [B]}`` with ids within their
    types. A trainer worker passes the shards it owns, so workers see disjoint edges. One
    shard is read at a time, in random order, so memory is bounded by the largest shard's
    edge arrays of this type, not by the graph.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
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
