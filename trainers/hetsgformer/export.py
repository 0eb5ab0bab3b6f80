"""Export the embedding of every node of every type from a trained run (DESIGN.md contract).

Layout::

    <run>/embeddings/v0001/<ntype>.npy    float32 [count, d], row = node id within the type
    <run>/embeddings/v0001/prior.npy      float32 [items], log(1 + the item's count of target edges)
    <run>/embeddings/v0001/activity.npy   int64 [users], the user's count of target edges
    <run>/embeddings/v0001/meta.json      version, dim, counts, checkpoint, prior (type, weight, cold_weight)
    <run>/embeddings/LATEST               the newest version's folder name

Inference is a Ray Data job: chunks of node ids go to ``map_batches`` tasks (at most
``actors`` at once; each worker process loads the model once and keeps it for the next
chunk) that sample every chunk's neighbourhood from the shard store and write their rows
straight into the version's ``.npy`` files (memory-mapped, disjoint rows). A failed task
is retried by Ray; rewriting a chunk's rows is idempotent.
The version folder is written under a temporary name and renamed when complete.

Ranking scores are ``cos(u, i) + w_u * prior[i]`` (:func:`ranking_scores`), ``w_u`` from the
weight validation chose with the exported weights (``TrainConfig.popularity_prior``) and the
user's activity (:func:`~trainers.hetsgformer.validation.user_prior_weights`).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import ray
import torch

from graphs.exceptions import ConfigError
from graphs.shards import ShardStore
from graphs.store import GraphDir, temp_sibling, write_json_atomic, write_text_atomic
from trainers.features import FeatureStore
from trainers.hetsgformer.inference import embed_nodes, global_context
from trainers.hetsgformer.model import HetSGFormer
from trainers.hetsgformer.train import TrainConfig
from trainers.hetsgformer.validation import (COLD_PRIOR, DEFAULT_PRIOR, cosine_scores, popularity_prior,
                                            user_prior_weights)
from trainers.ray_train import load_state
from trainers.run_dir import RunDir


@functools.lru_cache(maxsize=1)
def _embedder(config_json: str, checkpoint: str, stamp: int) -> tuple:
    """The stores and the model of one export, loaded once per Ray worker process (Ray
    reuses the process for the export's next tasks). ``stamp``: the checkpoint file's
    mtime, so a ``best/`` rewritten by further training is loaded again."""
    config = json.loads(config_json)
    cfg = TrainConfig.from_json(config["train"])
    store = ShardStore(config["parts"])
    features = FeatureStore(GraphDir(config["graph"], validate="none"))
    model = HetSGFormer(store.schema, cfg.model)
    model.load_state_dict(load_state(checkpoint)["model"])
    return store, features, model.eval(), cfg, global_context(model, store, features, cfg.seed)


def _embed_chunks(chunk: dict[str, np.ndarray], config_json: str, checkpoint: str, stamp: int,
                  out: str) -> dict[str, np.ndarray]:
    """A Ray Data task: ``chunk`` holds id ranges ``ntype, lo, hi``; each range's rows are
    embedded and written into ``out/<ntype>.npy``; returns the rows written per range."""
    store, features, model, cfg, context = _embedder(config_json, checkpoint, stamp)
    for ntype, lo, hi in zip(chunk["ntype"], chunk["lo"], chunk["hi"]):
        ids = np.arange(lo, hi, dtype=np.int64)
        emb = embed_nodes(model, store, features, str(ntype), ids, list(cfg.fanouts), cfg.seed,
                          chunk=len(ids), per=cfg.fanout_per, context=context)
        rows = np.load(Path(out) / f"{ntype}.npy", mmap_mode="r+")
        rows[lo:hi] = emb.numpy()
        rows.flush()
    return {"rows": chunk["hi"] - chunk["lo"]}


def export_embeddings(run_dir: str | Path, chunk_nodes: int = 2048, actors: int = 2,
                      ray_remote_args: dict | None = None) -> Path:
    """Embed every node of the run's graph; returns the new version folder. ``ray_remote_args``
    go to the embedding actors (e.g. ``{"num_gpus": 1, "resources": {"trainer": 1}}``)."""
    run = RunDir(run_dir)
    cfg = TrainConfig.from_json(run.train_config)
    checkpoint = run.export_checkpoint()
    store = ShardStore(run.parts)
    final = run.next_embeddings()
    version = int(final.name[1:])
    tmp = temp_sibling(final)
    tmp.mkdir()
    try:
        counts = store.counts
        for ntype, count in counts.items():
            np.lib.format.open_memmap(tmp / f"{ntype}.npy", mode="w+", dtype=np.float32,
                                      shape=(count, cfg.model.dim)).flush()
        chunks = [{"ntype": t, "lo": lo, "hi": min(c, lo + chunk_nodes)}
                  for t, c in counts.items() for lo in range(0, c, chunk_nodes)]
        written = (ray.data.from_items(chunks, override_num_blocks=max(1, min(len(chunks), 64)))
                   .map_batches(_embed_chunks, batch_size=1, concurrency=actors,
                                fn_kwargs={"config_json": json.dumps(run.config), "checkpoint": str(checkpoint),
                                           "stamp": (checkpoint / "state.pt").stat().st_mtime_ns,
                                           "out": str(tmp)},
                                **(ray_remote_args or {}))
                   .sum("rows"))
        if written != sum(counts.values()):
            raise RuntimeError(f"export wrote {written} rows, expected {sum(counts.values())}")
        target = store.edge_types[run.target]
        np.save(tmp / "prior.npy", popularity_prior(store, target))
        np.save(tmp / "activity.npy", store.degree(target.key, np.arange(counts[target.src])))
        write_json_atomic(tmp / "meta.json", {"version": version, "dim": cfg.model.dim, "counts": counts,
                                              "checkpoint": str(checkpoint),
                                              "prior": {"type": target.dst, "weight": prior_weight(cfg, checkpoint),
                                                        "cold_weight": COLD_PRIOR}})
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(run.embeddings / "LATEST", final.name)
    return final


def prior_weight(cfg: TrainConfig, checkpoint: Path) -> float:
    """The popularity-prior weight to rank with: the one validation kept with ``checkpoint``
    (``best/``), else the configured one, else :data:`DEFAULT_PRIOR`."""
    chosen = torch.load(checkpoint / "state.pt", weights_only=True, mmap=True, map_location="cpu").get("prior")
    if chosen is not None:                      # saved by a validating run with its best epoch
        return float(chosen)
    return DEFAULT_PRIOR if cfg.popularity_prior is None else cfg.popularity_prior


def ranking_scores(version: str | Path, src: str, dst: str):
    """A scorer ``users: [B] -> [B, N]`` of an exported version: :func:`cosine_scores` between
    the ``src`` and ``dst`` rows plus the version's popularity prior, weighted per user by
    its activity (none for a version without a prior, or for another item type; one weight
    for every user in a version exported before the per-user weights)."""
    version = Path(version)
    prior = json.loads((version / "meta.json").read_text()).get("prior") or {}
    users, items = (torch.from_numpy(np.load(version / f"{t}.npy")) for t in (src, dst))
    if prior.get("type") != dst:
        return cosine_scores(users, items)
    bias = torch.from_numpy(np.load(version / "prior.npy"))                                  # [N]
    if "cold_weight" not in prior:
        return cosine_scores(users, items, prior["weight"] * bias)
    scale = user_prior_weights(prior["weight"], np.load(version / "activity.npy"), prior["cold_weight"])
    return cosine_scores(users, items, bias, scale)


def serving_run(trained: str | Path, parts: str | Path, out: str | Path, **export_kwargs) -> Path:
    """A run in ``out`` that embeds the partitioned graph ``parts`` with the weights trained in
    the run ``trained``, then exports it; returns the embeddings version.

    The usual use: a model trained on an evaluation split's graph serves the full graph,
    so every interaction (the held-out ones too) shapes the neighbourhoods it embeds and
    the history the service excludes. Both graphs must have the same node types with the
    same counts and the same edge types.
    """
    trained, served, parts = RunDir(trained), RunDir(out), Path(parts).resolve()
    have, want = ShardStore(trained.parts), ShardStore(parts)
    if have.counts != want.counts or sorted(have.edge_types) != sorted(want.edge_types):
        raise ConfigError(f"{parts} does not match the graph {trained.path} was trained on: node counts "
                          f"{want.counts} vs {have.counts}, or other edge types")
    served.refuse_existing("pick another folder")
    latest = trained.latest_checkpoint()
    shutil.copytree(latest, served.checkpoints / "train" / latest.name)
    if trained.export_checkpoint() != latest:                      # the weights export chose
        shutil.copytree(trained.best, served.best)
    served.write_config(want.graph, parts, trained.target, trained.train_config, weights_from=str(trained.path))
    return export_embeddings(served.path, **export_kwargs)
