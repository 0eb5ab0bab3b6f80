"""MF-BPR and LightGCN hyper-parameters chosen on validation, the way HetSGFormer's are.

    python benchmarks/baseline_grid.py --movielens runs/ml-100k --seeds 0,1,2
    python benchmarks/baseline_grid.py --movielens runs/ml-100k --seeds 0,1,2 --models mf_wide,lightgcn_long

Random 8:1:1 split of MovieLens-100K (the seeds of ``hetrec eval``). Each model trains once
per (learning rate, L2 weight, seed) for the largest epoch count; validation NDCG@10 (train
masked) is read after every ``--every`` epochs, so a run also scores the shorter schedules.
The point with the best mean validation NDCG@10 over the seeds is chosen, retrained on each
seed, and scored on test once (train and validation masked), as ``hetrec eval`` scores it.
Dimension 64 and batch 2,048 stay fixed (HetSGFormer's width and RecBole's batch).

Writes ``benchmarks/results/baseline_grid.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.results_io import mean_std, write_result  # noqa: E402
from trainers.evaluation.baselines import BPRConfig, fit_lightgcn, fit_mf_bpr  # noqa: E402
from trainers.evaluation.evaluate import make_split, score_split  # noqa: E402
from trainers.evaluation.metrics import evaluate_scores  # noqa: E402
from trainers.evaluation.splits import load_interactions  # noqa: E402

GRIDS = {
    "mf": {"fit": fit_mf_bpr, "lr": (1e-3, 2e-3, 5e-3, 1e-2), "weight_decay": (0.0, 1e-4, 1e-3), "epochs": 80},
    "lightgcn": {"fit": fit_lightgcn, "lr": (5e-3, 1e-2, 2e-2), "weight_decay": (1e-5, 1e-4, 1e-3), "epochs": 40},
    # the first MF grid chose its corner (lowest lr, highest L2, most epochs): widened there
    "mf_wide": {"fit": fit_mf_bpr, "lr": (5e-4, 1e-3), "weight_decay": (1e-3, 3e-3, 1e-2), "epochs": 160,
                "every": 20},
    # LightGCN's best point was still rising at its last epoch: the same point, longer
    "lightgcn_long": {"fit": fit_lightgcn, "lr": (1e-2,), "weight_decay": (1e-4,), "epochs": 80},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", default="runs/demo/ml-100k")
    ap.add_argument("--models", default="mf,lightgcn")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--every", type=int, default=10, help="validate every this many epochs")
    ap.add_argument("--out", default="benchmarks/results/baseline_grid.json")
    args = ap.parse_args()
    inter = load_interactions(args.movielens)
    seeds = [int(s) for s in args.seeds.split(",")]
    splits = {seed: make_split(inter, "random", seed) for seed in seeds}
    out = Path(args.out)
    doc: dict = {"seeds": seeds, "protocol": "random", "models": {}}
    if out.is_file():                   # keep the other models' grids
        doc["models"] = json.loads(out.read_text()).get("models", {})
    for name in args.models.split(","):
        spec = GRIDS[name]
        grid: dict[tuple[float, float, int], list[float]] = {}
        t0 = time.perf_counter()
        for lr, wd in itertools.product(spec["lr"], spec["weight_decay"]):
            for seed, split in splits.items():
                def on_epoch(epoch: int, score, lr=lr, wd=wd, split=split) -> None:
                    if (epoch + 1) % spec.get("every", args.every) == 0:
                        valid = evaluate_scores(score, split.valid, [split.train], ks=(10,))["ndcg@10"]
                        grid.setdefault((lr, wd, epoch + 1), []).append(valid)

                spec["fit"](split.train, seed, config=BPRConfig(epochs=spec["epochs"], lr=lr, weight_decay=wd),
                            on_epoch=on_epoch)
            best = max((k for k in grid if k[:2] == (lr, wd)), key=lambda k: np.mean(grid[k]))
            print(f"{name} lr {lr:g} wd {wd:g}: best valid ndcg@10 {np.mean(grid[best]):.4f} at {best[2]} epochs "
                  f"({time.perf_counter() - t0:.0f} s so far)", flush=True)
        lr, wd, epochs = max(grid, key=lambda k: np.mean(grid[k]))
        chosen = BPRConfig(epochs=epochs, lr=lr, weight_decay=wd)
        tests = [score_split(spec["fit"](split.train, seed, config=chosen), split, (10, 20))
                 for seed, split in splits.items()]
        doc["models"][name] = {
            "grid": [{"lr": k[0], "weight_decay": k[1], "epochs": k[2], "valid_ndcg@10_mean": float(np.mean(v)),
                      "valid_ndcg@10_std": float(np.std(v))} for k, v in sorted(grid.items())],
            "chosen": {"lr": lr, "weight_decay": wd, "epochs": epochs, "valid_ndcg@10": float(np.mean(grid[lr, wd, epochs]))},
            "test": mean_std(tests),
            "seconds": time.perf_counter() - t0,
        }
        test = doc["models"][name]["test"]["ndcg@10"]
        print(f"{name}: chose lr {lr:g}, wd {wd:g}, {epochs} epochs on validation; test ndcg@10 "
              f"{test['mean']:.4f}±{test['std']:.4f}", flush=True)
        write_result(args.out, doc)


if __name__ == "__main__":
    main()
