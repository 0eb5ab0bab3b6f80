"""Any RecBole atomic-file data set as a hetrec graph directory.

Reads a folder of atomic files (https://recbole.io/docs/user_guide/data/atomic_files.html):
``<name>.inter`` and, each optional, ``.user``, ``.item``, ``.kg``, ``.link`` (or the
GroupLens originals, see :mod:`graphs.atomic_files`). Node types, in this order:

- the user and item types (``user`` and ``item`` by default, :class:`RecBoleNames`): one
  node per distinct id of ``.inter``, ``.user``/``.item`` and ``.link``, ordered by raw id
  (numerically when all ids are integers); features from ``.user``/``.item`` fields by the
  field rule of :mod:`graphs.recbole_fields`;
- attribute nodes of that rule (``genre``, ``category``, ``occupation``, ``age_group``);
- ``entity``: knowledge-graph entities not linked to an item.

Edges: ``<user>__<interaction>__<item>``, one per ``.inter`` row; the attribute edges of
the field rule; one edge type per KG relation, endpoints linked to an item (``.link``)
becoming that item; triples with neither end linked are dropped, and relations below 1% of
the kept triples merge into ``kg_other``. No reverse edges: the partitioner adds them.

``.inter`` fields: the user is ``user_id`` (else the first token field), the item
``item_id`` (else the next token field), the timestamp ``ts`` the first float field with
``time`` in its name (or named ``ts``/``when``/``date``/``datetime``), the weight the
float field ``rating`` (else the first other float field). Other ``.inter`` fields are
not stored (edges carry only ts and weight). ``.user``/``.item`` rows are keyed by the
field named as in ``.inter``, else by their first token field.

Errors name the file, the line and the column; nothing is written unless all is read.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphs.atomic_files import AtomicDataset, AtomicTable, read_source
from graphs.exceptions import ConfigError, GraphFormatError, OutputExistsError
from graphs.recbole_fields import (
    AGE_GROUP,
    AGE_GROUPS,
    ATTRIBUTES,
    FLOAT32_MAX,
    Vocab,
    attribute_values,
    feature_name,
    node_features,
)
from graphs.schema import EdgeType, GraphSchema, NodeType
from graphs.store import GraphWriter

log = logging.getLogger(__name__)

MIN_RELATION_SHARE = 0.01  # KG relations below this share of the triples merge into KG_OTHER
KG_OTHER = "kg_other"
ENTITY = "entity"
TIME_NAMES = ("ts", "when", "date", "datetime")  # timestamp fields without "time" in the name
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class RecBoleNames:
    """Names of the user type, the item type and the relation of ``.inter`` rows."""

    user: str = "user"
    item: str = "item"
    interaction: str = "interacts"

    def __post_init__(self) -> None:
        taken = {a.ntype for a in ATTRIBUTES} | {ENTITY}
        for what, name in (("user type", self.user), ("item type", self.item), ("relation", self.interaction)):
            if not isinstance(name, str) or feature_name(name) != name or name.startswith("rev_"):
                raise ConfigError(f"RecBoleNames: {what} {name!r} is not a valid name; use letters, digits, "
                                 "'_', '.', '-' (no leading symbol, no '__', no 'rev_' prefix)")
        for what, name in (("user type", self.user), ("item type", self.item)):
            if name in taken:
                raise ConfigError(f"RecBoleNames: {what} {name!r} is an attribute or entity node type "
                                 f"({sorted(taken)}); pick another name")
        if self.user == self.item:
            raise ConfigError(f"RecBoleNames: user and item types are both {self.user!r}; pick two names")

    @property
    def edge_type(self) -> str:
        return f"{self.user}__{self.interaction}__{self.item}"


def build_recbole(out: Path, source: Path, names: RecBoleNames = RecBoleNames(),
                  overwrite: bool = False) -> GraphSchema:
    """Build the graph directory of the data set in ``source`` at ``out``; returns its schema."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    dataset = read_source(Path(source))
    nodes, edges = _assemble(dataset, names)
    node_types = [NodeType(n, len(cols["raw_id"]), specs)
                  for n, (cols, specs) in nodes.items() if n in (names.user, names.item) or cols["raw_id"]]
    kept = {n.name for n in node_types}
    edge_types = [et for et, cols in edges if et.src in kept and et.dst in kept
                  and (et.key == names.edge_type or len(cols["src"]))]
    writer = GraphWriter(out, GraphSchema(tuple(node_types), tuple(edge_types), dataset.name), overwrite)
    try:
        for nt in node_types:
            cols = nodes[nt.name][0]
            writer.write_nodes(nt.name, {"id": np.arange(nt.count, dtype=np.int64), **cols})
        for et, cols in edges:
            if et in edge_types:
                writer.write_edges(et.key, cols)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def _assemble(data: AtomicDataset, names: RecBoleNames):
    """All node columns ``{ntype: (columns, features)}`` and edges ``[(EdgeType, columns)]``."""
    inter = data.inter
    ucol, icol, tcol, wcol = _inter_roles(inter)
    ufield, ifield = _id_field(data.user, ucol), _id_field(data.item, icol)
    users_by_id, items_by_id = _rows_by_id(data.user, ufield), _rows_by_id(data.item, ifield)
    link = _entity_links(data.link, icol)
    users = Vocab(set(_required(inter, ucol)) | set(users_by_id))
    items = Vocab(set(_required(inter, icol)) | set(items_by_id) | set(link.values()))

    inter_edges = {"src": np.array([users.index[u] for u in inter.columns[ucol]], dtype=np.int64),
                   "dst": np.array([items.index[i] for i in inter.columns[icol]], dtype=np.int64)}
    if tcol:
        inter_edges["ts"] = np.array([int(v) for v in _finite(inter, tcol, 0, INT64_MAX)], dtype=np.int64)
    if wcol:
        inter_edges["weight"] = np.array(_finite(inter, wcol), dtype=np.float32)
    edges = [(EdgeType(names.user, names.interaction, names.item, ts=bool(tcol), weight=bool(wcol)), inter_edges)]

    nodes, values = {}, {}
    for ntype, table, role, field, ids, by_id in ((names.user, data.user, "user", ufield, users, users_by_id),
                                                  (names.item, data.item, "item", ifield, items, items_by_id)):
        rows = [by_id.get(r) for r in ids.raw]
        columns, specs = node_features(table, role, field, rows)
        nodes[ntype] = ({"raw_id": ids.raw, **columns}, specs)
        values.update({a: (ntype, v) for a, v in attribute_values(table, role, field, rows).items()})
    for attribute in (a for a in ATTRIBUTES if a in values):
        src, per_node = values[attribute]
        first = tuple(label for _, label in AGE_GROUPS) if attribute == AGE_GROUP else ()
        ids = Vocab({v for vs in per_node for v in vs}, first)
        pairs = [(s, ids.index[v]) for s, vs in enumerate(per_node) for v in vs]
        nodes[attribute.ntype] = ({"raw_id": ids.raw}, ())
        edges.append((EdgeType(src, attribute.rel, attribute.ntype), _edge_columns(pairs)))

    entities, kg_edges = _knowledge_graph(data.kg, link, items, names.item)
    nodes[ENTITY] = ({"raw_id": entities.raw}, ())
    edges += kg_edges
    return nodes, edges


def _inter_roles(inter: AtomicTable) -> tuple[str, str, str | None, str | None]:
    """(user field, item field, timestamp field or None, weight field or None)."""
    tokens, floats = inter.names("token"), inter.names("float")
    if len(tokens) < 2:
        raise GraphFormatError(f"{inter.path}: needs two token columns (user, item), the header "
                               f"declares {inter.types}")
    ucol = "user_id" if "user_id" in tokens else tokens[0]
    icol = "item_id" if "item_id" in tokens else [t for t in tokens if t != ucol][0]
    times = [f for f in floats if "time" in f.lower()] or [f for f in floats if f.lower() in TIME_NAMES]
    tcol = times[0] if times else None
    rest = [f for f in floats if f != tcol]
    wcol = "rating" if "rating" in rest else (rest[0] if rest else None)
    ignored = [f for f in inter.types if f not in (ucol, icol, tcol, wcol)]
    if ignored:
        log.info("%s: fields %s are not stored (edges carry only a timestamp and a weight)", inter.path, ignored)
    return ucol, icol, tcol, wcol


def _id_field(table: AtomicTable | None, inter_field: str) -> str | None:
    """The key of a ``.user``/``.item`` table: the field named as in ``.inter``, else the first token."""
    if table is None:
        return None
    tokens = table.names("token")
    if not tokens:
        raise GraphFormatError(f"{table.path}: no token column to use as the id; header {table.types}")
    return inter_field if inter_field in tokens else tokens[0]


def _required(table: AtomicTable, column: str) -> list[str]:
    values = table.columns[column]
    for row, v in enumerate(values):
        if v is None:
            raise GraphFormatError(f"{table.where(row, column)}: empty id")
    return values


def _finite(table: AtomicTable, column: str, minimum: float = -FLOAT32_MAX, maximum: float = FLOAT32_MAX):
    """A float column's values, each finite and in what stores it (float32; int64 for timestamps)."""
    values = table.columns[column]
    for row, v in enumerate(values):
        if not math.isfinite(v) or v < minimum:
            raise GraphFormatError(f"{table.where(row, column)}: value {v} is missing, not finite "
                                   f"or below {minimum}")
        if v > maximum:
            raise GraphFormatError(f"{table.where(row, column)}: value {v} is above {maximum}")
    return values


def _rows_by_id(table: AtomicTable | None, field: str | None) -> dict[str, int]:
    """Row of each id of a .user/.item table."""
    if table is None:
        return {}
    rows: dict[str, int] = {}
    for row, raw in enumerate(_required(table, field)):
        if raw in rows:
            raise GraphFormatError(f"{table.where(row, field)}: id {raw!r} already on line "
                                   f"{table.lines[rows[raw]]}")
        rows[raw] = row
    return rows


def _edge_columns(pairs: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return {"src": arr[:, 0].copy(), "dst": arr[:, 1].copy()}


def _entity_links(link: AtomicTable | None, inter_item: str) -> dict[str, str]:
    """entity -> item from ``.link`` (item field named as in ``.inter``, else ``item_id``, else
    the first token field; entity field ``entity_id``, else the next token field)."""
    if link is None:
        return {}
    tokens = link.names("token")
    if len(tokens) < 2:
        raise GraphFormatError(f"{link.path}: needs two token columns (item, entity); header {link.types}")
    icol = next((c for c in (inter_item, "item_id") if c in tokens), tokens[0])
    ecol = "entity_id" if "entity_id" in tokens and icol != "entity_id" else [t for t in tokens if t != icol][0]
    items, out, first = _required(link, icol), {}, {}
    for row, entity in enumerate(_required(link, ecol)):
        if entity in out and out[entity] != items[row]:
            raise GraphFormatError(f"{link.where(row, ecol)}: entity {entity!r} linked to item "
                                   f"{items[row]!r} here and to {out[entity]!r} on line {first[entity]}")
        out[entity], first[entity] = items[row], link.lines[row]
    return out


def kg_relation_name(relation: str) -> str:
    """``film.film.actor`` -> ``film_film_actor`` (a valid hetrec relation name).

    A name the partitioner would read as a reverse (``rev_*``) gets a ``kg_`` prefix.
    """
    name = feature_name(relation.replace(".", "_"), fallback="relation")
    return f"kg_{name}" if name.startswith("rev_") else name


def _knowledge_graph(kg: AtomicTable | None, link: dict[str, str], items: Vocab, item_type: str):
    """Entity ids and KG edge lists; triples with no endpoint linked to an item are dropped."""
    if kg is None:
        return Vocab(()), []
    tokens = kg.names("token")
    if len(tokens) < 3:
        raise GraphFormatError(f"{kg.path}: needs three token columns (head, relation, tail); "
                               f"header {kg.types}")
    hcol = "head_id" if "head_id" in tokens else tokens[0]
    rcol = "relation_id" if "relation_id" in tokens else [t for t in tokens if t != hcol][0]
    tcol = "tail_id" if "tail_id" in tokens else [t for t in tokens if t not in (hcol, rcol)][0]
    heads, rels, tails = (_required(kg, c) for c in (hcol, rcol, tcol))
    kept = [i for i in range(len(kg)) if heads[i] in link or tails[i] in link]
    if len(kept) < len(kg):
        log.info("%s: %d of %d triples touch no item linked in .link; left out", kg.path, len(kg) - len(kept), len(kg))
    entities = Vocab({e for i in kept for e in (heads[i], tails[i]) if e not in link})
    counts = Counter(kg_relation_name(rels[i]) for i in kept)

    def node(e: str) -> tuple[str, int]:
        return (item_type, items.index[link[e]]) if e in link else (ENTITY, entities.index[e])

    grouped: dict[tuple[str, str, str], list[tuple[int, int]]] = defaultdict(list)
    for i in kept:
        rel = kg_relation_name(rels[i])
        if counts[rel] < MIN_RELATION_SHARE * len(kept):
            rel = KG_OTHER
        (stype, s), (dtype, d) = node(heads[i]), node(tails[i])
        grouped[(stype, rel, dtype)].append((s, d))
    edges = [(EdgeType(s, r, d), _edge_columns(grouped[(s, r, d)]))
             for s, r, d in sorted(grouped, key=lambda k: f"{k[0]}__{k[1]}__{k[2]}")]
    return entities, edges
