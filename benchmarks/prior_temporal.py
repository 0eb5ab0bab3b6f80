"""The per-user popularity prior for the baselines too, on the temporal protocol.

    python benchmarks/prior_temporal.py --movielens runs/ml-100k --seeds 3

HetSGFormer ranks with ``cos(u, i) + w_u * log(1 + n_i)``, ``w_u = w + (cold - w) / m_u``
for a user with ``m_u`` training interactions, ``(w, cold)`` chosen on the temporal
protocol's validation window (``make_split(..., "temporal-valid")``). This gives MF-BPR and
LightGCN the same rule on the same footing: per seed, each is fitted on the window's fit
part, ``(w, cold)`` is chosen there among ``GRID`` (their scores are raw dot products, so
the grid is wide) by the mean of the three segments' NDCG@10, then the model is fitted on
the test split's fit part and scored once at that choice (and at no prior).

Writes ``benchmarks/results/prior_temporal.json``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.results_io import mean_std, write_result  # noqa: E402
from trainers.evaluation.baselines import BASELINES  # noqa: E402
from trainers.evaluation.evaluate import fit_part, make_split, score_split  # noqa: E402
from trainers.evaluation.splits import load_interactions  # noqa: E402
from trainers.hetsgformer.validation import user_prior_weights  # noqa: E402

ETYPE = "user__rates__movie"
WEIGHTS = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0)
GRID = [(0.0, 0.0)] + [(w, c) for w, c in itertools.product(WEIGHTS, WEIGHTS) if c >= w and c > 0]


def fitted(name: str, split, seed: int):
    """The model fitted on the split's fit part, its user activity ``[U]`` and item prior ``[N]``."""
    part = fit_part(split)
    prior = torch.from_numpy(np.log1p(np.bincount(part.item, minlength=part.num_items)).astype(np.float32))
    return BASELINES[name](part, seed), np.bincount(part.user, minlength=part.num_users), prior


def with_prior(score, activity: np.ndarray, prior: torch.Tensor, w: float, cold: float):
    scale = user_prior_weights(w, activity, cold)
    return lambda users: score(users) + scale[users][:, None] * prior


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", default="runs/ml-100k")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--models", default="mf,lightgcn")
    ap.add_argument("--out", default="benchmarks/results/prior_temporal.json")
    args = ap.parse_args()
    inter = load_interactions(Path(args.movielens), ETYPE)
    per_seed = {m: [] for m in args.models.split(",")}
    for seed, name in itertools.product(range(args.seeds), per_seed):
        t0 = time.perf_counter()
        window = make_split(inter, "temporal-valid", seed)
        score, activity, prior = fitted(name, window, seed)
        valid = {g: score_split(with_prior(score, activity, prior, *g), window, (10,)) for g in GRID}
        mean = {g: float(np.mean([v for k, v in m.items() if k.endswith("ndcg@10")])) for g, m in valid.items()}
        best = max(mean, key=mean.get)
        split = make_split(inter, "temporal", seed)
        score, activity, prior = fitted(name, split, seed)
        test = {g: score_split(with_prior(score, activity, prior, *g), split, (10, 20)) for g in {(0.0, 0.0), best}}
        per_seed[name].append({"chosen": list(best), "valid_mean_ndcg@10": mean[best],
                               "valid_without": valid[(0.0, 0.0)], "valid_chosen": valid[best],
                               "test_without": test[(0.0, 0.0)], "test_with_chosen": test[best]})
        print(f"seed {seed} {name}: (w, cold) {best} valid mean {mean[(0.0, 0.0)]:.4f} -> {mean[best]:.4f}; test "
              + ", ".join(f"{k} {test[(0.0, 0.0)][k]:.4f} -> {test[best][k]:.4f}" for k in test[best]
                          if k.endswith("ndcg@10"))
              + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    write_result(args.out, {"graph": args.movielens, "seeds": args.seeds, "grid": [list(g) for g in GRID],
                            "per_seed": per_seed,
                            "summary": {m: mean_std([{k: r[k] for k in ("test_without", "test_with_chosen")}
                                                     for r in rows]) for m, rows in per_seed.items()},
                            "date": time.strftime("%Y-%m-%d")})


if __name__ == "__main__":
    main()
