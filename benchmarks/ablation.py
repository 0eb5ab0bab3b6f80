"""Ablations of HetSGFormer on MovieLens-100K (random split): which part earns its keep.

    python benchmarks/ablation.py --epochs 12 --variants default,no_mask_history,gal_none
    python benchmarks/ablation.py --variants default,gal_sgformer --epochs 10 --seeds 3

Each variant is trained by the evaluation harness's own path (split graph, Ray Train,
export) on each of ``--seeds`` seeds; a variant is judged on its last epoch's validation
NDCG@10 (mean and std over the seeds) only. The test split is read once, for the variant
that is best on validation. Writes ``benchmarks/results/ablation.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import ray  # noqa: E402

from benchmarks.results_io import write_result  # noqa: E402
from trainers.evaluation.evaluate import fit_hetsgformer, make_split, score_split  # noqa: E402
from trainers.evaluation.splits import load_interactions  # noqa: E402
from trainers.hetsgformer.config import HetSGFormerConfig  # noqa: E402
from trainers.hetsgformer.train import TrainConfig  # noqa: E402

MODEL = HetSGFormerConfig()
VARIANTS = {
    "default": {},
    # the quality fixes, one at a time back to what they replaced
    "no_mask_history": {"mask_history": False},          # known items stay negatives (accidental hits)
    "no_out_proj": {"model": replace(MODEL, out_proj=False)},
    "cosine_lr": {"lr_decay": 0.1},
    "exclude_target_edges": {"exclude_targets": True},
    "temperature_0.1": {"temperature": 0.1},
    "lr_3e-2": {"lr": 3e-2},
    # fan-out and batch
    "fanout_relation": {"fanout_per": "relation"},
    "fanout_edge": {"fanout_per": "edge"},
    "batch_256": {"batch_size": 256},
    # the model's parts (the default is the light GCN branch alone)
    "light_gal_eal": {"model": replace(MODEL, gcn_weight=0.5, gal_kind="kernel", eal=True)},
    "sgformer_gal_eal": {"model": replace(MODEL, gcn_weight=0.5, gal_kind="kernel", eal=True, gcn_kind="sgformer")},
    "gal_sgformer": {"model": replace(MODEL, gcn_weight=0.5, gal_kind="sgformer", eal=True, gcn_kind="sgformer")},
    "sgformer_gcn_only": {"model": replace(MODEL, gcn_kind="sgformer")},
    "no_gcn": {"model": replace(MODEL, gcn_weight=0.0)},               # IEL (and the output layer) alone
    "no_attributes": {"model": replace(MODEL, attributes=False)},
    "no_aux": {"aux_weight": 0.0},
    "hard_negatives": {"hard_negatives": 2},
    # the defaults before the quality issue: fan-out per relation, batch 256, 3 epochs' schedule
    "old_default": {"fanout_per": "relation", "batch_size": 256, "mask_history": False,
                    "model": replace(MODEL, out_proj=False, gcn_weight=0.5, gal_kind="kernel", eal=True,
                                     gcn_kind="sgformer")},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", default="runs/demo/ml-100k")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--work", default="/tmp/hetrec-bench-ablation")
    ap.add_argument("--out", default="benchmarks/results/ablation.json")
    args = ap.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    ray.init(log_to_driver=False)
    inter = load_interactions(args.movielens)
    splits = [make_split(inter, "random", seed) for seed in range(args.seeds)]
    done, scores = {}, {}
    for name in names:
        cfg = TrainConfig(workers=2, epochs=args.epochs, **VARIANTS[name])
        t0, curves, epoch_s = time.perf_counter(), [], []
        for seed, split in enumerate(splits):
            work = Path(args.work) / f"{name}-{seed}"
            scores[name, seed] = fit_hetsgformer(Path(args.movielens), split, seed, "user__rates__movie", work, cfg)
            epochs = json.loads((work / "run" / "metrics.json").read_text())["epochs"]
            curves.append([e["valid_ndcg@10"] for e in epochs])
            epoch_s += [e["epoch_s"] for e in epochs]
        valid = [c[-1] for c in curves]
        done[name] = {"epochs": args.epochs, "valid_ndcg@10": float(np.mean(valid)),
                      "valid_ndcg@10_std": float(np.std(valid)), "valid_curve": np.mean(curves, 0).round(4).tolist(),
                      "median_epoch_s": float(np.median(epoch_s)), "seconds": time.perf_counter() - t0}
        print(f"{name:<22} valid ndcg@10 {np.mean(valid):.4f} ± {np.std(valid):.4f}", flush=True)
        write_result(args.out, {"seeds": args.seeds, "epochs": args.epochs, "variants": done, "chosen": None})
    best = max(done, key=lambda n: done[n]["valid_ndcg@10"])
    test = [score_split(scores[best, seed], split, [10, 20]) for seed, split in enumerate(splits)]
    chosen = {"variant": best, **{f"test_{m}": float(np.mean([t[m] for t in test])) for m in ("ndcg@10", "recall@20")}}
    print(f"chosen on validation: {best}; test ndcg@10 {chosen['test_ndcg@10']:.4f}", flush=True)
    write_result(args.out, {"seeds": args.seeds, "epochs": args.epochs, "variants": done, "chosen": chosen})


if __name__ == "__main__":
    main()
