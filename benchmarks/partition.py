"""Benchmark: generate + partition synthetic graphs, and compare with an in-memory PyG CSR build.

    python benchmarks/partition.py                          # 1e6, 1e7, 1e8 edges, P=8
    python benchmarks/partition.py --sizes 1e9 --runs 1     # the one-off billion-edge run

Writes ``benchmarks/results/partition-<sizes>.json``: per size the median time of
generation and of partitioning (edges/s end to end and partition alone), peak RSS of the
driver and of every Ray worker (sampled every 0.2 s with psutil), bytes on disk; at
``--peer-size`` the same CSR built in memory with torch-geometric, as ratios; and the cost
of scanning the edges with ``ray.data.read_parquet`` against the row-group tasks used.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphs.partition import PartitionConfig, partition_graph  # noqa: E402
from graphs.stats import disk_bytes  # noqa: E402
from graphs.synthetic import generate_synthetic  # noqa: E402


class PeakRSS:
    """Samples the RSS of this process and of every Ray worker process in a thread."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.driver, self.worker, self.total = interval, 0, 0, 0
        self._stop = threading.Event()
        self._me = psutil.Process()

    def _sample(self) -> None:
        while not self._stop.is_set():
            driver = self._me.memory_info().rss
            workers = []
            for p in psutil.process_iter(["name", "memory_info"]):
                name = p.info["name"] or ""
                if name.startswith("ray::") and p.info["memory_info"] is not None:
                    workers.append(p.info["memory_info"].rss)
            self.driver = max(self.driver, driver)
            self.worker = max(self.worker, max(workers, default=0))
            self.total = max(self.total, driver + sum(workers))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def as_dict(self) -> dict:
        gib = 2**30
        return {"driver_gib": self.driver / gib, "max_worker_gib": self.worker / gib,
                "driver_plus_workers_gib": self.total / gib}


def _pyg_csr(graph: str, queue) -> None:
    """The peer: load every edge into memory, add reverses (ToUndirected), sort into CSR."""
    import resource

    import pyarrow.parquet as pq
    import torch
    import torch_geometric.transforms as T
    from torch_geometric.data import HeteroData
    from torch_geometric.utils import sort_edge_index
    from torch_geometric.utils.sparse import index2ptr

    from graphs.store import GraphDir

    t0 = time.perf_counter()
    gdir = GraphDir(graph, validate="none")
    data = HeteroData()
    for n in gdir.schema.node_types:
        data[n.name].num_nodes = n.count
    for e in gdir.schema.edge_types:
        table = pq.read_table(gdir.edge_files(e.key))
        store = data[e.src, e.rel, e.dst]
        store.edge_index = torch.stack([torch.from_numpy(table["src"].to_numpy()),
                                        torch.from_numpy(table["dst"].to_numpy())])
        if e.ts:
            store.ts = torch.from_numpy(table["ts"].to_numpy())
        if e.weight:
            store.weight = torch.from_numpy(table["weight"].to_numpy())
    data = T.ToUndirected(merge=False)(data)
    edges = 0
    for (src, rel, dst), store in data.edge_items():
        attrs = [a for a in (store.get("ts"), store.get("weight")) if a is not None]
        index, attrs = sort_edge_index(store.edge_index, attrs, num_nodes=max(data[src].num_nodes,
                                                                                data[dst].num_nodes))
        store.indptr = index2ptr(index[0], data[src].num_nodes)
        edges += index.shape[1]
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    queue.put({"seconds": seconds, "peak_rss_gib": rss / 2**30, "csr_edges": edges})


def run_peer(graph: Path) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_pyg_csr, args=(str(graph), queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"PyG peer failed with exit code {proc.exitcode}")
    return queue.get(timeout=10)


def scan_read_parquet(graph: Path) -> float:
    """Seconds for ``ray.data.read_parquet`` to stream every edge file (no routing)."""
    import ray

    files = [str(f) for f in sorted(graph.glob("edges/*/part-*.parquet"))]
    t0 = time.perf_counter()
    for _ in ray.data.read_parquet(files).iter_batches(batch_size=None):
        pass
    return time.perf_counter() - t0


def bench_size(edges: int, workdir: Path, parts: int, runs: int, peer: bool, seed: int) -> dict:
    graph, out = workdir / f"g{edges}", workdir / f"p{edges}"
    shutil.rmtree(graph, ignore_errors=True)
    with PeakRSS() as gen_rss:
        t0 = time.perf_counter()
        generate_synthetic(graph, edges, seed=seed, progress=edges >= 10**8)
        gen_s = time.perf_counter() - t0
    part_s, rss, route_s = [], [], []
    for _ in range(runs):
        shutil.rmtree(out, ignore_errors=True)
        with PeakRSS() as r:
            t0 = time.perf_counter()
            meta = partition_graph(graph, out, PartitionConfig(num_parts=parts))
            part_s.append(time.perf_counter() - t0)
        rss.append(r.as_dict())
        route_s.append(meta["seconds"]["route"])
    med = statistics.median(part_s)
    row = {
        "edges": edges, "num_parts": parts, "runs": runs, "seed": seed,
        "generate_seconds": gen_s, "generate_peak_rss": gen_rss.as_dict(),
        "partition_seconds_median": med, "partition_seconds_all": part_s,
        "route_seconds_median": statistics.median(route_s),
        "partition_edges_per_s": edges / med,
        "partition_edges_per_s_per_core": edges / med / os.cpu_count(),
        "end_to_end_edges_per_s": edges / (gen_s + med),
        "partition_peak_rss": {k: max(r[k] for r in rss) for k in rss[0]},
        "graph_bytes": disk_bytes(graph), "partitioned_bytes": disk_bytes(out),
        "csr_edges_incl_reverses": meta["num_edges"],
        "max_shard_imbalance": max(s["imbalance"] for s in meta["degree_stats"].values()),
    }
    if peer:
        row["read_parquet_scan_seconds"] = scan_read_parquet(graph)
        row["peer"] = run_peer(graph)
        row["ratio_time_ours_over_pyg"] = med / row["peer"]["seconds"]
        row["ratio_rss_ours_over_pyg"] = (row["partition_peak_rss"]["driver_plus_workers_gib"]
                                          / row["peer"]["peak_rss_gib"])
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(graph, ignore_errors=True)
    print(json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}, indent=1), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e6,1e7,1e8", help="comma-separated edge counts")
    ap.add_argument("--parts", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3, help="partition runs per size (median quoted)")
    ap.add_argument("--peer-size", type=float, default=1e7, help="size at which PyG is measured")
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "hetrec-bench")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import ray

    sizes = [int(float(s)) for s in args.sizes.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)
    ray.init(log_to_driver=False, include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = [bench_size(n, args.workdir, args.parts, args.runs if n < 10**9 else 1,
                       n == int(args.peer_size), seed=0) for n in sizes]
    doc = {
        "benchmark": "partition", "command": " ".join([Path(sys.executable).name] + sys.argv),
        "machine": {"cpus": os.cpu_count(), "memory_gib": psutil.virtual_memory().total / 2**30,
                    "platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version(), "ray": ray.__version__},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": rows,
    }
    out = args.out or Path(__file__).parent / "results" / f"partition-{args.sizes.replace(',', '_')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
