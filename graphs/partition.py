"""Partition a graph directory into per-shard CSR arrays with Ray Data, streaming.

Two passes, each bounded by a chunk size, never by the graph:

1. **Route** (``from_items(row groups)`` -> ``map_batches``): every batch of edges of one type is
   routed twice, forward by ``owner(src)`` and reversed by ``owner(dst)``. Each record gets
   a bucket key ``(direction, shard, row range)`` and the batch is written, sorted by key,
   to one spill file per (direction, shard); only ``{key: (file, start, count)}`` goes back
   to the driver.
2. **Build** (``from_items`` -> ``map``): one task per (edge type, shard) reads its buckets
   range by range from every spill file, sorts each range by row (stable) and appends it
   to ``indices.npy`` / ``ts.npy`` / ``weight.npy``; ``indptr`` comes from the row counts.
   It then deletes its spill files, of which it was the only reader.
   A range holds at most about ``bucket_edges`` records, so that is the memory bound.

The output is written into a temporary sibling folder and renamed into place.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray

from graphs.csr_build import build_csr, build_items, spill_columns
from graphs.exceptions import ConfigError, GraphFormatError, OutputExistsError
from graphs.schema import EdgeType, GraphSchema
from graphs.shards import META_FORMAT, OWNER_RULE, owned_counts
from graphs.store import GraphDir, replace_dir, temp_sibling, write_json_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionConfig:
    """num_parts: shards P. bucket_edges: records sorted at once in pass 2 (the memory bound).
    batch_rows: edges routed at once in pass 1."""

    num_parts: int = 8
    bucket_edges: int = 1 << 23
    batch_rows: int = 1 << 20

    def __post_init__(self) -> None:
        for name in ("num_parts", "bucket_edges", "batch_rows"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"PartitionConfig.{name} must be an int >= 1, got {value!r}")


@dataclass(frozen=True)
class _Plan:
    """How one input edge type is routed. Direction 0 is forward (rows: src), 1 reverse (rows: dst).

    A node's row in its shard is ``id // P`` (its id within its type). Rows are cut into
    ranges of ``2**shift[d]`` rows: few enough records per range for ``bucket_edges`` and at
    most 65,536 rows, so pass 2 sorts 16-bit row offsets with numpy's O(n) radix sort.
    Bucket key = ``base[d] + shard * ranges[d] + row >> shift[d]``.
    """

    etype: EdgeType
    num_parts: int
    offsets: tuple[int, int]
    counts: tuple[int, int]
    shifts: tuple[int, int]
    ranges: tuple[int, int]
    nbr_dtypes: tuple[str, str]  # forward stores dst ids, reverse stores src ids

    @property
    def spill_nbr_dtype(self) -> str:
        return "int64" if "int64" in self.nbr_dtypes else "int32"

    @property
    def bases(self) -> tuple[int, int]:
        return 0, self.num_parts * self.ranges[0]


def _plan(etype: EdgeType, schema: GraphSchema, cfg: PartitionConfig) -> _Plan:
    counts = {n.name: n.count for n in schema.node_types}
    P = cfg.num_parts
    shifts, ranges = [], []
    for ntype in (etype.src, etype.dst):
        n = max(1, counts[ntype])
        rows_by_memory = cfg.bucket_edges * n / max(1, etype.count)  # rows x mean degree <= bucket
        shift = int(np.clip(np.floor(np.log2(max(1.0, rows_by_memory))), 0, 16))
        rows_per_shard = -(-n // P)
        shifts.append(shift)
        ranges.append(max(1, -(-rows_per_shard // (1 << shift))))
    def id_dtype(n: int) -> str:
        return "int32" if n < 2**31 else "int64"

    return _Plan(etype, P, (schema.offsets[etype.src], schema.offsets[etype.dst]),
                 (counts[etype.src], counts[etype.dst]), tuple(shifts), tuple(ranges),
                 (id_dtype(counts[etype.dst]), id_dtype(counts[etype.src])))


def _route(batch: dict[str, np.ndarray], plan: _Plan, num_parts: int, spill: str) -> dict:
    """Pass 1 on one batch: ``src, dst: [B]`` (+ ts, weight) -> 2B records in spill files.

    Records are sorted by bucket key, one file per (direction, shard). A record
    stores its row as a 16-bit offset inside its range; the key says which range.
    Returns one row per non-empty bucket: ``key [K], start [K], count [K]`` and the file.
    """
    P, n = num_parts, len(batch["src"])
    ends = (batch["src"], batch["dst"])
    for d, ids in enumerate(ends):
        if n and (ids.min() < 0 or ids.max() >= plan.counts[d]):
            col = ("src", "dst")[d]
            raise GraphFormatError(f"edges {plan.etype.key}: {col} id out of range [0, {plan.counts[d]})")
    pow2 = P & (P - 1) == 0
    columns: dict[str, list[np.ndarray]] = {"row": [], "nbr": [], "ts": [], "weight": []}
    counts = []
    for d, ids in enumerate(ends):
        part = (ids + plan.offsets[d]) & (P - 1) if pow2 else (ids + plan.offsets[d]) % P
        row = ids >> (P.bit_length() - 1) if pow2 else ids // P
        key = part * plan.ranges[d] + (row >> plan.shifts[d])
        num_keys = P * plan.ranges[d]
        order = np.argsort(key.astype(np.uint16) if num_keys <= 2**16 else key, kind="stable")
        counts.append(np.bincount(key, minlength=num_keys))
        columns["row"].append((row[order] & ((1 << plan.shifts[d]) - 1)).astype(np.uint16))
        columns["nbr"].append(ends[1 - d][order].astype(plan.spill_nbr_dtype))
        for col in ("ts", "weight"):
            if col in batch:
                columns[col].append(batch[col][order])
    return _write_spill(columns, counts, plan, spill)


def _write_spill(columns: dict[str, list[np.ndarray]], counts: list[np.ndarray], plan: _Plan,
                 spill: str) -> dict:
    """One file per (direction, shard), so the pass-2 task of that shard is its only reader
    and deletes it when done: disk peaks at about graph + max(spill, output)."""
    rows: dict[str, list] = {"key": [], "start": [], "count": [], "total": [], "file": []}
    tag = uuid.uuid4().hex
    for d in (0, 1):
        bounds = np.concatenate([[0], np.cumsum(counts[d])])
        for part in range(plan.num_parts):
            k0, k1 = part * plan.ranges[d], (part + 1) * plan.ranges[d]
            lo, hi = int(bounds[k0]), int(bounds[k1])
            if hi == lo:
                continue
            path = f"{spill}/{tag}-{d}-{part}.bin"
            with open(path, "wb") as f:
                for name, dtype in spill_columns(plan):
                    f.write(memoryview(np.ascontiguousarray(columns[name][d][lo:hi], dtype=dtype)))
            nz = np.flatnonzero(counts[d][k0:k1])
            rows["key"].append(plan.bases[d] + k0 + nz)
            rows["start"].append(bounds[k0 + nz] - lo)
            rows["count"].append(counts[d][k0 + nz])
            rows["total"].append(np.full(len(nz), hi - lo))
            rows["file"].append(np.full(len(nz), path, dtype=object))
    out = {k: np.concatenate(v) if v else np.empty(0, dtype=object if k == "file" else np.int64)
           for k, v in rows.items()}
    out["etype"] = np.full(len(out["key"]), plan.etype.key, dtype=object)
    return out


def partition_graph(graph: str | Path, out: str | Path, config: PartitionConfig = PartitionConfig(),
                    overwrite: bool = False, ray_remote_args: dict | None = None) -> dict:
    """Partition the graph directory ``graph`` into ``config.num_parts`` CSR shards under ``out``.

    Validates the input first, then runs on the connected Ray (the caller's ``ray.init``;
    without one, Ray starts a local instance). ``ray_remote_args`` go to every Ray Data task of both passes (e.g.
    ``{"resources": {"updater": 1}}`` to place them on a node type). Returns the ``meta.json``.
    """
    t0 = time.perf_counter()
    gdir, out = GraphDir(graph, validate="fast"), Path(out).resolve()
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    schema, P = gdir.schema, config.num_parts
    all_types = list(schema.edge_types) + [e.reverse() for e in schema.edge_types]
    keys = [e.key for e in all_types]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise GraphFormatError(f"{gdir.path}/schema.json: reverse edge types collide with given ones: {dup}")
    log.info("partition: %s: %s edges in %d edge types -> %d shards", gdir.path, f"{schema.num_edges:,}",
             len(schema.edge_types), P)
    # errors inside our Ray Data tasks surface as themselves (GraphFormatError, OSError...)
    ray.data.DataContext.get_current().raise_original_map_exception = True
    tmp = temp_sibling(out)
    spill = tmp / "_spill"
    spill.mkdir(parents=True)
    try:
        plans = {e.key: _plan(e, schema, config) for e in schema.edge_types}
        routed = _route_all(gdir, plans, P, config, str(spill), ray_remote_args or {})
        t_route = time.perf_counter()
        items = build_items(plans, routed, P)
        log.info("partition: routed in %.1f s; building %d CSR shards", t_route - t0, len(items))
        built = (ray.data.from_items(items, override_num_blocks=min(len(items), 4 * P))
                 .map(build_csr, fn_kwargs={"plans": plans, "out": str(tmp),
                                         "bucket_edges": config.bucket_edges}, **(ray_remote_args or {}))
                 .take_all())
        shutil.rmtree(spill)
        meta = _meta(gdir, schema, all_types, built, config, time.perf_counter() - t0,
                     t_route - t0)
        write_json_atomic(tmp / "meta.json", meta)
        replace_dir(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("partition: wrote %s in %.1f s", out, meta["seconds"]["total"])
    return meta


def _route_unit(units: dict[str, np.ndarray], plans: dict[str, _Plan], P: int, batch_rows: int,
                spill: str) -> dict[str, np.ndarray]:
    """Pass-1 task: read row groups of edge files with pyarrow and route them batch by batch."""
    out: list[dict] = []
    for ekey, path, group in zip(units["etype"], units["file"], units["row_group"]):
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[int(group)]):
            cols = {name: batch.column(i).to_numpy() for i, name in enumerate(batch.schema.names)}
            out.append(_route(cols, plans[ekey], P, spill))
    return {k: np.concatenate([o[k] for o in out]) for k in out[0]}


def _route_all(gdir: GraphDir, plans: dict[str, _Plan], P: int, cfg: PartitionConfig,
               spill: str, remote_args: dict) -> dict[str, dict[str, np.ndarray]]:
    """Pass 1 over every edge type in one streaming Ray Data job, one task per row group.

    Ray Data schedules and streams the work; each task reads its row group with pyarrow.
    Measured here, ``ray.data.read_parquet`` (one dataset per edge type, or one over all
    files with ``include_paths``) added 5-15 s of overhead per 1e7 edges on 2 cores, eight
    times the cost of the routing itself (BENCHMARKS.md).
    """
    units = [{"etype": ekey, "file": str(f), "row_group": g}
             for ekey in plans for f in gdir.edge_files(ekey)
             for g in range(pq.ParquetFile(f).num_row_groups)]
    if not units:
        return {}
    ds = ray.data.from_items(units, override_num_blocks=len(units)).map_batches(
        _route_unit, batch_size=1, batch_format="numpy",
        fn_kwargs={"plans": plans, "P": P, "batch_rows": cfg.batch_rows, "spill": spill}, **remote_args)
    chunks: dict[str, list[dict[str, np.ndarray]]] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for ekey in np.unique(batch["etype"]):
            sel = batch["etype"] == ekey
            chunks.setdefault(str(ekey), []).append({k: v[sel] for k, v in batch.items() if k != "etype"})
    routed = {k: {c: np.concatenate([x[c] for x in v]) for c in v[0]} for k, v in chunks.items()}
    seen = {k: int(v["count"].sum()) for k, v in routed.items()}
    for ekey, plan in plans.items():
        if seen.get(ekey, 0) != 2 * plan.etype.count:
            raise GraphFormatError(f"{gdir.path / 'edges' / ekey}: routed {seen.get(ekey, 0) // 2} edges, "
                                   f"schema.json says count={plan.etype.count}")
    return routed


def _meta(gdir, schema, all_types, built, config, seconds, route_seconds) -> dict:
    full = GraphSchema(schema.node_types, tuple(all_types), schema.name)
    per_type: dict[str, dict] = {}
    for b in built:
        s = per_type.setdefault(b["etype"], {"edges": 0, "max_degree": 0, "nonzero_rows": 0,
                                             "log2_hist": [0] * 40, "edges_per_shard": [0] * config.num_parts})
        s["edges"] += b["edges"]
        s["max_degree"] = max(s["max_degree"], b["max_degree"])
        s["nonzero_rows"] += b["nonzero_rows"]
        s["log2_hist"] = [x + y for x, y in zip(s["log2_hist"], b["log2_hist"])]
        s["edges_per_shard"][b["part"]] = b["edges"]
    for s in per_type.values():
        s["mean_degree"] = s["edges"] / max(1, s["nonzero_rows"])
        while s["log2_hist"] and s["log2_hist"][-1] == 0:
            s["log2_hist"].pop()
        per_shard = s["edges_per_shard"]
        s["imbalance"] = max(per_shard) / max(1e-9, sum(per_shard) / len(per_shard))
    shards = [{"part": p,
               "nodes": {n.name: int(owned_counts(schema.offsets[n.name], n.count, config.num_parts)[p])
                         for n in schema.node_types},
               "edges": int(sum(b["edges"] for b in built if b["part"] == p))}
              for p in range(config.num_parts)]
    return {"format": META_FORMAT, "version": 1, "num_parts": config.num_parts, "owner_rule": OWNER_RULE,
            "graph": str(gdir.path.resolve()), "config": asdict(config), "schema": full.to_json(),
            "num_nodes": schema.num_nodes, "num_edges": full.num_edges,
            "seconds": {"total": seconds, "route": route_seconds},
            "shards": shards, "degree_stats": per_type}
