"""HetSGFormer's popularity-prior weights, screened on exported evaluation runs (no retraining).

    hetrec eval GRAPH --models pop,hetsgformer --protocol temporal-valid --seeds 3 --work-dir RUNS
    python benchmarks/prior_window_screen.py --runs RUNS --graph GRAPH --protocol temporal-valid \\
        --pairs 0:0,0.1:0.1,0.3:0.3,0.5:0.5,1:1,0.1:1,0.3:1,0.5:1

Each ``w:cold`` pair scores every seed's exported embeddings with ``cos(u, i) + w_u *
prior[i]``, ``w_u = w + (cold - w) / m_u`` (``w == cold``: one weight for every user), on
that seed's split of ``--protocol``, and prints the mean NDCG@10 of each segment over the
seeds and the mean of the segments. Writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.results_io import write_result  # noqa: E402
from trainers.evaluation.evaluate import fit_part, make_split, score_split  # noqa: E402
from trainers.evaluation.splits import load_interactions  # noqa: E402
from trainers.hetsgformer.validation import cosine_scores, user_prior_weights  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", required=True, help="hetrec eval's --work-dir")
    ap.add_argument("--graph", required=True)
    ap.add_argument("--protocol", default="temporal-valid")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--etype", default="user__rates__movie")
    ap.add_argument("--pairs", default="0:0,0.1:0.1,0.3:0.3,0.5:0.5,1:1,0.1:1,0.3:1,0.5:1")
    ap.add_argument("--out", default="benchmarks/results/prior_window_screen.json")
    args = ap.parse_args()
    inter = load_interactions(args.graph, args.etype)
    src, _, dst = args.etype.split("__")
    runs = []
    for seed in range(args.seeds):
        split = make_split(inter, args.protocol, seed)
        version = Path(args.runs) / f"hetsgformer-{args.protocol}-{seed}" / "run" / "embeddings" / "v0001"
        users, items = (torch.from_numpy(np.load(version / f"{t}.npy")) for t in (src, dst))
        part = fit_part(split)
        runs.append((split, users, items, torch.from_numpy(np.load(version / "prior.npy")),
                     np.bincount(part.user, minlength=part.num_users)))
    results = {}
    for pair in args.pairs.split(","):
        w, cold = (float(x) for x in pair.split(":"))
        per_seed = [score_split(cosine_scores(u, v, prior, user_prior_weights(w, activity, cold)), split, (10,))
                    for split, u, v, prior, activity in runs]
        mean = {k: float(np.mean([r[k] for r in per_seed])) for k in per_seed[0] if k.endswith("ndcg@10")}
        results[pair] = {"per_seed": per_seed, "mean": mean, "segments_mean": float(np.mean(list(mean.values())))}
        print(pair, {k: round(x, 4) for k, x in mean.items()}, f"mean of segments {results[pair]['segments_mean']:.4f}",
              flush=True)
    write_result(args.out, {"runs": args.runs, "graph": args.graph, "protocol": args.protocol, "seeds": args.seeds,
                            "results": results, "date": time.strftime("%Y-%m-%d")})


if __name__ == "__main__":
    main()
