"""Does the popularity prior HetSGFormer ranks with also lift the tuned MF-BPR and LightGCN?

    python benchmarks/prior_baselines.py --movielens runs/ml-100k --seeds 3

HetSGFormer's sampled softmax is logQ-corrected, so its embeddings carry no item
popularity and ranking adds ``w * log(1 + n_i)`` back, ``w`` chosen on validation. BPR with
uniform negatives learns popularity into the embeddings itself. This benchmark gives the
baselines the same prior on the random split: per seed, each model is fitted once (its
tuned defaults), ``w`` is chosen on the valid part among ``WEIGHTS`` (a wide grid: their
scores are raw dot products, not cosines), and the test part is read once at that ``w``.

Writes ``benchmarks/results/prior_baselines.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.results_io import mean_std, write_result  # noqa: E402
from trainers.evaluation.baselines import BASELINES  # noqa: E402
from trainers.evaluation.metrics import evaluate_scores  # noqa: E402
from trainers.evaluation.splits import load_interactions, random_split  # noqa: E402

ETYPE = "user__rates__movie"
WEIGHTS = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def with_prior(score, prior: torch.Tensor, w: float):
    """``score: [B] -> [B, N]`` plus ``w * prior: [N]``."""
    return lambda users: score(users) + w * prior


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", default="runs/ml-100k")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--models", default="mf,lightgcn")
    ap.add_argument("--out", default="benchmarks/results/prior_baselines.json")
    args = ap.parse_args()
    inter = load_interactions(Path(args.movielens), ETYPE)
    per_seed = {m: [] for m in args.models.split(",")}
    for seed in range(args.seeds):
        split = random_split(inter, seed)
        prior = torch.from_numpy(np.log1p(np.bincount(split.train.item, minlength=inter.num_items)).astype(np.float32))
        for name in per_seed:
            t0 = time.perf_counter()
            score = BASELINES[name](split.train, seed)
            fit_s = time.perf_counter() - t0
            valid = {w: evaluate_scores(with_prior(score, prior, w), split.valid, [split.train], (10,))["ndcg@10"]
                     for w in WEIGHTS}
            best = max(valid, key=valid.get)
            test = {f"w{w:g}": evaluate_scores(with_prior(score, prior, w), split.test, [split.train, split.valid],
                                               (10, 20)) for w in sorted({0.0, best})}
            per_seed[name].append({"chosen_w": best, "valid_ndcg@10": {f"w{w:g}": v for w, v in valid.items()},
                                   "test_without": test["w0"], "test_with_chosen": test[f"w{best:g}"],
                                   "fit_s": fit_s})
            print(f"seed {seed} {name}: w {best:g} (valid {valid[0.0]:.4f} -> {valid[best]:.4f}); test ndcg@10 "
                  f"{test['w0']['ndcg@10']:.4f} -> {test[f'w{best:g}']['ndcg@10']:.4f} ({fit_s:.0f} s)", flush=True)
    write_result(args.out, {"graph": args.movielens, "seeds": args.seeds, "weights": list(WEIGHTS),
                            "per_seed": per_seed,
                            "summary": {m: mean_std([{k: r[k] for k in ("test_without", "test_with_chosen")}
                                                     for r in rows]) for m, rows in per_seed.items()},
                            "date": time.strftime("%Y-%m-%d")})


if __name__ == "__main__":
    main()
