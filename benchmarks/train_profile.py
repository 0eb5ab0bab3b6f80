"""Benchmark: where one HetSGFormer training step spends its time, in one process.

    python benchmarks/train_profile.py --label before
    python benchmarks/train_profile.py --label node20 --fanout-per node --fanouts 20

MovieLens-100K random split (seed 0, train interactions only, as ``benchmarks/train.py``),
one thread (what a Ray Train worker with one CPU gets), no DDP. After ``--warmup`` steps,
``--steps`` steps are timed phase by phase: ``sample`` (negatives, fan-out neighbourhood,
attributes: :func:`sample_batch`), ``forward`` (model and loss), ``backward``, ``optimizer``;
medians per step. Then ``torch.profiler`` records ``--profile-steps`` steps and keeps the
operators with the most self CPU time and the operator calls per step. The batch's size
(nodes, edges, edge types) and the process's peak RSS are reported too.

Merges ``{label: figures}`` into ``benchmarks/results/train_profile.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from graphs.partition import PartitionConfig, partition_graph  # noqa: E402
from graphs.samplers import iter_seed_edges  # noqa: E402
from graphs.shards import ShardStore  # noqa: E402
from graphs.store import GraphDir  # noqa: E402
from trainers.evaluation.evaluate import make_split  # noqa: E402
from trainers.evaluation.split_graph import write_split_graph  # noqa: E402
from trainers.evaluation.splits import load_interactions  # noqa: E402
from trainers.features import FeatureStore  # noqa: E402
from trainers.hetsgformer.batch_loss import batch_loss, sample_batch  # noqa: E402
from trainers.hetsgformer.config import HetSGFormerConfig  # noqa: E402
from trainers.hetsgformer.model import HetSGFormer  # noqa: E402
from trainers.hetsgformer.train import Optimizers, TrainConfig  # noqa: E402


def parts_of(movielens: str, work: Path) -> Path:
    """The partitioned train split, built once per work folder."""
    parts = work / "ml-train-parts"
    if not (parts / "meta.json").is_file():
        split = make_split(load_interactions(movielens), "random", 0)
        graph = write_split_graph(movielens, work / "ml-train", split.train, "user__rates__movie", overwrite=True)
        ray.init(log_to_driver=False)
        partition_graph(graph, parts, PartitionConfig(num_parts=4))
        ray.shutdown()
    return parts


def run(parts: Path, cfg: TrainConfig, steps: int, warmup: int, profile_steps: int) -> dict:
    store = ShardStore(parts)
    features = FeatureStore(GraphDir(store.graph, validate="none"))
    target = store.edge_types[store.schema.interaction_type(None)]
    torch.manual_seed(0)
    model = HetSGFormer(store.schema, cfg.model)
    opt = Optimizers(model, cfg.lr)
    rng = np.random.default_rng(0)
    def cycle():
        while True:
            yield from iter_seed_edges(store, target.key, list(range(store.num_parts)), cfg.batch_size, rng)

    batches = cycle()
    phases = {k: [] for k in ("sample", "forward", "backward", "optimizer")}
    sizes = []

    def step(record: bool) -> None:
        t0 = time.perf_counter()
        sampled = sample_batch(store, features, target, next(batches), cfg, rng)
        t1 = time.perf_counter()
        loss, _ = batch_loss(model, sampled, target, cfg, rng, "cpu")
        t2 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if record:
            for k, a, b in (("sample", t0, t1), ("forward", t1, t2), ("backward", t2, t3), ("optimizer", t3, t4)):
                phases[k].append(b - a)
            sizes.append((sum(len(v) for v in sampled.sub.nodes.values()),
                          sum(e.shape[1] for e in sampled.sub.edges.values()), len(sampled.sub.edges)))

    for i in range(warmup + steps):
        step(i >= warmup)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(profile_steps):
            step(False)
    events = prof.key_averages()
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    med = {k: statistics.median(v) for k, v in phases.items()}
    total = sum(med.values())
    return {
        "step_s": total, "edges_per_s": cfg.batch_size / total,
        "phases_s": med, "phases_share": {k: v / total for k, v in med.items()},
        "batch": {"nodes": statistics.median(s[0] for s in sizes), "edges": statistics.median(s[1] for s in sizes),
                  "edge_types": statistics.median(s[2] for s in sizes)},
        "op_calls_per_step": sum(e.count for e in events) / profile_steps,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "top_ops": [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / profile_steps,
                     "calls_per_step": e.count / profile_steps} for e in top],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", default="runs/demo/ml-100k", help="MovieLens graph directory (make demo builds it)")
    ap.add_argument("--label", required=True, help="name of this configuration in the JSON")
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--fanouts", default=",".join(map(str, TrainConfig.fanouts)))
    ap.add_argument("--fanout-per", default=TrainConfig.fanout_per)
    ap.add_argument("--model", default="{}", help="HetSGFormerConfig fields as JSON, e.g. '{\"eal\": false}'")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/hetrec-bench-profile")
    ap.add_argument("--out", default="benchmarks/results/train_profile.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = replace(TrainConfig(), batch_size=args.batch_size, fanouts=tuple(int(f) for f in args.fanouts.split(",")),
                  fanout_per=args.fanout_per, model=HetSGFormerConfig(**json.loads(args.model)))
    found = run(parts_of(args.movielens, work), cfg, args.steps, args.warmup, args.profile_steps)
    found.update(command=" ".join([Path(sys.executable).name, *sys.argv]),
                 machine={"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
                 config={"batch_size": cfg.batch_size, "fanouts": list(cfg.fanouts), "fanout_per": cfg.fanout_per,
                         "model": json.loads(args.model), "threads": args.threads})
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.is_file() else {}
    doc[args.label] = found
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print(json.dumps({k: found[k] for k in ("step_s", "edges_per_s", "phases_share", "batch", "op_calls_per_step")},
                     indent=1))
    print(f"wrote {out} [{args.label}]")


if __name__ == "__main__":
    main()
