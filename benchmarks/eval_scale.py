"""Benchmark: wall-clock of ``hetrec eval`` per model on a data set of about a million interactions.

    python benchmarks/eval_scale.py                         # 1.43e6 synthetic edges, 1e6 clicks
    python benchmarks/eval_scale.py --edges 2e5 --models pop,mf

A synthetic graph (``hetrec data synthetic``; 70% of its edges are user-item clicks, the
rest the item, entity and user relations HetSGFormer and the heterogeneous peers use) is
evaluated with the random protocol, one seed, each model on its own with its default
settings, as ``hetrec eval`` runs it. Reports the seconds and NDCG@10 of every model.
Merges into ``benchmarks/results/eval_scale.json`` after each model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402

from benchmarks.results_io import write_result  # noqa: E402
from graphs.synthetic import generate_synthetic  # noqa: E402
from trainers.evaluation.evaluate import MODELS, run_eval  # noqa: E402
from trainers.evaluation.splits import load_interactions  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edges", default="1.43e6", help="synthetic graph size in edges (70%% are interactions)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/hetrec-bench-eval-scale")
    ap.add_argument("--out", default="benchmarks/results/eval_scale.json")
    args = ap.parse_args()
    work, size = Path(args.work), int(float(args.edges))
    graph = work / f"syn-{size}"
    if not (graph / "schema.json").is_file():
        generate_synthetic(graph, size, seed=0, overwrite=True)
    inter = load_interactions(graph)
    ray.init(log_to_driver=False)
    doc = {"edges": size, "interactions": len(inter), "users": inter.num_users, "items": inter.num_items,
           "protocol": "random", "seed": args.seed, "models": {}}
    for name in args.models.split(","):
        t0 = time.perf_counter()
        result = run_eval(graph, [name], "random", [args.seed], work_dir=work / "runs",
                          log=lambda line: print(line, flush=True))[name]
        doc["models"][name] = {"seconds": time.perf_counter() - t0, "ndcg@10": result["ndcg@10"]["mean"],
                               "recall@20": result["recall@20"]["mean"]}
        print(f"{name}: {doc['models'][name]['seconds']:.0f} s, ndcg@10 {result['ndcg@10']['mean']:.4f}", flush=True)
        doc["total_s"] = sum(m["seconds"] for m in doc["models"].values())
        write_result(args.out, doc)


if __name__ == "__main__":
    main()
