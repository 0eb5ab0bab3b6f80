"""Embed given nodes with a trained HetSGFormer, the same way whatever the batch.

Used by export (every node), by the per-epoch validation and by hard-negative mining
(a pool of items), so the three always see the model the same way.

Training mixes each node with its mini-batch (GAL) and samples neighbours at random; at
inference both would make a node's embedding depend on which other nodes share its
chunk. So inference (a) samples neighbourhoods without randomness (evenly spaced
neighbours per row, :func:`graphs.samplers.sample_fanout` with ``rng=None``) and (b) lets
GAL attend over one summary of the whole graph (:func:`global_context`) instead of the
chunk: a node's embedding is a function of the node, the graph and the weights only.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from graphs.samplers import sample_fanout
from graphs.shards import ShardStore
from trainers.features import FeatureStore
from trainers.hetsgformer.model import add_context


def global_context(model: nn.Module, store: ShardStore, features: FeatureStore, seed: int = 0,
                   max_nodes: int = 200_000, chunk: int = 8192) -> dict[str, Tensor] | None:
    """GAL's key/value summary over every node of the graph, or over a uniform sample of
    ``max_nodes`` of them (each type in proportion to its count, drawn with ``seed``) when the
    graph is larger: the summary is a sum, so a sample estimates its direction, which is all
    the normalised attention uses. None when the model has no GAL, or does not use it."""
    cfg = getattr(model, "module", model).cfg
    if cfg.gal_kind == "none" or cfg.gcn_weight >= 1:
        return None
    counts = store.counts
    total = sum(counts.values())
    rng = np.random.default_rng([seed, 1 << 21])
    context = None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for ntype, count in counts.items():
                take = count if total <= max_nodes else int(round(count * max_nodes / total))
                ids = np.arange(count) if take >= count else np.sort(rng.choice(count, take, replace=False))
                for lo in range(0, len(ids), chunk):
                    part = ids[lo:lo + chunk]
                    context = add_context(context, model.gal_context({ntype: part}, features.batch({ntype: part})))
    finally:
        model.train(was_training)
    return context


def embed_nodes(model: nn.Module, store: ShardStore, features: FeatureStore, ntype: str, ids: np.ndarray,
                fanouts: list[int], seed: int = 0, chunk: int = 2048, per: str = "relation",
                context: dict[str, Tensor] | None = None) -> Tensor:
    """Embeddings of ``ids: [N]`` (unique ids of ``ntype``) -> ``[N, D]`` on the model's device.

    ``fanouts``/``per``: as in :func:`graphs.samplers.sample_fanout` (the training run's),
    sampled without randomness. ``context``: GAL's summary (None: :func:`global_context`
    with ``seed``; pass it when embedding several sets with one model). A node's row does not
    depend on ``chunk`` or on the other ids, for one hop or equal fan-outs per hop. The
    model is put in eval mode for the call and its previous mode restored.
    """
    if context is None:
        context = global_context(model, store, features, seed)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for lo in range(0, len(ids), chunk):
                part = np.asarray(ids[lo:lo + chunk], dtype=np.int64)
                sub = sample_fanout(store, {ntype: part}, fanouts, None, per=per)
                out.append(model(sub, features.batch(sub.nodes), context)[ntype][: len(part)])
    finally:
        model.train(was_training)
    if not out:
        return torch.empty(0, model.cfg.dim)
    return torch.cat(out)
