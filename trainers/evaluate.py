"""Evaluation entry point: split, fit the baselines, score them all with one metric code.

    results = run_eval("graphs/ml-100k", models=["pop", "mf", "lightgcn"], protocol="random")
    print(format_table(results))

The parts live in :mod:`trainers.splits` (interactions, random/temporal splits),
:mod:`trainers.metrics` (full-ranking Recall/NDCG/Hit/MRR) and :mod:`trainers.baselines`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trainers.baselines import BASELINES
from trainers.metrics import ScoreFn, evaluate_scores
from trainers.splits import Interactions, Split, load_interactions, random_split, temporal_split

__all__ = ["Interactions", "Split", "ScoreFn", "evaluate_scores", "load_interactions", "random_split",
           "temporal_split", "run_eval", "format_table", "PROTOCOLS"]

PROTOCOLS = ("random", "temporal")


def make_split(inter: Interactions, protocol: str, seed: int) -> Split:
    if protocol == "random":
        return random_split(inter, seed)
    if protocol == "temporal":
        return temporal_split(inter, seed=seed)
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def score_split(score_fn: ScoreFn, split: Split, ks: Sequence[int]) -> dict[str, float]:
    """Test metrics (train and valid masked); for a temporal split also ``cold_*`` metrics
    on the cold users' test set, with their ``cold_events`` masked."""
    metrics = evaluate_scores(score_fn, split.test, [split.train, split.valid], ks)
    if split.cold_test is not None and len(split.cold_test):
        cold = evaluate_scores(score_fn, split.cold_test, [split.train, split.cold_events], ks)
        metrics.update({f"cold_{name}": value for name, value in cold.items()})
    return metrics


def run_eval(graph_dir: str | Path, models: Sequence[str] = ("pop", "mf", "lightgcn"), protocol: str = "random",
             seeds: Sequence[int] = (0,), ks: Sequence[int] = (10, 20),
             etype: str = "user__rates__movie") -> dict[str, dict[str, dict[str, float]]]:
    """Fit and score each model on each seed's split.

    Returns ``{model: {metric: {"mean": m, "std": s}}}`` over ``seeds`` (population std).
    """
    unknown = [m for m in models if m not in BASELINES]
    if unknown:
        raise ValueError(f"unknown models {unknown}; known: {sorted(BASELINES)}")
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    inter = load_interactions(graph_dir, etype)
    per_seed: dict[str, list[dict[str, float]]] = {m: [] for m in models}
    for seed in seeds:
        split = make_split(inter, protocol, seed)
        for name in models:
            per_seed[name].append(score_split(BASELINES[name](split.train, seed), split, ks))
    return {name: {metric: {"mean": float(np.mean([r[metric] for r in runs])),
                            "std": float(np.std([r[metric] for r in runs]))}
                   for metric in runs[0]}
            for name, runs in per_seed.items()}


def format_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """A plain-text table: one row per model, one column per metric, ``mean±std``."""
    if not results:
        return ""
    metrics = list(next(iter(results.values())))
    width = max(12, *(len(m) + 1 for m in metrics))
    head = f"{'model':<10}" + "".join(f"{m:>{width}}" for m in metrics)
    rows = []
    for name, r in results.items():
        cells = (f"{r[m]['mean']:.4f}±{r[m]['std']:.4f}" for m in metrics)
        rows.append(f"{name:<10}" + "".join(f"{c:>{width}}" for c in cells))
    return "\n".join([head, "-" * len(head), *rows])
