"""Pass 2 of the partitioner: build one shard's CSR of one edge type from its spill files.

Pass 1 (:mod:`graphs.partition`) leaves, per batch, one spill file per (direction, shard):
columns ``row`` (uint16 offset inside its row range), ``nbr`` (int32/int64), then ``ts``
(int64) and ``weight`` (float32) when the edge type has them, each ``total`` long, records
sorted by bucket key. A work item lists the slices ``(file, total, start, count)`` of its
buckets by row range; :func:`build_csr` sorts range by range and appends to ``.npy`` files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from graphs.shards import owned_counts

if TYPE_CHECKING:
    from graphs.partition import _Plan


def build_items(plans: dict[str, _Plan], routed: dict[str, dict[str, np.ndarray]], P: int) -> list[dict]:
    """One pass-2 work item per (edge type, direction, shard): its slices, columnar, by range.

    Item: ``range, start, count, total: [S]`` int64 and ``file: [S]`` paths, sorted by range.
    """
    items = []
    for ekey, plan in plans.items():
        empty = np.empty(0, np.int64)
        rec = routed.get(ekey, {"key": empty, "start": empty, "count": empty, "total": empty,
                                "file": np.empty(0, dtype=object)})
        key = rec["key"].astype(np.int64)
        d = (key >= plan.bases[1]).astype(np.int64)
        local = key - np.asarray(plan.bases)[d]
        ranges = np.asarray(plan.ranges)[d]
        part, rng = local // ranges, local % ranges
        for direction in (0, 1):
            for p in range(P):
                sel = np.flatnonzero((d == direction) & (part == p))
                sel = sel[np.argsort(rng[sel], kind="stable")]
                items.append({"plan": ekey, "direction": direction, "part": p, "range": rng[sel],
                              "start": rec["start"][sel], "count": rec["count"][sel],
                              "total": rec["total"][sel], "file": [str(f) for f in rec["file"][sel]]})
    return items


def spill_columns(plan: _Plan) -> list[tuple[str, np.dtype]]:
    cols = [("row", np.dtype(np.uint16)), ("nbr", np.dtype(plan.spill_nbr_dtype))]
    if plan.etype.ts:
        cols.append(("ts", np.dtype(np.int64)))
    if plan.etype.weight:
        cols.append(("weight", np.dtype(np.float32)))
    return cols


def read_slice(path: str, total: int, start: int, count: int, cols) -> dict[str, np.ndarray]:
    out, base = {}, 0
    with open(path, "rb") as f:
        for name, dtype in cols:
            f.seek(base + start * dtype.itemsize)
            out[name] = np.fromfile(f, dtype=dtype, count=count)
            base += total * dtype.itemsize
    return out


class _NpyAppender:
    """Writes a 1-D ``.npy`` of known length by appending raw chunks after the header."""

    def __init__(self, path: Path, dtype, n: int):
        self.dtype = np.dtype(dtype)
        self._f = open(path, "wb")
        np.lib.format.write_array_header_2_0(
            self._f, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (n,)})

    def write(self, data) -> None:
        self._f.write(data)

    def close(self) -> None:
        self._f.close()



def build_csr(item: dict, plans: dict[str, _Plan], out: str, bucket_edges: int) -> dict:
    """Pass 2 for one (edge type, direction, shard): write its CSR, return degree stats."""
    plan, d, part = plans[item["plan"]], item["direction"], item["part"]
    etype = plan.etype if d == 0 else plan.etype.reverse()
    n_rows = int(owned_counts(plan.offsets[d], plan.counts[d], plan.num_parts)[part])
    cols = spill_columns(plan)
    folder = Path(out) / f"shard-{part:05d}" / etype.key
    folder.mkdir(parents=True, exist_ok=True)
    total = int(np.sum(item["count"]))
    nbr_dtype = np.dtype(plan.nbr_dtypes[d])  # forward stores dst ids, reverse src ids
    files = {name: _NpyAppender(folder / f"{'indices' if name == 'nbr' else name}.npy",
                             nbr_dtype if name == "nbr" else dtype, total)
             for name, dtype in cols[1:]}
    degree = np.zeros(n_rows, dtype=np.int64)
    rng = np.asarray(item["range"], dtype=np.int64)
    bounds = np.flatnonzero(np.diff(rng)) + 1
    for group in np.split(np.arange(len(rng)), bounds) if len(rng) else []:
        r = int(rng[group[0]])
        slices = [(item["file"][i], int(item["total"][i]), int(item["start"][i]), int(item["count"][i]))
                  for i in group]
        lo = r << plan.shifts[d]
        hi = min(n_rows, lo + (1 << plan.shifts[d]))
        size = sum(s[3] for s in slices)
        if size <= bucket_edges:
            parts = [read_slice(*s, cols) for s in slices]
            degree[lo:hi] = _write_sorted(parts, hi - lo, files)
        else:  # hubs: ranges are sized for mean degree, so cut this one by its real counts
            rows = np.concatenate([read_slice(*s, cols[:1])["row"] for s in slices])
            deg = np.bincount(rows, minlength=hi - lo)
            del rows
            for a, b in _cut(deg, bucket_edges):
                parts = []
                for s in slices:
                    p = read_slice(*s, cols)
                    keep = (p["row"] >= a) & (p["row"] < b)
                    p = {k: v[keep] for k, v in p.items()}
                    if b - a == 1:  # one row holds more than a bucket: stream it, no sort needed
                        _append(p, files)
                    else:
                        parts.append(p)
                if parts:
                    _write_sorted(parts, hi - lo, files)
            degree[lo:hi] = deg
    for f in files.values():
        f.close()
    for path in set(item["file"]):  # this task was the only reader
        os.remove(path)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(degree, out=indptr[1:])
    np.save(folder / "indptr.npy", indptr)
    hist = np.bincount(np.floor(np.log2(degree[degree > 0])).astype(np.int64), minlength=40)[:40]
    return {"etype": etype.key, "part": part, "edges": total, "rows": n_rows,
            "max_degree": int(degree.max(initial=0)), "nonzero_rows": int((degree > 0).sum()),
            "log2_hist": hist.tolist()}


def _write_sorted(parts: list[dict[str, np.ndarray]], width: int, files: dict) -> np.ndarray:
    """Sort records by row offset (16-bit: a stable O(n) radix sort) and append them.

    Returns the degree of each of the ``width`` rows.
    """
    offset = np.concatenate([p["row"] for p in parts])
    order = np.argsort(offset, kind="stable")
    _append({name: np.concatenate([p[name] for p in parts])[order] for name in files}, files)
    return np.bincount(offset, minlength=width)


def _append(part: dict[str, np.ndarray], files: dict) -> None:
    for name, f in files.items():
        f.write(memoryview(part[name].astype(f.dtype, copy=False)))


def _cut(degree: np.ndarray, bucket: int) -> list[tuple[int, int]]:
    """Split rows ``[0, len(degree))`` into consecutive runs of at most ``bucket`` records
    (a single row above ``bucket`` is a run of its own)."""
    runs, start, acc = [], 0, 0
    for i, deg in enumerate(degree.tolist()):
        if acc and acc + deg > bucket:
            runs.append((start, i))
            start, acc = i, 0
        acc += deg
    runs.append((start, len(degree)))
    return [(a, b) for a, b in runs if degree[a:b].sum()]
