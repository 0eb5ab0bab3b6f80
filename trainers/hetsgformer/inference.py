"""Embed given nodes with a HetSGFormer: chunked, no gradients, the same sample every call.

Used by export (every node), by the per-epoch validation and by hard-negative mining
(a pool of items), so the three always see the model the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from graphs.samplers import sample_fanout
from graphs.shards import ShardStore
from trainers.features import FeatureStore


def embed_nodes(model: nn.Module, store: ShardStore, features: FeatureStore, ntype: str, ids: np.ndarray,
                fanouts: list[int], seed: int = 0, chunk: int = 2048, per: str = "relation") -> Tensor:
    """Embeddings of ``ids: [N]`` (unique ids of ``ntype``) -> ``[N, D]`` on the model's device.

    ``fanouts``/``per``: as in :func:`graphs.samplers.sample_fanout` (the training run's).
    Each chunk's neighbourhood is sampled with a generator seeded by ``(seed, first id)``,
    so repeated calls give the same rows. The model is put in eval mode for the call and
    its previous mode restored.
    """
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for lo in range(0, len(ids), chunk):
                part = np.asarray(ids[lo:lo + chunk], dtype=np.int64)
                rng = np.random.default_rng([seed, int(part[0])])
                sub = sample_fanout(store, {ntype: part}, fanouts, rng, per=per)
                out.append(model(sub, features.batch(sub.nodes))[ntype][: len(part)])
    finally:
        model.train(was_training)
    if not out:
        return torch.empty(0, model.cfg.dim)
    return torch.cat(out)
