"""Statistics of a graph directory or a partitioned graph, from metadata only.

A graph directory's figures come from ``schema.json`` and the parquet footers (row
counts, timestamp min/max statistics), so they cost no scan at any size. A partitioned
graph's come from ``meta.json``, which the partitioner filled while it streamed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from graphs.exceptions import GraphFormatError
from graphs.store import GraphDir


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _ts_range(files: list[Path]) -> tuple[int, int] | None:
    lo, hi = None, None
    for f in files:
        meta = pq.ParquetFile(f).metadata
        col = meta.schema.names.index("ts")
        for g in range(meta.num_row_groups):
            s = meta.row_group(g).column(col).statistics
            if s is None or not s.has_min_max:
                return None
            lo = s.min if lo is None else min(lo, s.min)
            hi = s.max if hi is None else max(hi, s.max)
    return (lo, hi) if lo is not None else None


def graph_stats(path: str | Path) -> dict:
    """Figures of a graph directory (``schema.json``) or a partitioned graph (``meta.json``)."""
    path = Path(path)
    if (path / "meta.json").is_file():
        return _partition_stats(path)
    if not (path / "schema.json").is_file():
        raise GraphFormatError(f"{path}: neither a graph directory (schema.json) "
                               "nor a partitioned graph (meta.json)")
    gdir = GraphDir(path, validate="none")
    schema = gdir.schema
    edges = []
    for e in schema.edge_types:
        row = {"type": e.key, "edges": e.count, "ts": e.ts, "weight": e.weight}
        if e.ts and e.count:
            rng = _ts_range(gdir.edge_files(e.key))
            if rng:
                row["ts_min"], row["ts_max"] = rng
        edges.append(row)
    return {
        "kind": "graph", "path": str(path), "name": schema.name,
        "num_nodes": schema.num_nodes, "num_edges": schema.num_edges,
        "node_types": [{"type": n.name, "nodes": n.count,
                        "features": [f"{f.name}:{f.kind}" for f in n.features]} for n in schema.node_types],
        "edge_types": edges, "bytes": disk_bytes(path),
    }


def _partition_stats(path: Path) -> dict:
    meta = json.loads((path / "meta.json").read_text())
    edges = [{"type": k, "edges": v["edges"], "max_degree": v["max_degree"],
              "mean_degree": round(v["mean_degree"], 2), "imbalance": round(v["imbalance"], 3)}
             for k, v in meta["degree_stats"].items()]
    return {
        "kind": "partitioned", "path": str(path), "graph": meta["graph"],
        "num_parts": meta["num_parts"], "owner_rule": meta["owner_rule"],
        "num_nodes": meta["num_nodes"], "num_edges": meta["num_edges"],
        "edges_per_shard": [s["edges"] for s in meta["shards"]],
        "edge_types": edges, "seconds": meta["seconds"], "bytes": disk_bytes(path),
    }


def format_stats(stats: dict, top: int | None = None) -> str:
    """A plain-text table of :func:`graph_stats` output. ``top``: show only the ``top`` edge
    types by count and one line for the rest (None: every type)."""
    lines = []
    shown, rest = stats["edge_types"], []
    if top is not None:
        ranked = sorted(shown, key=lambda e: -e["edges"])
        shown, rest = ranked[:top], ranked[top:]
    if stats["kind"] == "graph":
        lines.append(f"graph {stats['name'] or stats['path']}: {stats['num_nodes']:,} nodes, "
                     f"{stats['num_edges']:,} edges, {stats['bytes'] / 2**20:.1f} MiB")
        lines.append(f"  {'node type':<28}{'nodes':>12}  features")
        for n in stats["node_types"]:
            lines.append(f"  {n['type']:<28}{n['nodes']:>12,}  {', '.join(n['features']) or '-'}")
        lines.append(f"  {'edge type':<52}{'edges':>12}  ts/weight")
        for e in shown:
            extra = "ts" if e["ts"] else ""
            extra += ("+" if extra and e["weight"] else "") + ("weight" if e["weight"] else "")
            lines.append(f"  {e['type']:<52}{e['edges']:>12,}  {extra or '-'}")
    else:
        per = stats["edges_per_shard"]
        lines.append(f"partitioned graph {stats['path']}: {stats['num_parts']} shards "
                     f"(owner = {stats['owner_rule']}), {stats['num_nodes']:,} nodes, "
                     f"{stats['num_edges']:,} edges incl. reverses, {stats['bytes'] / 2**20:.1f} MiB, "
                     f"built in {stats['seconds']['total']:.1f} s")
        lines.append(f"  edges per shard: min {min(per):,}  max {max(per):,}  "
                     f"(max/mean {max(per) / max(1e-9, sum(per) / len(per)):.3f})")
        lines.append(f"  {'edge type':<52}{'edges':>12}{'max deg':>9}{'mean deg':>10}{'imbal.':>8}")
        for e in shown:
            lines.append(f"  {e['type']:<52}{e['edges']:>12,}{e['max_degree']:>9,}"
                         f"{e['mean_degree']:>10.2f}{e['imbalance']:>8.3f}")
    if rest:
        lines.append(f"  {f'... {len(rest)} more edge types':<52}{sum(e['edges'] for e in rest):>12,}"
                     f"  (all: hetrec graph stats {stats['path']})")
    return "\n".join(lines)
