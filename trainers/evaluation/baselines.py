"""Baselines scored by the same code as every model (DESIGN.md, "Evaluation protocol").

Each ``fit_*(train, seed, ...)`` returns a score function ``users [B] -> scores [B, num_items]``:

* :func:`fit_popularity`: train interaction counts, the same list for every user.
* :func:`fit_mf_bpr`: matrix factorisation with the BPR loss (Rendle et al. 2009).
* :func:`fit_lightgcn`: ``torch_geometric.nn.LightGCN`` (He et al. 2020) on the user-item
  bipartite graph, full-graph propagation at every step, BPR via ``recommendation_loss``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch_geometric.nn import LightGCN
from torch_geometric.utils import to_torch_csr_tensor

from graphs.exceptions import ConfigError
from trainers.evaluation.metrics import ScoreFn
from trainers.evaluation.splits import Interactions


EpochHook = Callable[[int, ScoreFn], None]


@dataclass(frozen=True)
class BPRConfig:
    """Training settings shared by MF-BPR and LightGCN (RecBole defaults where they fit).

    ``max_steps_per_epoch``: when set, the batch grows past ``batch_size`` so an epoch takes
    at most this many steps. LightGCN propagates the whole graph every step, so with a fixed
    batch an epoch costs O(E^2 / B); capping the steps keeps it O(E) on large data sets
    while leaving MovieLens-100K (80,000 / 2,048 = 40 steps) as tuned.
    """

    dim: int = 64
    epochs: int = 30
    batch_size: int = 2048  # RecBole's train_batch_size; LightGCN is sensitive to it (ALGORITHMS.md)
    lr: float = 1e-3
    weight_decay: float = 1e-4  # L2 on the batch's embeddings (RecBole's reg_weight)
    max_steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.dim < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"dim, epochs and batch_size must be >= 1, got {self.dim}, {self.epochs}, {self.batch_size}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ConfigError(f"max_steps_per_epoch must be >= 1 or None, got {self.max_steps_per_epoch}")

    def batch_for(self, num_train: int) -> int:
        """The batch size used on ``num_train`` interactions."""
        if self.max_steps_per_epoch is None:
            return self.batch_size
        return max(self.batch_size, -(-num_train // self.max_steps_per_epoch))
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(f"lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")


def fit_popularity(train: Interactions, seed: int = 0) -> ScoreFn:
    """Score = number of train interactions of the item. ``seed`` is unused (deterministic)."""
    counts = torch.from_numpy(np.bincount(train.item, minlength=train.num_items).astype(np.float32))  # [N]

    def score(users: torch.Tensor) -> torch.Tensor:
        return counts.expand(len(users), -1)  # [B, N]

    return score


def bpr_batches(train: Interactions, batch_size: int, rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, ...]]:
    """One epoch of shuffled ``(user [B], pos [B], neg [B])``; negatives uniform over items the
    user has not interacted with in train (one redraw round, then rare collisions stay)."""
    known = np.unique(train.user * train.num_items + train.item)  # sorted keys of (user, item)

    def is_known(keys: np.ndarray) -> np.ndarray:
        # searchsorted, not np.isin: isin rebuilds a lookup table per call (~40x slower here)
        at = np.minimum(np.searchsorted(known, keys), len(known) - 1)
        return known[at] == keys

    order = rng.permutation(len(train))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        user, pos = train.user[rows], train.item[rows]
        neg = rng.integers(0, train.num_items, len(rows))
        for _ in range(3):
            clash = is_known(user * train.num_items + neg)
            if not clash.any():
                break
            neg[clash] = rng.integers(0, train.num_items, int(clash.sum()))
        yield torch.from_numpy(user), torch.from_numpy(pos), torch.from_numpy(neg)


class MatrixFactorization(nn.Module):
    """score(u, i) = <P_u, Q_i>.

    Shapes: users [B], items [B] -> scores [B]; :meth:`score_all`: users [B] -> [B, N].
    """

    def __init__(self, num_users: int, num_items: int, dim: int):
        super().__init__()
        self.user = nn.Embedding(num_users, dim)
        self.item = nn.Embedding(num_items, dim)
        nn.init.xavier_normal_(self.user.weight)  # RecBole's BPR init
        nn.init.xavier_normal_(self.item.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user(users) * self.item(items)).sum(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.user(users) @ self.item.weight.T


# Defaults chosen on validation NDCG@10 of the random split over seeds 0-2
# (benchmarks/baseline_grid.py, BENCHMARKS.md "Baselines tuned on validation"): MF-BPR
# 160 epochs at lr 1e-3 with L2 1e-2 (~20 s on 2 cores); LightGCN 40 epochs at lr 1e-2 with
# L2 1e-4 (~60 s; it peaks at 40 on validation and declines after).
MF_CONFIG = BPRConfig(epochs=160, lr=1e-3, weight_decay=1e-2)
LIGHTGCN_CONFIG = BPRConfig(epochs=40, lr=1e-2, weight_decay=1e-4, max_steps_per_epoch=64)


def fit_mf_bpr(train: Interactions, seed: int = 0, config: BPRConfig = MF_CONFIG,
               on_epoch: EpochHook | None = None) -> ScoreFn:
    """Matrix factorisation trained with BPR: -log sigmoid(s(u, pos) - s(u, neg)) + L2.
    ``on_epoch(epoch, score_fn)`` is called after each epoch (validation curves)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = MatrixFactorization(train.num_users, train.num_items, config.dim)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    score = lambda users: model.score_all(users).detach()  # noqa: E731
    for epoch in range(config.epochs):
        for user, pos, neg in bpr_batches(train, config.batch_for(len(train)), rng):
            u, p, n = model.user(user), model.item(pos), model.item(neg)  # [B, D] each
            loss = -torch.nn.functional.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()
            loss = loss + config.weight_decay * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / len(user)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if on_epoch:
            with torch.no_grad():
                on_epoch(epoch, score)
    model.eval()
    return score


def bipartite_adjacency(train: Interactions) -> torch.Tensor:
    """Users are nodes ``[0, U)``, items ``[U, U + N)``; distinct (user, item) pairs in both
    directions, as a sparse CSR [U + N, U + N].

    ``LGConv`` accepts it in place of ``edge_index`` [2, 2M] and gives the same result (it
    still applies the symmetric norm); its sparse matmul is ~7x faster than scatter on 2 cores.
    """
    pairs = np.unique(np.stack([train.user, train.item + train.num_users]), axis=1)  # [2, M']
    u, i = torch.from_numpy(pairs[0]), torch.from_numpy(pairs[1])
    edge_index = torch.stack([torch.cat([u, i]), torch.cat([i, u])])  # [2, 2M']
    n = train.num_users + train.num_items
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse (CSR tensor support|invariant checks)")
        return to_torch_csr_tensor(edge_index, size=(n, n))


def fit_lightgcn(train: Interactions, seed: int = 0, num_layers: int = 3,
                 config: BPRConfig = LIGHTGCN_CONFIG, on_epoch: EpochHook | None = None) -> ScoreFn:
    """LightGCN: propagate the whole graph every step, BPR on the batch's (user, pos, neg).
    ``on_epoch(epoch, score_fn)`` is called after each epoch (validation curves)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_users = train.num_users
    model = LightGCN(n_users + train.num_items, config.dim, num_layers)
    adj = bipartite_adjacency(train)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    for epoch in range(config.epochs):
        for user, pos, neg in bpr_batches(train, config.batch_for(len(train)), rng):
            emb = model.get_embedding(adj)  # [U + N, D]
            u, p, n = emb[user], emb[pos + n_users], emb[neg + n_users]
            # recommendation_loss regularises the layer-0 embeddings of node_id, as the paper does
            loss = model.recommendation_loss((u * p).sum(-1), (u * n).sum(-1),
                                             node_id=torch.cat([user, pos + n_users, neg + n_users]),
                                             lambda_reg=config.weight_decay)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if on_epoch:
            on_epoch(epoch, _lightgcn_scores(model, adj, n_users))
    model.eval()
    return _lightgcn_scores(model, adj, n_users)


def _lightgcn_scores(model: LightGCN, adj: torch.Tensor, n_users: int) -> ScoreFn:
    """Score function from one propagation of the current weights."""
    with torch.no_grad():
        emb = model.get_embedding(adj)
    user_emb, item_emb = emb[:n_users], emb[n_users:]  # [U, D], [N, D]
    return lambda users: user_emb[users] @ item_emb.T


BASELINES = {"pop": fit_popularity, "mf": fit_mf_bpr, "lightgcn": fit_lightgcn}
