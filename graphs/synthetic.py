"""A synthetic power-law heterogeneous recommendation graph, streamed to a graph directory.

Node types ``user``, ``item``, ``category``, ``entity``; edge types::

    user__clicks__item          70%   ts (int64 seconds, 2020-01-01..2024-01-01), weight (float32)
    item__in_category__category  8%
    item__about__entity         10%
    entity__related_to__entity   7%
    user__follows__user          5%

Node counts scale with ``num_edges`` (users ~E/20, items ~E/50, entities ~E/100,
categories ~E/1000 capped at 1000; at least 10 of each), and the per-type edge counts sum
to exactly ``num_edges``. Edges may repeat (a multigraph, like real click logs); same-type
relations have no self loops.

Degrees follow a bounded Zipf law: each endpoint is a popularity rank ``r`` drawn with
``P(r) ~ (r + 1)^-s`` (inverse CDF of a bounded Pareto), then mapped to a node id by a
per-node-type affine bijection ``id = (a * r + b) mod n`` with ``gcd(a, n) = 1``, so the hubs
are spread over the id range rather than sitting at the lowest ids. One permutation per
node type means a popular item is popular in every relation it takes part in.

Generation is chunked: no step holds more than ``chunk_edges`` edges or ``chunk_edges``
node rows, so memory is bounded by the chunk size at any ``num_edges``. Chunk ``c`` of type
``t`` draws from ``np.random.default_rng([seed, stream, t, c])``: the same
``(num_edges, seed, chunk_edges)`` gives byte-identical arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from graphs.exceptions import ConfigError
from graphs.schema import EdgeType, FeatureSpec, GraphSchema, NodeType
from graphs.store import GraphWriter

TS_START = 1_577_836_800  # 2020-01-01T00:00:00Z
TS_END = 1_704_067_200  # 2024-01-01T00:00:00Z (exclusive)
NULL_FRACTION = 0.05  # share of missing attribute values per feature column
MAX_TAGS = 5
# Affine ids compute rank * a with a < n; n (users ~E/20) must keep n * n inside int64.
MAX_EDGES = 50_000_000_000

# Separate random streams, so adding a node feature never changes the edges.
_PERM_STREAM, _NODE_STREAM, _EDGE_STREAM = 0, 1, 2


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate: ``num_edges`` in total, from ``seed``, ``chunk_edges`` rows at a time."""

    num_edges: int
    seed: int = 0
    chunk_edges: int = 1 << 22

    def __post_init__(self) -> None:
        _check_int("num_edges", self.num_edges, 1, MAX_EDGES)
        _check_int("seed", self.seed, 0, None)
        _check_int("chunk_edges", self.chunk_edges, 1, None)
        for name in ("num_edges", "seed", "chunk_edges"):  # numpy ints -> int, as NodeType wants
            object.__setattr__(self, name, int(getattr(self, name)))

    def node_counts(self) -> dict[str, int]:
        e = self.num_edges
        return {
            "user": max(10, e // 20),
            "item": max(10, e // 50),
            "category": min(1000, max(10, e // 1000)),
            "entity": max(10, e // 100),
        }

    def edge_counts(self) -> dict[str, int]:
        """Per edge type; the remainder of the integer split goes to the clicks."""
        counts = {spec.key: self.num_edges * spec.permille // 1000 for spec in EDGE_SPECS}
        counts[EDGE_SPECS[0].key] += self.num_edges - sum(counts.values())
        return counts

    def schema(self) -> GraphSchema:
        nodes = self.node_counts()
        edges = self.edge_counts()
        return GraphSchema(
            tuple(NodeType(name, nodes[name], feats) for name, feats in NODE_FEATURES.items()),
            tuple(EdgeType(s.src, s.rel, s.dst, edges[s.key], s.ts, s.weight) for s in EDGE_SPECS),
            name=f"synthetic-{self.num_edges}-seed{self.seed}",
        )


def _check_int(name: str, value: object, lo: int, hi: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"{name} must be {bound}, got {value}")


@dataclass(frozen=True)
class _EdgeSpec:
    """One relation: its share of all edges and the Zipf exponent of each endpoint."""

    src: str
    rel: str
    dst: str
    permille: int
    src_skew: float
    dst_skew: float
    ts: bool = False
    weight: bool = False

    @property
    def key(self) -> str:
        return f"{self.src}__{self.rel}__{self.dst}"


# Clicks first: it takes the remainder of the split. Skews near 1 give the long tails seen
# in click logs (a few items take most clicks); follows has celebrity in-degrees.
EDGE_SPECS: tuple[_EdgeSpec, ...] = (
    _EdgeSpec("user", "clicks", "item", 700, src_skew=0.9, dst_skew=1.1, ts=True, weight=True),
    _EdgeSpec("item", "in_category", "category", 80, src_skew=0.5, dst_skew=1.0),
    _EdgeSpec("item", "about", "entity", 100, src_skew=0.8, dst_skew=1.1),
    _EdgeSpec("entity", "related_to", "entity", 70, src_skew=1.0, dst_skew=1.0),
    _EdgeSpec("user", "follows", "user", 50, src_skew=0.7, dst_skew=1.2),
)

NODE_FEATURES: dict[str, tuple[FeatureSpec, ...]] = {
    "user": (FeatureSpec("age", "categorical", cardinality=8), FeatureSpec("activity", "dense")),
    "item": (FeatureSpec("price", "dense"), FeatureSpec("tags", "token_list", cardinality=1000)),
    "category": (),
    "entity": (FeatureSpec("kind", "categorical", cardinality=16),),
}
_RAW_PREFIX = {"user": "u", "item": "i", "category": "c", "entity": "e"}


def generate_synthetic(out: str | Path, num_edges: int, seed: int = 0, chunk_edges: int = 1 << 22,
                       overwrite: bool = False, progress: bool = False) -> GraphSchema:
    """Write a synthetic graph of exactly ``num_edges`` edges to ``out``; return its schema.

    Raises ValueError on a bad parameter and FileExistsError if ``out`` exists without
    ``overwrite``. The write is atomic (:class:`graphs.store.GraphWriter`).
    """
    cfg = SyntheticConfig(num_edges, seed, chunk_edges)
    schema = cfg.schema()
    perms = {n.name: _Permutation.draw(n.count, cfg.seed, i) for i, n in enumerate(schema.node_types)}
    writer = GraphWriter(out, schema, overwrite=overwrite)
    bar = tqdm(total=cfg.num_edges, unit="edge", unit_scale=True, disable=not progress,
               desc=f"synthetic {Path(out).name}")
    try:
        for t, node_type in enumerate(schema.node_types):
            for start in range(0, node_type.count, cfg.chunk_edges):
                stop = min(start + cfg.chunk_edges, node_type.count)
                rng = np.random.default_rng([cfg.seed, _NODE_STREAM, t, start // cfg.chunk_edges])
                writer.write_nodes(node_type.name, _node_batch(node_type, start, stop, rng, perms))
        for t, (spec, etype) in enumerate(zip(EDGE_SPECS, schema.edge_types)):
            for c, start in enumerate(range(0, etype.count, cfg.chunk_edges)):
                size = min(cfg.chunk_edges, etype.count - start)
                rng = np.random.default_rng([cfg.seed, _EDGE_STREAM, t, c])
                writer.write_edges(etype.key, _edge_batch(spec, size, rng, perms))
                bar.update(size)
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    return writer.close()


@dataclass(frozen=True)
class _Permutation:
    """The bijection rank -> id, ``(a * rank + b) mod n``, and its inverse."""

    n: int
    a: int
    b: int

    @classmethod
    def draw(cls, n: int, seed: int, type_index: int) -> _Permutation:
        if n == 1:
            return cls(1, 1, 0)
        rng = np.random.default_rng([seed, _PERM_STREAM, type_index])
        a, b = int(rng.integers(1, n)), int(rng.integers(0, n))
        while math.gcd(a, n) != 1:
            a = a % (n - 1) + 1
        return cls(n, a, b)

    def ids(self, ranks: np.ndarray) -> np.ndarray:
        """ranks: [B] int64 in [0, n) -> ids: [B] int64 in [0, n), in place."""
        ranks *= self.a
        ranks += self.b
        ranks %= self.n
        return ranks

    def ranks(self, ids: np.ndarray) -> np.ndarray:
        """ids: [B] int64 -> ranks: [B] int64 (0 = most popular)."""
        return ((ids - self.b) % self.n) * pow(self.a, -1, self.n) % self.n


def zipf_ranks(rng: np.random.Generator, n: int, skew: float, size: int) -> np.ndarray:
    """Ranks in ``[0, n)`` with ``P(r) ~ (r + 1)^-skew``, ``skew >= 0`` (0 = uniform).

    Inverse CDF of a Pareto law bounded to ``[1, n + 1)``, floored. returns: [size] int64.
    """
    x = rng.random(size)
    if abs(skew - 1.0) < 1e-9:
        # density 1/x: x = (n + 1)^u
        x *= math.log(n + 1)
        np.exp(x, out=x)
    else:
        one_minus = 1.0 - skew
        x *= (n + 1) ** one_minus - 1.0
        x += 1.0
        np.power(x, 1.0 / one_minus, out=x)
    x -= 1.0
    ranks = x.astype(np.int64)
    np.clip(ranks, 0, n - 1, out=ranks)  # u close to 1 can round up to n
    return ranks


def _edge_batch(spec: _EdgeSpec, size: int, rng: np.random.Generator,
                perms: dict[str, _Permutation]) -> dict[str, np.ndarray]:
    """One chunk of one relation: src, dst [size] int64; ts [size] int64, weight [size] float32."""
    n_src, n_dst = perms[spec.src].n, perms[spec.dst].n
    src = perms[spec.src].ids(zipf_ranks(rng, n_src, spec.src_skew, size))
    dst = perms[spec.dst].ids(zipf_ranks(rng, n_dst, spec.dst_skew, size))
    if spec.src == spec.dst and n_dst > 1:
        loops = src == dst
        dst[loops] = (dst[loops] + 1) % n_dst
    batch = {"src": src, "dst": dst}
    if spec.ts:
        # Activity grows over the window (density rising linearly in time), as platforms do.
        t = rng.random(size)
        np.sqrt(t, out=t)
        t *= TS_END - TS_START
        ts = t.astype(np.int64)
        ts += TS_START
        batch["ts"] = ts
    if spec.weight:
        # Interaction strength in [0.5, 5): mostly light touches, a few strong ones.
        w = rng.random(size, dtype=np.float32)
        w *= w
        w *= np.float32(4.5)
        w += np.float32(0.5)
        batch["weight"] = w
    return batch


def _node_batch(node_type: NodeType, start: int, stop: int, rng: np.random.Generator,
                perms: dict[str, _Permutation]) -> dict[str, pa.Array | np.ndarray]:
    """Rows ``[start, stop)`` of one node type: id, raw_id and its features."""
    size = stop - start
    ids = np.arange(start, stop, dtype=np.int64)
    raw = pc.binary_join_element_wise(_RAW_PREFIX[node_type.name], pc.cast(pa.array(ids), pa.string()), "")
    batch: dict[str, pa.Array | np.ndarray] = {"id": ids, "raw_id": raw}
    if node_type.name == "user":
        batch["age"] = _with_nulls(rng.integers(0, 8, size), rng)
        # Activity tracks popularity rank, so the feature carries signal about degree.
        ranks = perms["user"].ranks(ids)
        activity = np.log(node_type.count / (ranks + 1.0)) + rng.normal(0.0, 0.5, size)
        batch["activity"] = _with_nulls(activity.astype(np.float32), rng)
    elif node_type.name == "item":
        batch["price"] = _with_nulls(rng.lognormal(3.0, 1.0, size).astype(np.float32), rng)
        batch["tags"] = _tag_lists(size, rng)
    elif node_type.name == "entity":
        batch["kind"] = _with_nulls(zipf_ranks(rng, 16, 1.0, size), rng)
    return batch


def _with_nulls(values: np.ndarray, rng: np.random.Generator) -> pa.Array:
    return pa.array(values, mask=rng.random(len(values)) < NULL_FRACTION)


def _tag_lists(size: int, rng: np.random.Generator) -> pa.Array:
    """[size] lists of 0..MAX_TAGS Zipf-distributed tag ids in [0, 1000); ~5% null."""
    lengths = rng.integers(0, MAX_TAGS + 1, size)
    offsets = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = zipf_ranks(rng, 1000, 1.0, int(offsets[-1]))
    mask = pa.array(rng.random(size) < NULL_FRACTION)
    return pa.LargeListArray.from_arrays(offsets, values, mask=mask).cast(pa.list_(pa.int64()))
