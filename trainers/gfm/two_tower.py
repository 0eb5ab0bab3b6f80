"""GFM's adaptation layer: a two-tower model over the foundation item embeddings.

* item tower: an MLP over the item's foundation embedding, plus a learned id row that
  starts at zero (an item the training never saw, a new one with only a title, is placed
  by its foundation embedding alone);
* user tower: an MLP over the mean foundation embedding of the user's last ``history``
  items and the sum of its attribute embeddings (categorical columns and small attribute
  neighbours: a MovieLens user's gender, zip code, occupation and age group), so a user
  with one event, or none, is placed too;
* loss: sampled softmax on cosine scores over the batch's other positives (logQ-corrected
  by their frequency) and ``random_negatives`` uniform items, each pair's duplicates of its
  own positive left out.

The towers read features, not ids into a table of every item: the caller gathers the rows
of ``foundation [N, F]`` (memory-mapped) for a batch, so a worker's memory is bounded by
the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MLP

from graphs.exceptions import ConfigError, require_positive_ints
from graphs.store import GraphDir
from graphs.text_features import attribute_names
from trainers.evaluation.splits import Interactions
from trainers.features import FeatureStore


@dataclass(frozen=True)
class AdaptConfig:
    """``dim``: output size of both towers; ``hidden``: their MLPs' width; ``history``: the
    last L items a user is read from; ``epochs`` over the training pairs in batches of
    ``batch_size`` pairs per worker; ``recent``: the most recent fraction of the pairs
    trained on (1: all; the history still reads older ones); ``history_mode``: what a
    training pair's user is read from, ``"others"`` L items drawn (each epoch) among the
    user's other training items, or ``"before"`` the L items just before it in time (a user
    is served from its last L items either way); ``item_ids``: add a learned id row per
    item (the item tower's, also averaged over the user's history in the user tower);
    ``max_attribute_nodes``: neighbour types at most this large are user
    attributes. ``valid_users``: users scored for validation NDCG@10 each epoch (the best
    epoch is exported). ``workers``/``use_gpu``/``resources_per_worker``: Ray Train's."""

    dim: int = 64
    hidden: int = 256
    history: int = 20
    epochs: int = 15
    batch_size: int = 256
    lr: float = 5e-3
    temperature: float = 0.1
    random_negatives: int = 256
    recent: float = 1.0
    history_mode: str = "others"
    item_ids: bool = True
    dropout: float = 0.1
    max_attribute_nodes: int = 1000
    valid_users: int = 2000
    workers: int = 2
    use_gpu: bool = False
    resources_per_worker: dict | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        require_positive_ints(self, "dim", "hidden", "history", "epochs", "batch_size", "random_negatives",
                              "workers", "valid_users")
        for name in ("lr", "temperature"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"AdaptConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 < self.recent <= 1:
            raise ConfigError(f"AdaptConfig.recent must be in (0, 1], got {self.recent!r}")
        if self.history_mode not in ("others", "before"):
            raise ConfigError(f"AdaptConfig.history_mode must be 'others' or 'before', got {self.history_mode!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"AdaptConfig.dropout must be in [0, 1), got {self.dropout!r}")


def user_tokens(graph_dir, user_type: str, max_nodes: int) -> tuple[np.ndarray, int]:
    """``([U, T] int64 padded with -1, vocab)``: each user's attribute tokens, one per
    categorical column (its value) and one per small attribute neighbour
    (:func:`graphs.text_features.attribute_names`: no interaction type is read)."""
    gdir = GraphDir(graph_dir, validate="none")
    count = gdir.schema.node_type(user_type).count
    columns, offset = [], 0
    for name, values in FeatureStore(gdir).arrays.get(user_type, {}).items():
        if values.ndim == 1 and values.dtype == np.int64:                    # categorical codes, -1 null
            columns.append(np.where(values >= 0, values + offset, -1)[:, None])
            offset += int(values.max()) + 1 if len(values) else 0
    for names in attribute_names(gdir, user_type, max_nodes):
        per = np.diff(names.ptr)
        width = int(per.max()) if len(per) else 0
        block = np.full((count, width), -1, dtype=np.int64)
        rows = np.repeat(np.arange(count), per)
        block[rows, np.arange(len(rows)) - names.ptr[rows]] = names.idx + offset
        columns.append(block)
        offset += len(names.names)
    tokens = np.concatenate(columns, axis=1) if columns else np.full((count, 1), -1, dtype=np.int64)
    return tokens, max(offset, 1)


def histories(inter: Interactions, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Time-ordered histories: ``(order [M], before [M, L])`` where ``order`` sorts the
    interactions by (user, ts) and ``before[j]`` holds the ``L`` items the user of
    ``order[j]`` had just before it (most recent last, -1 padded on the left)."""
    order = np.lexsort((inter.ts, inter.user))
    user, item = inter.user[order], inter.item[order]
    start = np.searchsorted(user, user, side="left")                          # first row of each user
    before = np.full((len(order), length), -1, dtype=np.int64)
    for back in range(1, length + 1):
        at = np.arange(len(order)) - back
        ok = at >= start
        before[ok, length - back] = item[at[ok]]
    return order, before


def sample_others(item: np.ndarray, start: np.ndarray, count: np.ndarray, rows: np.ndarray, length: int,
                  rng: np.random.Generator) -> np.ndarray:
    """``[B, L]``: for each row ``rows[b]`` of ``item`` (sorted by user; ``start``/``count``:
    the first row and the row count of each row's user), ``L`` items of the same user drawn
    with replacement among its other rows (-1 for a user with no other row)."""
    n = count[rows] - 1                                                       # [B] other rows
    r = np.floor(rng.random((len(rows), length)) * np.maximum(n, 1)[:, None]).astype(np.int64)
    r += r >= (rows - start[rows])[:, None]                                   # skip the row itself
    out = item[start[rows][:, None] + r]
    out[n <= 0] = -1
    return out


def last_items(inter: Interactions, length: int) -> np.ndarray:
    """``[num_users, L]``: each user's last ``L`` items in time order (-1 padded on the left)."""
    order = np.lexsort((inter.ts, inter.user))
    user, item = inter.user[order], inter.item[order]
    out = np.full((inter.num_users, length), -1, dtype=np.int64)
    end = np.searchsorted(user, np.arange(inter.num_users), side="right")
    begin = np.searchsorted(user, np.arange(inter.num_users), side="left")
    for back in range(1, length + 1):
        at = end - back
        ok = at >= begin
        out[ok, length - back] = item[at[ok]]
    return out


class TwoTower(nn.Module):
    """``items(x [C, F], ids [C]) -> [C, dim]`` and ``users(hist [B, L, F], hist_ids [B, L]
    (-1: padding), tokens [B, T]) -> [B, dim]``, both L2-normalised; ``forward`` runs both
    (one call, so DDP sees every parameter's gradient)."""

    def __init__(self, foundation_dim: int, num_items: int, vocab: int, cfg: AdaptConfig):
        super().__init__()
        self.item_mlp = MLP([foundation_dim, cfg.hidden, cfg.dim], dropout=cfg.dropout, norm=None)
        self.item_id = nn.Embedding(num_items, cfg.dim) if cfg.item_ids else None
        if self.item_id is not None:
            nn.init.zeros_(self.item_id.weight)                               # unseen items: foundation only
        self.attrs = nn.EmbeddingBag(vocab + 1, cfg.dim, mode="sum", padding_idx=vocab)
        self.user_mlp = MLP([foundation_dim + cfg.dim * (2 if cfg.item_ids else 1), cfg.hidden, cfg.dim],
                            dropout=cfg.dropout, norm=None)
        self.vocab = vocab

    def forward(self, hist: Tensor, hist_ids: Tensor, tokens: Tensor, x: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        return self.users(hist, hist_ids, tokens), self.items(x, ids)

    def items(self, x: Tensor, ids: Tensor) -> Tensor:
        h = self.item_mlp(x)
        if self.item_id is not None:
            h = h + self.item_id(ids)
        return F.normalize(h, dim=-1)

    def users(self, hist: Tensor, hist_ids: Tensor, tokens: Tensor) -> Tensor:
        m = (hist_ids >= 0).unsqueeze(-1).to(hist.dtype)                     # [B, L, 1]
        n = m.sum(1).clamp(min=1)
        parts = [(hist * m).sum(1) / n]                                      # [B, F]
        if self.item_id is not None:
            parts.append((self.item_id(hist_ids.clamp(min=0)) * m).sum(1) / n)   # [B, dim]
        parts.append(self.attrs(torch.where(tokens >= 0, tokens, self.vocab)))    # [B, dim]
        return F.normalize(self.user_mlp(torch.cat(parts, dim=-1)), dim=-1)


def softmax_loss(u: Tensor, pos: Tensor, pos_ids: Tensor, logq: Tensor, neg: Tensor, neg_ids: Tensor,
                 neg_logq: float, temperature: float) -> Tensor:
    """Sampled softmax of ``u [B, D]`` over ``pos [B, D]`` (each row's positive and the others'
    negatives, ``logq [B]``) and ``neg [R, D]`` uniform items; a candidate that is the same
    item as the row's positive is left out of its negatives."""
    logits = torch.cat([u @ pos.T / temperature - logq, u @ neg.T / temperature - neg_logq], dim=1)   # [B, B + R]
    same = torch.cat([pos_ids[:, None] == pos_ids[None, :], pos_ids[:, None] == neg_ids[None, :]], dim=1)
    same[torch.arange(len(u)), torch.arange(len(u))] = False
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(u), device=u.device))
