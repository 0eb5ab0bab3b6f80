"""Evaluation entry point: split, fit every model, score them all with one metric code.

    results = run_eval("graphs/ml-100k", models=["hetsgformer", "lightgcn", "pop"], protocol="random")
    print(format_table(results))

Every model sees the same training interactions: the split's train part, plus for the
temporal protocol the cold users' first events (they arrived before scoring time).
HetSGFormer is trained on Ray Train over a copy of the graph whose user-item edges are
exactly that part (:func:`trainers.evaluation.split_graph.write_split_graph`), validated every epoch
on the split's valid part, exported, and scored from the exported embeddings.

The parts live in :mod:`trainers.evaluation.splits` (interactions, random/temporal splits),
:mod:`trainers.evaluation.metrics` (full-ranking Recall/NDCG/Hit/MRR), :mod:`trainers.evaluation.baselines`
and :mod:`trainers.evaluation.hetero_peer` (HGT / R-GCN on the same heterogeneous graph) and
:mod:`trainers.evaluation.content` (the text-profile baseline, on ``hetrec data text``'s features).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from graphs.exceptions import ConfigError
from graphs.store import GraphDir
from trainers.evaluation.baselines import BASELINES
from trainers.evaluation.content import fit_text_profile
from trainers.evaluation.hetero_peer import HETERO_PEERS
from trainers.evaluation.metrics import ScoreFn, evaluate_scores
from trainers.evaluation.splits import (Interactions, Split, concat, load_interactions, random_split, temporal_cut,
                                       temporal_split)
from trainers.gfm.foundation import fit_gfm_foundation
from trainers.hetsgformer.train import TrainConfig

__all__ = ["Interactions", "Split", "ScoreFn", "evaluate_scores", "load_interactions", "random_split",
           "temporal_split", "run_eval", "format_table", "PROTOCOLS"]

PROTOCOLS = ("random", "temporal", "temporal-valid")
# fitted on the split's interactions and the graph
GRAPH_MODELS = {**HETERO_PEERS, "text": fit_text_profile, "gfm-foundation": fit_gfm_foundation}
MODELS = ("hetsgformer", "gfm", "gfm-no-text", *BASELINES, *GRAPH_MODELS, "lerg")  # and lerg-int4-r0.7 etc.


def make_split(inter: Interactions, protocol: str, seed: int, first_events: int = 1) -> Split:
    """The seed's split; ``first_events``: the m events each cold user brings (temporal).
    ``temporal-valid``: the temporal protocol's validation window, the same protocol on the
    interactions before the test cut only (so its own cut falls at 0.8 x 0.8 of them): its
    warm, cold and new-item segments play the test's role, for choices the test window must
    not make."""
    if protocol == "random":
        return random_split(inter, seed)
    if protocol == "temporal":
        return temporal_split(inter, first_events=first_events, seed=seed)
    if protocol == "temporal-valid":
        before = inter.subset(inter.ts < temporal_cut(inter))
        return temporal_split(before, first_events=first_events, seed=seed)
    raise ConfigError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def score_split(score_fn: ScoreFn, split: Split, ks: Sequence[int]) -> dict[str, float]:
    """Test metrics, every item ranked and what the model saw masked. A temporal split is
    scored per segment (:func:`temporal_split`): ``warm_*`` on the warm users' test,
    ``cold_*`` on the cold users' test (their first events masked), ``new_item_*`` by
    ranking the new items only; a segment without interactions is left out."""
    if split.cut is None:
        return evaluate_scores(score_fn, split.test, [split.train, split.valid], ks)
    seen = [split.train, split.cold_events]
    metrics = {}
    for name, target, candidates in (("warm", split.test, None), ("cold", split.cold_test, None),
                                     ("new_item", split.new_item_test, split.new_items)):
        if len(target):
            scores = evaluate_scores(score_fn, target, seen, ks, candidates=candidates)
            metrics.update({f"{name}_{metric}": value for metric, value in scores.items()})
    return metrics


def fit_part(split: Split) -> Interactions:
    """What every model trains on: train, plus the cold users' first events if any."""
    return split.train if split.cold_events is None else concat(split.train, split.cold_events)


def fit_hetsgformer(graph_dir: Path, split: Split, seed: int, etype: str, work_dir: Path,
                    cfg: TrainConfig, log=None) -> ScoreFn:
    """Train HetSGFormer on the split's graph, export, score users from the export (cosine plus
    the popularity prior chosen on validation: :func:`trainers.hetsgformer.export.ranking_scores`).
    ``log``: called with one line per epoch."""
    from trainers.evaluation.split_graph import write_split_graph
    from trainers.hetsgformer.export import export_embeddings, ranking_scores
    from trainers.hetsgformer.train import train
    from trainers.hetsgformer.validation import write_pairs

    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    graph = write_split_graph(graph_dir, work_dir / "graph", fit_part(split), etype)
    valid = str(write_pairs(work_dir / "valid.parquet", split.valid)) if len(split.valid) else None
    def progress(m: dict) -> None:
        log(f"hetsgformer epoch {m['epoch'] + 1}/{cfg.epochs}: loss {m['loss']:.3f}, "
            f"valid ndcg@10 {m['valid_ndcg@10']:.4f} (prior {m['valid_prior']:g}), {m['edges_per_s']:,.0f} edges/s")

    train(graph, work_dir / "run", replace(cfg, seed=seed, target=etype, valid=valid),
          progress=progress if log else None)
    version = export_embeddings(work_dir / "run")
    src, _, dst = etype.split("__")
    return ranking_scores(version, src, dst)


def fit_lerg_scores(train: Interactions, seed: int, name: str, log=None) -> tuple[ScoreFn, dict[str, float]]:
    """LERG model ``name`` (:func:`trainers.lerg.model.lerg_config`): its scores and its device
    bundle's ``size_ratio`` and ``macs_ratio`` (propagation MACs over full-precision LightGCN's)."""
    from trainers.lerg.bundle import bundle_arrays, bundle_sizes
    from trainers.lerg.model import fit_lerg, lerg_config

    state = fit_lerg(train, seed, lerg_config(name), log=log)
    return state.score_fn(), {"size_ratio": bundle_sizes(bundle_arrays(state))["size_ratio"],
                              "macs_ratio": state.macs() / state.full_macs}


def run_eval(graph_dir: str | Path, models: Sequence[str] = ("pop", "mf", "lightgcn"), protocol: str = "random",
             seeds: Sequence[int] = (0,), ks: Sequence[int] = (10, 20), etype: str | None = None,
             train_cfg: TrainConfig | None = None, work_dir: str | Path | None = None,
             log=None, first_events: int = 1) -> dict[str, dict[str, dict[str, float]]]:
    """Fit and score each model on each seed's split (the temporal protocol's metrics come
    per segment, ``warm_*``, ``cold_*``, ``new_item_*``: :func:`score_split`;
    ``first_events``: the m events each cold user brings).

    ``etype``: the user-item edge type (None: the graph's default, the largest type between
    two node types). ``train_cfg`` sets HetSGFormer's training (default :class:`TrainConfig`); its runs go
    under ``work_dir`` (default: a temporary folder, removed after). ``log``: a callable
    taking one progress line. Returns ``{model: {metric: {"mean": m, "std": s}}}`` over
    ``seeds`` (population std).
    """
    unknown = [m for m in models if m not in MODELS and not m.startswith("lerg")]
    if unknown:
        raise ConfigError(f"unknown models {unknown}; known: {list(MODELS)}")
    from trainers.lerg.model import lerg_config
    for name in models:
        if name.startswith("lerg"):
            lerg_config(name)  # a bad variant fails now, not after the other models trained
    if not seeds:
        raise ConfigError("seeds must name at least one seed")
    graph_dir = Path(graph_dir).resolve()
    etype = GraphDir(graph_dir, validate="none").schema.interaction_type(etype)
    inter = load_interactions(graph_dir, etype)
    per_seed: dict[str, list[dict[str, float]]] = {m: [] for m in models}
    with tempfile.TemporaryDirectory(prefix="hetrec-eval-") as tmp:
        root = Path(work_dir).resolve() if work_dir is not None else Path(tmp)
        for seed in seeds:
            split = make_split(inter, protocol, seed, first_events)
            for name in models:
                t0 = time.perf_counter()
                if name == "hetsgformer":
                    score = fit_hetsgformer(graph_dir, split, seed, etype, root / f"hetsgformer-{protocol}-{seed}",
                                            train_cfg or TrainConfig(), log)
                elif name in ("gfm", "gfm-no-text"):
                    from trainers.gfm.adapt import fit_gfm
                    score = fit_gfm(graph_dir, split, seed, etype, root / f"{name}-{protocol}-{seed}", log=log,
                                    text=name == "gfm")
                elif name.startswith("lerg"):
                    score, figures = fit_lerg_scores(fit_part(split), seed, name, log)
                elif name in GRAPH_MODELS:
                    score = GRAPH_MODELS[name](fit_part(split), seed, graph_dir, etype)
                else:
                    score = BASELINES[name](fit_part(split), seed)
                per_seed[name].append(score_split(score, split, ks))
                if name.startswith("lerg"):
                    per_seed[name][-1].update(figures)
                if log:
                    ndcg = ", ".join(f"{k} {v:.4f}" for k, v in per_seed[name][-1].items() if k.endswith("ndcg@10"))
                    log(f"{protocol} seed {seed} {name}: {ndcg} ({time.perf_counter() - t0:.0f} s)")
    return {name: {metric: {"mean": float(np.mean([r[metric] for r in runs])),
                            "std": float(np.std([r[metric] for r in runs]))}
                   for metric in runs[0]}
            for name, runs in per_seed.items()}


def split_segments(graph_dir: str | Path, protocol: str, seeds: Sequence[int] = (0,), etype: str | None = None,
                   first_events: int = 1) -> dict[str, float]:
    """Users and interactions per scored segment (``Split.segments``), the mean over
    ``seeds``; empty for the random protocol."""
    inter = load_interactions(graph_dir, etype)
    counts = [make_split(inter, protocol, seed, first_events).segments() for seed in seeds]
    return {key: float(np.mean([c[key] for c in counts])) for key in counts[0]}


def format_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """A plain-text table: one row per model, one column per metric of any model (``-`` where a
    model has none), ``mean±std`` (the mean alone when every std is 0, e.g. for one seed)."""
    if not results:
        return ""
    metrics = list(dict.fromkeys(m for r in results.values() for m in r))  # a model may add its own (lerg)
    spread = any(r[m]["std"] for r in results.values() for m in metrics if m in r)
    width = max(16 if spread else 10, *(len(m) + 2 for m in metrics))   # "0.2574±0.0185" plus a gap
    first = max(12, *(len(name) + 2 for name in results))
    head = f"{'model':<{first}}" + "".join(f"{m:>{width}}" for m in metrics)
    rows = []
    for name, r in results.items():
        cells = ("-" if m not in r else f"{r[m]['mean']:.4f}±{r[m]['std']:.4f}" if spread else f"{r[m]['mean']:.4f}"
                 for m in metrics)
        rows.append(f"{name:<{first}}" + "".join(f"{c:>{width}}" for c in cells))
    return "\n".join([head, "-" * len(head), *rows])
