"""ILLE update throughput on a large synthetic graph: node updates per second, batch latency.

    python benchmarks/ille_throughput.py --edges 1e7 --actors 1,2

Builds (or reuses) a synthetic graph, partitions it and takes a 2-step HetSGFormer run
only for its identity layer; the base embeddings are random rows written in the
embeddings contract (ILLE's cost does not depend on their values, and exporting every
node of a 1e7-edge graph would dominate the run). Then streams batches of new users, each
with attributes and ``--clicks`` edges to existing items, through the update pool, and
reports the median and p99 batch latency and node updates per second for each actor
count, applying alone and with the submit (validation, log, fsync) counted too. Writes
``benchmarks/results/ille_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import ray  # noqa: E402

from graphs.shards import ShardStore  # noqa: E402
from graphs.store import write_json_atomic  # noqa: E402
from graphs.synthetic import generate_synthetic  # noqa: E402
from trainers.hetsgformer.config import HetSGFormerConfig  # noqa: E402
from trainers.hetsgformer.train import TrainConfig, train  # noqa: E402
from trainers.ille.pool import UpdatePool  # noqa: E402
from trainers.run_dir import RunDir  # noqa: E402


def base_run(work: Path, edges: int, dim: int) -> tuple[Path, dict[str, int]]:
    """A run with a checkpoint (2 training steps) and random base embeddings."""
    graph, run = work / f"graph-{edges:.0e}", work / f"run-{edges:.0e}"
    if not (graph / "schema.json").is_file():
        generate_synthetic(graph, edges, seed=0)
    if not (run / "embeddings" / "LATEST").is_file():
        shutil.rmtree(run, ignore_errors=True)
        train(graph, run, TrainConfig(workers=1, epochs=1, steps_per_epoch=2, batch_size=64, fanouts=(4,),
                                      random_negatives=8, model=HetSGFormerConfig(dim=dim)))
        counts = ShardStore(run / "parts").counts
        version = run / "embeddings" / "v0001"
        version.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for ntype, count in counts.items():
            rows = np.lib.format.open_memmap(version / f"{ntype}.npy", "w+", np.float32, (count, dim))
            for lo in range(0, count, 1 << 20):
                rows[lo:lo + (1 << 20)] = rng.normal(size=(min(count - lo, 1 << 20), dim)).astype(np.float32)
            rows.flush()
        write_json_atomic(version / "meta.json", {"version": 1, "dim": dim, "counts": counts,
                                                  "checkpoint": str(RunDir(run).latest_checkpoint()),
                                                  "note": "random rows: throughput benchmark"})
        (run / "embeddings" / "LATEST").write_text("v0001")
    return run, ShardStore(run / "parts").counts


def stream(counts: dict[str, int], batches: int, per_batch: int, clicks: int, seed: int):
    """Batches of events: ``per_batch`` new users, each with ``clicks`` item edges."""
    rng = np.random.default_rng(seed)
    user = counts["user"]
    for _ in range(batches):
        evs = []
        for u in range(user, user + per_batch):
            evs.append({"op": "node", "ntype": "user", "id": u, "attrs": {"age": int(rng.integers(8))}})
            for item in rng.integers(0, counts["item"], clicks):
                evs.append({"op": "edge", "etype": "user__clicks__item", "src": u, "dst": int(item),
                            "ts": 2_000_000_000, "weight": 1.0})
        user += per_batch
        yield evs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edges", type=float, default=1e7)
    ap.add_argument("--actors", default="1,2")
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--per-batch", type=int, default=4000, help="New users per batch.")
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--work", default="/tmp/hetrec-bench-ille")
    ap.add_argument("--out", default="benchmarks/results/ille_throughput.json")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ray.init(log_to_driver=False)
    run, counts = base_run(work, int(args.edges), args.dim)
    results = {}
    for actors in [int(a) for a in args.actors.split(",")]:
        shutil.rmtree(run / "updates", ignore_errors=True)
        t0 = time.perf_counter()
        pool = UpdatePool(run, actors=actors)                          # returns with the actors ready
        start_s = time.perf_counter() - t0
        stats, submit_s = [], []
        try:
            for evs in stream(counts, args.batches, args.per_batch, args.clicks, seed=1):
                t0 = time.perf_counter()
                ack = pool.submit(evs)                                  # validated, logged, fsynced
                submit_s.append(time.perf_counter() - t0)
                assert not ack.errors, ack.errors[:3]
                stats += pool.apply()
        finally:
            pool.close()
        lat = np.array([s.seconds for s in stats[1:]])                # the first batch warms caches
        nodes = sum(s.new_nodes + s.resolved for s in stats[1:])
        results[actors] = {"batches": len(lat), "nodes_per_batch": args.per_batch, "events_per_batch": len(evs),
                           "p50_s": float(np.median(lat)), "p99_s": float(np.quantile(lat, 0.99)),
                           "node_updates_per_s": nodes / float(lat.sum()), "pool_start_s": start_s,
                           "submit_p50_s": float(np.median(submit_s[1:])),
                           "node_updates_per_s_with_submit": nodes / float(lat.sum() + sum(submit_s[1:])),
                           "status": stats[-1].status}
        print(f"{actors} actor(s): p50 {results[actors]['p50_s']:.3f} s, p99 {results[actors]['p99_s']:.3f} s, "
              f"{results[actors]['node_updates_per_s']:,.0f} node updates/s "
              f"({results[actors]['node_updates_per_s_with_submit']:,.0f} with the submit)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join([Path(sys.executable).name, *sys.argv]),
                               "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                               "graph": {"edges": int(args.edges), "nodes": counts}, "actors": results}, indent=1))


if __name__ == "__main__":
    main()
