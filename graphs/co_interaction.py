"""The item-item co-interaction graph of GFM's foundation layer, as a Ray Data job.

Two items are linked when one user interacts with both within ``window`` steps of its
time-ordered history; the link's weight is how often that happens over all users, and
each item keeps its ``top_k`` heaviest links. Three stages, each a Ray Data operation, so
no process holds more than one user's history or one item's links:

1. read the interaction edges (one task per row group) and group them by user;
2. per user, sort by time and emit ``(a, b, 1)`` for every pair at most ``window`` apart,
   both directions (a self pair is dropped); sum the weights per ``(a, b)``;
3. per item ``a``, keep the ``top_k`` heaviest ``b`` (ties by the smaller id).

    build_co_interaction_graph("runs/ml-100k", "runs/ml-gfm/co-graph", CoInteractionConfig(window=5, top_k=20))
    # a graph directory: movie nodes (their features linked) and movie__co_interacts__movie edges
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from graphs.exceptions import ConfigError, require_positive_ints
from graphs.schema import EdgeType, GraphSchema
from graphs.store import GraphDir, GraphWriter, read_units, row_group_units


@dataclass(frozen=True)
class CoInteractionConfig:
    """``window``: the number of later interactions of the same user each one links to;
    ``top_k``: links kept per item; ``min_weight``: links seen fewer times are dropped."""

    window: int = 5
    top_k: int = 20
    min_weight: float = 1.0

    def __post_init__(self) -> None:
        require_positive_ints(self, "window", "top_k")


def _read(units: pa.Table) -> pa.Table:
    """Rows of :func:`~graphs.store.row_group_units` -> those edges' ``src`` (user), ``dst``
    (item), ``ts``."""
    t = read_units(units)
    ts = t.column("ts") if "ts" in t.column_names else pa.array(np.zeros(t.num_rows, np.int64))
    return pa.table({"user": t.column("src"), "item": t.column("dst"), "ts": ts})


def _pairs(history: dict[str, np.ndarray], window: int) -> dict[str, np.ndarray]:
    """One user's interactions -> ``(a, b, w)`` for every pair at most ``window`` apart."""
    items = history["item"][np.lexsort((history["item"], history["ts"]))]     # by time, then id
    a = [items[:-d] for d in range(1, min(window, len(items) - 1) + 1)]
    b = [items[d:] for d in range(1, min(window, len(items) - 1) + 1)]
    a, b = (np.concatenate(a), np.concatenate(b)) if a else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    keep = a != b
    a, b = a[keep], b[keep]
    return {"a": np.concatenate([a, b]), "b": np.concatenate([b, a]), "w": np.ones(2 * len(a), np.float32)}


def _top_k(links: dict[str, np.ndarray], top_k: int, min_weight: float) -> dict[str, np.ndarray]:
    """One item's summed links -> its ``top_k`` heaviest (ties: the smaller id first)."""
    w = links["sum(w)"].astype(np.float32)
    order = np.lexsort((links["b"], -w))[:top_k]
    order = order[w[order] >= min_weight]
    return {"src": links["a"][order], "dst": links["b"][order], "weight": w[order]}


def build_co_interaction_graph(graph: str | Path, out: str | Path, cfg: CoInteractionConfig | None = None,
                               etype: str | None = None, overwrite: bool = False) -> GraphSchema:
    """Write the co-interaction graph of the items of ``etype`` (default: the graph's
    user-item type) to ``out``: a graph directory with the item type (its node files, and
    so its features, hard-linked) and ``<item>__co_interacts__<item>`` edges with weights,
    streamed from the job's output batches (atomic, like every graph directory)."""
    cfg = cfg or CoInteractionConfig()
    gdir = GraphDir(graph)
    etype = gdir.schema.interaction_type(etype)
    item = gdir.schema.edge_type(etype).dst
    units = row_group_units(gdir.edge_files(etype))
    if not units:
        raise ConfigError(f"{gdir.path}: edge type {etype!r} has no edges to link items by")
    ds = ray.data.from_items(units, override_num_blocks=len(units)).map_batches(_read, batch_size=1,
                                                                               batch_format="pyarrow")
    pairs = ds.groupby("user").map_groups(_pairs, batch_format="numpy", fn_kwargs={"window": cfg.window})
    summed = pairs.groupby(["a", "b"]).sum("w")
    kept = summed.groupby("a").map_groups(_top_k, batch_format="numpy",
                                          fn_kwargs={"top_k": cfg.top_k, "min_weight": cfg.min_weight})
    node_type = gdir.schema.node_type(item)
    schema = GraphSchema((node_type,), (EdgeType(item, "co_interacts", item, weight=True),),
                         name=f"{gdir.schema.name}-co-{item}")
    key = schema.edge_types[0].key
    with GraphWriter(out, schema, overwrite=overwrite) as w:
        for batch in kept.iter_batches(batch_format="numpy", batch_size=None):
            if len(batch["src"]):
                w.write_edges(key, batch)
        w.link_nodes(item, gdir.node_files(item), node_type.count)
    return GraphSchema.load(Path(out) / "schema.json")
