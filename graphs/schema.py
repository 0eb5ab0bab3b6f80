"""The heterogeneous graph schema: node types with typed feature columns, typed edges.

A graph directory (see :mod:`graphs.store`) carries its schema as ``schema.json``::

    {"format": "hetrec-graph", "version": 1, "name": "ml-100k",
     "node_types": [{"name": "user", "count": 943,
                     "features": [{"name": "gender", "kind": "categorical", "cardinality": 2}]}],
     "edge_types": [{"src": "user", "rel": "rates", "dst": "movie", "count": 100000,
                     "ts": true, "weight": true}]}

Node ids are dense per type, ``[0, count)``; a node's global id is
``offset(ntype) + id``, offsets following the order of ``node_types``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from graphs.exceptions import GraphFormatError

FORMAT = "hetrec-graph"
VERSION = 1
FEATURE_KINDS = ("dense", "categorical", "token_list", "text")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _is_int(value: object) -> bool:
    """A Python int; JSON ``true`` and ``2.0`` are not counts, dims or cardinalities."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or "__" in name:
        raise GraphFormatError(
            f"{what} {name!r} is not a valid name: use letters, digits, '_', '.', '-' "
            "(no leading symbol, no '__')"
        )


@dataclass(frozen=True)
class FeatureSpec:
    """One feature column of a node type.

    kinds: ``dense`` (float32, or a fixed list of ``dim`` float32), ``categorical``
    (int64 in ``[0, cardinality)``), ``token_list`` (list of int64 in ``[0, cardinality)``),
    ``text`` (string). Every feature column may hold nulls: missing attributes.
    """

    name: str
    kind: str
    dim: int = 1
    cardinality: int = 0

    def __post_init__(self) -> None:
        _check_name("feature", self.name)
        if self.name in ("id", "raw_id"):
            raise GraphFormatError(f"feature name {self.name!r} is reserved")
        if self.kind not in FEATURE_KINDS:
            raise GraphFormatError(
                f"feature {self.name!r}: kind {self.kind!r} is not one of {FEATURE_KINDS}"
            )
        for key in ("dim", "cardinality"):
            if not _is_int(getattr(self, key)):
                raise GraphFormatError(f"feature {self.name!r}: {key} must be an int, got {getattr(self, key)!r}")
        if self.dim < 1:
            raise GraphFormatError(f"feature {self.name!r}: dim must be >= 1, got {self.dim}")
        if self.kind in ("categorical", "token_list") and self.cardinality < 1:
            raise GraphFormatError(
                f"feature {self.name!r}: a {self.kind} feature needs cardinality >= 1, "
                f"got {self.cardinality}"
            )

    def arrow_type(self) -> pa.DataType:
        if self.kind == "dense":
            return pa.float32() if self.dim == 1 else pa.list_(pa.float32(), self.dim)
        if self.kind == "categorical":
            return pa.int64()
        if self.kind == "token_list":
            return pa.list_(pa.int64())
        return pa.string()

    def to_json(self) -> dict:
        out = {"name": self.name, "kind": self.kind}
        if self.kind == "dense":
            out["dim"] = self.dim
        if self.kind in ("categorical", "token_list"):
            out["cardinality"] = self.cardinality
        return out


@dataclass(frozen=True)
class NodeType:
    name: str
    count: int
    features: tuple[FeatureSpec, ...] = ()

    def __post_init__(self) -> None:
        _check_name("node type", self.name)
        if not _is_int(self.count) or self.count < 0:
            raise GraphFormatError(f"node type {self.name!r}: count must be an int >= 0, got {self.count!r}")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise GraphFormatError(f"node type {self.name!r}: duplicate feature names in {names}")

    def arrow_schema(self) -> pa.Schema:
        """Columns of ``nodes/<name>/part-*.parquet``: id, raw_id, then the features."""
        cols = [pa.field("id", pa.int64(), nullable=False), pa.field("raw_id", pa.string())]
        cols += [pa.field(f.name, f.arrow_type()) for f in self.features]
        return pa.schema(cols)


@dataclass(frozen=True)
class EdgeType:
    """Edges ``src -[rel]-> dst``; ``ts`` (int64 seconds) and ``weight`` (float32) optional."""

    src: str
    rel: str
    dst: str
    count: int = 0
    ts: bool = False
    weight: bool = False

    def __post_init__(self) -> None:
        _check_name("relation", self.rel)
        if not _is_int(self.count) or self.count < 0:
            raise GraphFormatError(f"edge type {self.key}: count must be an int >= 0, got {self.count!r}")
        for key in ("ts", "weight"):
            if not isinstance(getattr(self, key), bool):
                raise GraphFormatError(f"edge type {self.key}: {key} must be true or false, "
                                       f"got {getattr(self, key)!r}")

    @property
    def key(self) -> str:
        """Folder name: ``<src>__<rel>__<dst>``."""
        return f"{self.src}__{self.rel}__{self.dst}"

    def reverse(self) -> EdgeType:
        """The same edges, flipped: ``<dst>__rev_<rel>__<src>`` (DESIGN.md)."""
        return EdgeType(self.dst, f"rev_{self.rel}", self.src, self.count, self.ts, self.weight)

    def arrow_schema(self) -> pa.Schema:
        cols = [pa.field("src", pa.int64(), nullable=False), pa.field("dst", pa.int64(), nullable=False)]
        if self.ts:
            cols.append(pa.field("ts", pa.int64(), nullable=False))
        if self.weight:
            cols.append(pa.field("weight", pa.float32(), nullable=False))
        return pa.schema(cols)

    def to_json(self) -> dict:
        return {"src": self.src, "rel": self.rel, "dst": self.dst, "count": self.count,
                "ts": self.ts, "weight": self.weight}


@dataclass(frozen=True)
class GraphSchema:
    node_types: tuple[NodeType, ...]
    edge_types: tuple[EdgeType, ...]
    name: str = ""
    offsets: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise GraphFormatError(f"field 'name' must be a string, got {self.name!r}")
        names = [n.name for n in self.node_types]
        if len(set(names)) != len(names):
            raise GraphFormatError(f"duplicate node type names in {names}")
        keys = [e.key for e in self.edge_types]
        if len(set(keys)) != len(keys):
            raise GraphFormatError(f"duplicate edge types in {keys}")
        for e in self.edge_types:
            for end in (e.src, e.dst):
                if end not in names:
                    raise GraphFormatError(
                        f"edge type {e.key} names unknown node type {end!r}; known: {names}"
                    )
        offsets, total = {}, 0
        for n in self.node_types:
            offsets[n.name] = total
            total += n.count
        object.__setattr__(self, "offsets", offsets)

    @property
    def num_nodes(self) -> int:
        return sum(n.count for n in self.node_types)

    @property
    def num_edges(self) -> int:
        return sum(e.count for e in self.edge_types)

    def node_type(self, name: str) -> NodeType:
        for n in self.node_types:
            if n.name == name:
                return n
        raise GraphFormatError(f"unknown node type {name!r}; known: {[n.name for n in self.node_types]}")

    def edge_type(self, key: str) -> EdgeType:
        for e in self.edge_types:
            if e.key == key:
                return e
        raise GraphFormatError(f"unknown edge type {key!r}; known: {[e.key for e in self.edge_types]}")

    def interaction_type(self, key: str | None = None) -> str:
        """``key`` if the graph has it, else (None) the default user-item edge type: the
        largest type between two different node types that is not a reverse (MovieLens:
        ``user__rates__movie``, a RecBole data set: ``user__interacts__item``)."""
        if key is not None:
            return self.edge_type(key).key
        given = [e for e in self.edge_types if not e.rel.startswith("rev_") and e.src != e.dst]
        if not given:
            raise GraphFormatError(f"graph {self.name!r} has no edge type between two different node types")
        return max(given, key=lambda e: e.count).key

    def with_counts(self, node_counts: dict[str, int], edge_counts: dict[str, int]) -> GraphSchema:
        """A copy with counts replaced (writers learn counts as they stream)."""
        nodes = tuple(NodeType(n.name, node_counts.get(n.name, n.count), n.features) for n in self.node_types)
        edges = tuple(
            EdgeType(e.src, e.rel, e.dst, edge_counts.get(e.key, e.count), e.ts, e.weight)
            for e in self.edge_types
        )
        return GraphSchema(nodes, edges, self.name)

    def to_json(self) -> dict:
        return {
            "format": FORMAT, "version": VERSION, "name": self.name,
            "node_types": [
                {"name": n.name, "count": n.count, "features": [f.to_json() for f in n.features]}
                for n in self.node_types
            ],
            "edge_types": [e.to_json() for e in self.edge_types],
        }

    @classmethod
    def from_json(cls, doc: dict, source: str = "schema.json") -> GraphSchema:
        """Parse a schema document; errors name ``source`` and the offending field."""
        try:
            if doc.get("format") != FORMAT:
                raise GraphFormatError(f"field 'format' is {doc.get('format')!r}, expected {FORMAT!r}")
            if doc.get("version") != VERSION:
                raise GraphFormatError(f"field 'version' is {doc.get('version')!r}, expected {VERSION}")
            nodes = tuple(
                NodeType(n["name"], n["count"], tuple(FeatureSpec(**f) for f in n.get("features", [])))
                for n in doc["node_types"]
            )
            edges = tuple(
                EdgeType(e["src"], e["rel"], e["dst"], e.get("count", 0), e.get("ts", False),
                         e.get("weight", False))
                for e in doc["edge_types"]
            )
            return cls(nodes, edges, doc.get("name", ""))
        except GraphFormatError as err:
            raise GraphFormatError(f"{source}: {err}") from None
        except (KeyError, TypeError, AttributeError) as err:
            raise GraphFormatError(f"{source}: malformed schema ({type(err).__name__}: {err})") from None

    @classmethod
    def load(cls, path: str | Path) -> GraphSchema:
        path = Path(path)
        if not path.is_file():
            raise GraphFormatError(f"{path}: not found (is this a hetrec graph directory?)")
        try:
            doc = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise GraphFormatError(f"{path}: not valid JSON ({err})") from None
        except RecursionError:
            raise GraphFormatError(f"{path}: not a schema (JSON nested too deep)") from None
        return cls.from_json(doc, str(path))
