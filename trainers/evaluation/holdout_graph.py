"""Graphs for cold-start experiments: some users and items removed, to arrive later as events.

:func:`renumber` gives every node a new id: the kept ("warm") nodes of a type first, in
their old order, then the held-out ("cold") ones, so a cold node's new id is exactly the
id an update event would create for it. :func:`write_renumbered_graph` writes a graph
directory with the first ``keep[t]`` nodes of each type, every edge whose two ends are
kept (remapped), and the given user-item edges. :func:`node_events` turns cold nodes and
their edges into :mod:`graphs.events` events (attributes from the node tables).
Written for MovieLens-sized graphs: each type's table is read whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from graphs.store import GraphDir, GraphWriter


def renumber(counts: dict[str, int], cold: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{type: new id of each old id [count]}``: warm ids ``0..``, then ``cold[t]`` in its order."""
    out = {}
    for ntype, count in counts.items():
        held = np.asarray(cold.get(ntype, []), np.int64)
        warm = np.setdiff1d(np.arange(count), held)
        new = np.empty(count, np.int64)
        new[warm] = np.arange(len(warm))
        new[held] = len(warm) + np.arange(len(held))
        out[ntype] = new
    return out


def write_renumbered_graph(graph: str | Path, out: str | Path, remap: dict[str, np.ndarray],
                           keep: dict[str, int], target: str, target_edges: dict[str, np.ndarray],
                           overwrite: bool = False) -> Path:
    """Write ``graph`` with ids mapped by ``remap``, nodes ``< keep[t]`` only.

    ``target_edges``: ``{"src", "dst", "ts"}`` [M] in new ids, replacing the ``target``
    edge type; every other edge type keeps the edges whose ends both survive.
    """
    src = GraphDir(graph, validate="none")
    schema = src.schema
    with GraphWriter(out, schema, overwrite=overwrite) as w:
        for n in schema.node_types:
            table = src.read_nodes(n.name)
            new = remap[n.name][table["id"].to_numpy()]
            rows = np.flatnonzero(new < keep[n.name])
            rows = rows[np.argsort(new[rows])]
            table = table.take(pa.array(rows)).set_column(
                table.schema.get_field_index("id"), "id", pa.array(new[rows]))
            if len(rows):
                w.write_nodes(n.name, table)
        for e in schema.edge_types:
            if e.key == target:
                cols = {k: np.asarray(v) for k, v in target_edges.items()}
                if e.weight:
                    cols["weight"] = np.ones(len(cols["src"]), np.float32)
            else:
                cols = src.read_edges(e.key)
                cols["src"], cols["dst"] = remap[e.src][cols["src"]], remap[e.dst][cols["dst"]]
                ok = (cols["src"] < keep[e.src]) & (cols["dst"] < keep[e.dst])
                cols = {k: v[ok] for k, v in cols.items()}
            if len(cols["src"]):
                w.write_edges(e.key, cols)
    return Path(out)


def node_events(graph: str | Path, remap: dict[str, np.ndarray], cold: dict[str, np.ndarray],
                exclude: tuple[str, ...] = ()) -> tuple[list[dict], list[dict]]:
    """Events creating the ``cold`` nodes (new ids from ``remap``, in id order), and the
    events of their edges in every edge type but ``exclude`` (the other end may be cold).

    Returns ``(node events, edge events)``; attributes come from the node tables (``text``
    columns are left out: the identity layer does not encode them).
    """
    src = GraphDir(graph, validate="none")
    schema = src.schema
    nodes = []
    for n in schema.node_types:
        held = np.asarray(cold.get(n.name, []), np.int64)
        if not len(held):
            continue
        names = [f.name for f in n.features if f.kind != "text"]
        table = src.read_nodes(n.name, columns=["id"] + names).to_pydict()
        row_of = {i: r for r, i in enumerate(table["id"])}
        for old in held[np.argsort(remap[n.name][held])]:
            r = row_of[int(old)]
            attrs = {k: table[k][r] for k in names if table[k][r] is not None}
            nodes.append({"op": "node", "ntype": n.name, "id": int(remap[n.name][old]), "attrs": attrs})
    edges = []
    for e in schema.edge_types:
        if e.key in exclude or e.rel.startswith("rev_"):
            continue
        touch_src, touch_dst = cold.get(e.src), cold.get(e.dst)
        if touch_src is None and touch_dst is None:
            continue
        cols = src.read_edges(e.key)
        hit = np.zeros(len(cols["src"]), bool)
        if touch_src is not None:
            hit |= np.isin(cols["src"], touch_src)
        if touch_dst is not None:
            hit |= np.isin(cols["dst"], touch_dst)
        for s, d in zip(remap[e.src][cols["src"][hit]], remap[e.dst][cols["dst"][hit]]):
            edges.append({"op": "edge", "etype": e.key, "src": int(s), "dst": int(d)})
    return nodes, edges
