"""Ablations of HetSGFormer on MovieLens-100K (random split): which part earns its keep.

    python benchmarks/ablation.py --epochs 6
    python benchmarks/ablation.py --variants default,gal_sgformer --epochs 10

Each variant is trained by the evaluation harness's own path (split graph, Ray Train,
export) from the same seed; the table reports the last epoch's validation NDCG@10 and
the test NDCG@10 / Recall@20. Writes ``benchmarks/results/ablation.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402

from trainers.evaluation.evaluate import fit_hetsgformer, make_split, score_split  # noqa: E402
from trainers.evaluation.splits import load_interactions  # noqa: E402
from trainers.hetsgformer.config import HetSGFormerConfig  # noqa: E402
from trainers.hetsgformer.train import TrainConfig  # noqa: E402

MODEL = HetSGFormerConfig()
VARIANTS = {
    "default": {},
    "gal_sgformer": {"model": replace(MODEL, gal_kind="sgformer")},  # SGFormer's own normalisation
    "gal_none": {"model": replace(MODEL, gal_kind="none")},
    "no_eal": {"model": replace(MODEL, eal=False)},
    "no_gcn": {"model": replace(MODEL, gcn_weight=0.0)},
    "gcn_only": {"model": replace(MODEL, gcn_weight=1.0)},
    "no_attributes": {"model": replace(MODEL, attributes=False)},
    "no_aux": {"aux_weight": 0.0},
    "hard_negatives": {"hard_negatives": 2},
    "no_random_negatives": {"random_negatives": 1},
    "exclude_target_edges": {"exclude_targets": True},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", default="runs/demo/ml-100k")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--work", default="/tmp/hetrec-bench-ablation")
    ap.add_argument("--out", default="benchmarks/results/ablation.json")
    args = ap.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    ray.init(log_to_driver=False)
    inter = load_interactions(args.movielens)
    split = make_split(inter, "random", 0)
    out = Path(args.out)
    done = json.loads(out.read_text())["variants"] if out.is_file() else {}
    for name in names:
        cfg = TrainConfig(workers=2, epochs=args.epochs, **VARIANTS[name])
        t0 = time.perf_counter()
        work = Path(args.work) / name
        score = fit_hetsgformer(Path(args.movielens), split, 0, "user__rates__movie", work, cfg)
        history = json.loads((work / "run" / "metrics.json").read_text())["epochs"]
        test = score_split(score, split, [10, 20])
        done[name] = {"epochs": args.epochs, "valid_ndcg@10": history[-1]["valid_ndcg@10"],
                      "test_ndcg@10": test["ndcg@10"], "test_recall@20": test["recall@20"],
                      "seconds": time.perf_counter() - t0}
        print(f"{name:<22} valid {done[name]['valid_ndcg@10']:.4f}  test ndcg@10 {test['ndcg@10']:.4f}  "
              f"recall@20 {test['recall@20']:.4f}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"command": " ".join([Path(sys.executable).name, *sys.argv]),
                                   "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                                   "variants": done}, indent=1))


if __name__ == "__main__":
    main()
