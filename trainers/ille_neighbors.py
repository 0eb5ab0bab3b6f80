"""ILLE neighbour sets: 1-hop first, then 2-hop, ranked, k per node; vectorised over a batch.

A node is named by a key ``type_index << 40 | id`` (:func:`node_key`), so neighbours of
every type sit in one array. Ranking, best first: hop (1 before 2); then, for 2-hop
nodes, the number of paths through the 1-hop ring (shared neighbours); then edge weight;
then recency (timestamp). Each node keeps its first ``k`` (or its adaptive k).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainers.ille import ILLEConfig

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


def select_neighbors(graph, types: list[str], targets: np.ndarray, cfg: ILLEConfig,
                     usable=None) -> NeighborSets:
    """k neighbours of each of ``targets: [B]`` (keys) in ``graph`` (a :class:`DeltaGraph`).

    ``usable(keys [M]) -> [M] bool`` says which nodes may serve as neighbours (have an
    embedding, or are solved in the same batch); None: all. A target is never its own
    neighbour. Cost per target: ``scan`` reads per relation for the 1-hop ring, and
    ``expand * scan2`` per relation for the 2-hop ring, only when the 1-hop ring is short.
    """
    B = len(targets)
    idx = np.arange(B)
    o1, k1, w1, t1 = _ring(graph, types, idx, targets, cfg.scan)
    keep = k1 != targets[o1]
    if usable is not None:
        keep &= usable(k1)
    o1, k1, p1, w1, t1 = _dedupe(o1[keep], k1[keep], w1[keep], t1[keep])
    degree1 = np.bincount(o1, minlength=B)
    want = cfg.k_for(degree1)
    # 2-hop ring, from the best `expand` 1-hop neighbours of the targets still short of k.
    order = np.lexsort((-t1, -w1, o1))
    o1, k1, p1, w1, t1 = o1[order], k1[order], p1[order], w1[order], t1[order]
    rank1 = np.arange(len(o1)) - np.searchsorted(o1, o1, "left")
    short = degree1 < want
    src = short[o1] & (rank1 < cfg.expand)
    o2, k2, w2, t2 = _ring(graph, types, o1[src], k1[src], cfg.scan2)
    if len(o2):
        keep = (k2 != targets[o2]) & ~_pairs_in(o2, k2, o1, k1)
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
