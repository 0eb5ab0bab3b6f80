"""A graph directory whose user-item edges are one split's training part.

A graph model trained for evaluation must not see the valid or test interactions, but
may use every other edge type (attributes, knowledge graph). :func:`write_split_graph`
writes such a graph next to the source: the target edge type is rewritten from the
split's train interactions, every other part file is hard-linked (copied where links are
not possible), so it costs the size of the train edges only.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from graphs.exceptions import ConfigError
from graphs.store import GraphDir, GraphWriter, link_file, link_tree, replace_dir, temp_sibling, write_json_atomic
from trainers.evaluation.splits import Interactions


def write_split_graph(graph: str | Path, out: str | Path, train: Interactions,
                      etype: str, overwrite: bool = False) -> Path:
    """Copy ``graph`` to ``out`` with ``etype``'s edges replaced by ``train``.

    ``train.user``/``item``/``ts``: [M]; edge weights of the source are not kept (the
    rewritten type carries ``ts`` and, if the schema has it, ``weight = 1``).
    """
    src, out = GraphDir(graph, validate="none"), Path(out)
    schema = src.schema
    et = schema.edge_type(etype)
    if (train.num_users, train.num_items) != (schema.node_type(et.src).count, schema.node_type(et.dst).count):
        raise ConfigError(f"train interactions span {train.num_users} x {train.num_items} ids, but {etype} "
                         f"joins {schema.node_type(et.src).count} x {schema.node_type(et.dst).count} nodes")
    tmp = temp_sibling(out)
    try:
        with GraphWriter(tmp / "edges_only", schema.with_counts(
                {n.name: 0 for n in schema.node_types}, {e.key: 0 for e in schema.edge_types})) as w:
            order = np.lexsort((train.item, train.user))
            columns = {"src": train.user[order], "dst": train.item[order], "ts": train.ts[order],
                       "weight": np.ones(len(order), dtype=np.float32)}
            w.write_edges(etype, columns)
        for f in (tmp / "edges_only" / "edges" / etype).glob("part-*.parquet"):
            link_file(f, tmp / "edges" / etype / f.name)
        shutil.rmtree(tmp / "edges_only")
        link_tree(src.path, tmp, skip={Path("schema.json"), Path("edges") / etype})
        counts = {e.key: e.count for e in schema.edge_types} | {etype: len(train)}
        write_json_atomic(tmp / "schema.json",
                          schema.with_counts({n.name: n.count for n in schema.node_types}, counts).to_json())
        replace_dir(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
