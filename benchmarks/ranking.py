"""DSGL ranking on MovieLens-100K against DIN and an MLP over HetSGFormer embeddings, with ablations.

    python benchmarks/ranking.py --movielens runs/ml-100k --variants dsgl,din,mlp --epochs 2 --seeds 0,1,2

Temporal protocol (:mod:`trainers.ranking.train`): every model trains on the same samples
(the train part before the last 10% of its time span, one sampled negative per positive)
and is scored on the same test samples (warm users after the cut, one negative each) and
cold samples (users without history before the cut, after their first event). AUC, GAUC
(per-user AUC) and log loss, next to two popularity baselines scored on the same samples
(the item's interactions before t, and in the 30 days before t), on two test sets:
negatives drawn uniformly, and negatives drawn by popularity (``popneg``), where
popularity alone cannot separate positives from negatives. Negatives never include an
item the user had met by t.

The MLP baseline reads HetSGFormer embeddings pretrained here on the temporal train part
only (no test interaction reaches it). Variants: ``dsgl`` (all parts), ``no_second_order``
(query from the central node only), ``no_time`` (no time-gap embeddings),
``no_layer_combination`` (last layer only), ``dsgl_pretrained`` (DSGL whose id tables start
from those HetSGFormer embeddings), ``din``, ``mlp``.

Writes ``benchmarks/results/ranking.json``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402

from benchmarks.results_io import mean_std, write_result  # noqa: E402
from trainers.evaluation.split_graph import write_split_graph  # noqa: E402
from trainers.hetsgformer.export import export_embeddings  # noqa: E402
from trainers.hetsgformer.train import TrainConfig, train  # noqa: E402
from trainers.ranking.dsgl import DSGLConfig  # noqa: E402
from trainers.ranking.train import RankerConfig, RankerData, train_ranker  # noqa: E402

VARIANTS = {
    "dsgl": {},
    "no_second_order": {"second_order": False},
    "no_time": {"time": False},
    "no_layer_combination": {"layer_combination": False},
    "dsgl_pretrained": "dsgl",
    "din": "din",
    "mlp": "mlp",
}
NEEDS_EMBEDDINGS = ("dsgl_pretrained", "mlp")


def pretrain(graph: Path, work: Path, cfg: RankerConfig, epochs: int) -> Path:
    """HetSGFormer on the ranker's training interactions only; returns the run directory."""
    data = RankerData(graph, cfg)
    part = data.parts["train"]
    split_graph = write_split_graph(graph, work / "graph", part, cfg.etype)
    train(split_graph, work / "run", TrainConfig(workers=2, epochs=epochs, seed=cfg.seed, target=cfg.etype))
    export_embeddings(work / "run")
    return work / "run"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", default="runs/demo/ml-100k")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--pretrain-epochs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", default="0", help="comma-separated; mean and std over them in summary")
    ap.add_argument("--work", default="/tmp/hetrec-bench-ranking")
    ap.add_argument("--out", default="benchmarks/results/ranking.json")
    args = ap.parse_args()
    ray.init(log_to_driver=False)
    per_seed: dict[int, dict] = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        per_seed[seed] = run_seed(args, seed)
        write_result(args.out, {"summary": mean_std(list(per_seed.values())), "seeds": per_seed, "epochs": args.epochs,
                                "workers": args.workers})


def run_seed(args, seed: int) -> dict:
    """Every variant on one seed's samples -> ``{variant: final metrics}``."""
    work, graph = Path(args.work) / f"seed{seed}", Path(args.movielens).resolve()
    shutil.rmtree(work, ignore_errors=True)
    base = RankerConfig(epochs=args.epochs, workers=args.workers, seed=seed)
    results = {}
    names = args.variants.split(",")
    embeddings = None
    if set(names) & set(NEEDS_EMBEDDINGS):
        t0 = time.perf_counter()
        embeddings = pretrain(graph, work / "pretrain", base, args.pretrain_epochs)
        print(f"seed {seed}: pretrained HetSGFormer on the train part in {time.perf_counter() - t0:.0f} s", flush=True)
    for name in names:
        spec = VARIANTS[name]
        if isinstance(spec, str):
            cfg = replace(base, model=spec, embeddings=str(embeddings) if name in NEEDS_EMBEDDINGS else None)
        else:
            cfg = replace(base, dsgl=DSGLConfig(**spec))
        t0 = time.perf_counter()
        meta = train_ranker(graph, work / name, cfg)
        results[name] = {**meta["final"], "valid_auc": meta["epochs"][-1]["valid_auc"],
                         "train_s": time.perf_counter() - t0,
                         "samples_per_s": meta["epochs"][-1]["samples_per_s"]}
        r = results[name]
        print(f"seed {seed} {name:22s} test AUC {r['test_auc']:.4f} GAUC {r['test_gauc']:.4f} "
              f"(pop {r['test_pop_auc']:.4f} / {r['test_pop_gauc']:.4f}) | popneg AUC {r['test_popneg_auc']:.4f} "
              f"(pop {r['test_popneg_pop_auc']:.4f}) | cold AUC {r['cold_auc']:.4f} (pop {r['cold_pop_auc']:.4f}) "
              f"| valid AUC {r['valid_auc']:.4f} | {r['train_s']:.0f} s", flush=True)
    return results


if __name__ == "__main__":
    main()
