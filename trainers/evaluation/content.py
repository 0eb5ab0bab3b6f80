"""The content baseline of the text features: a user is the mean of the text embeddings of
the items it interacted with; an item is scored by cosine to that profile.

It needs no training and no interactions on the item side, so it is the trivial baseline a
model that reads text (HetSGFormer with ``<column>_emb``, GFM) must beat on new items, as
popularity is on warm users.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from graphs.exceptions import ConfigError
from graphs.store import GraphDir
from trainers.evaluation.metrics import ScoreFn
from trainers.evaluation.splits import Interactions
from trainers.features import FeatureStore


def text_feature(gdir: GraphDir, ntype: str) -> str:
    """The name of the node type's first ``*_emb`` dense feature; raises naming the graph
    and the type when it has none (run ``hetrec data text``)."""
    specs = [f for f in gdir.schema.node_type(ntype).features if f.kind == "dense" and f.name.endswith("_emb")]
    if not specs:
        raise ConfigError(f"node type {ntype!r} of {gdir.path} has no text embedding (a dense *_emb feature); "
                          f"run `hetrec data text {gdir.path}` first")
    return specs[0].name


def text_embeddings(graph_dir: str | Path, ntype: str) -> np.ndarray:
    """``[N, d]`` float32: the node type's :func:`text_feature`, L2-normalised (a null row
    stays zero)."""
    gdir = GraphDir(graph_dir, validate="none")
    name = text_feature(gdir, ntype)                  # raises first if there is none
    values = FeatureStore(gdir).arrays[ntype][name]
    values = np.nan_to_num(values.astype(np.float32))
    return values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)


def fit_text_profile(train: Interactions, seed: int, graph_dir: str | Path, etype: str) -> ScoreFn:
    """Score ``[B, N]`` = cosine of each user's mean train-item text embedding to every item's.
    ``seed`` is unused (deterministic)."""
    return profile_scores(train, text_embeddings(graph_dir, etype.split("__")[2]), etype)


def profile_scores(train: Interactions, item_vectors: np.ndarray, etype: str) -> ScoreFn:
    """Score ``[B, N]`` = cosine of each user's mean train-item vector to every item's
    (``item_vectors [N, d]``, unit rows)."""
    items = torch.from_numpy(np.asarray(item_vectors, np.float32))                      # [N, d]
    if len(items) != train.num_items:
        raise ConfigError(f"{etype}: {train.num_items} items in the interactions, {len(items)} item vectors")
    profile = torch.zeros(train.num_users, items.shape[1])
    profile.index_add_(0, torch.from_numpy(train.user), items[torch.from_numpy(train.item)])
    profile = torch.nn.functional.normalize(profile, dim=1)                              # [U, d]

    def score(users: torch.Tensor) -> torch.Tensor:
        return profile[users] @ items.T

    return score
