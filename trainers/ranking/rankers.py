"""The rankers DSGL is measured against, and the factory that builds any of them.

Every ranker takes the same inputs as :class:`trainers.ranking.dsgl.DSGL`:
``(users [B], items [B], user_hops, item_hops) -> logits [B]``, so one training loop
(:mod:`trainers.ranking.train`) fits and scores them all.

* :class:`DIN` (Zhou et al., KDD 2018): attention of the candidate item over the user's
  last L items (``user_hops[0]``), weights from an MLP on ``[h, c, h - c, h * c]`` and
  not softmax-normalised, then an MLP on ``[e_u, e_i, pooled, pooled * e_i]``.
* :class:`EmbeddingMLP`: an MLP on frozen pretrained (HetSGFormer) embeddings,
  ``[y_u, y_i, y_u * y_i]``; it sees no sequence at all.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from graphs.exceptions import ConfigError
from graphs.store import GraphDir
from trainers.ranking.dsgl import DSGL, DSGLConfig

RANKERS = ("dsgl", "din", "mlp")


def categorical_fields(gdir: GraphDir, ntype: str) -> tuple[torch.Tensor, list[int]]:
    """A node type's categorical attributes as codes ``[N, F]`` (-1 null) and cardinalities."""
    spec = gdir.schema.node_type(ntype)
    cats = [f for f in spec.features if f.kind == "categorical"]
    if not cats:
        return torch.empty(spec.count, 0, dtype=torch.long), []
    table = gdir.read_nodes(ntype, columns=["id"] + [f.name for f in cats])
    cols = [table[f.name].combine_chunks().fill_null(-1).to_numpy().astype(np.int64) for f in cats]
    return torch.from_numpy(np.stack(cols, 1)), [f.cardinality for f in cats]


class DIN(nn.Module):
    """Deep Interest Network over the user's recent items; ``dim`` as DSGL's."""

    def __init__(self, num_users: int, num_items: int, dim: int = 32, hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        self.user_emb, self.item_emb = nn.Embedding(num_users + 1, dim), nn.Embedding(num_items + 1, dim)
        for emb in (self.user_emb, self.item_emb):
            nn.init.normal_(emb.weight, std=0.05)
        self.unit = nn.Sequential(nn.Linear(4 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.mlp = nn.Sequential(nn.Linear(4 * dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, users: Tensor, items: Tensor, user_hops: list[dict], item_hops: list[dict],
                pair: Tensor | None = None, patch=None) -> Tensor:
        """``patch(junction, h)``, optional: DCCL's per-row patches (``trainers.dccl.patch``)
        at the junctions ``user`` (``e_u [B, D]``), ``item`` (the candidate and history
        embeddings, ``[B, D]`` and ``[B, L, D]``) and ``hidden`` (the last hidden layer ``[B, H]``)."""
        patch = patch or (lambda junction, h: h)
        pair = torch.arange(len(items), device=items.device) if pair is None else pair
        e_u = patch("user", self.user_emb(users.clamp(max=self.user_emb.num_embeddings - 1))[pair])   # [B, D]
        e_i = patch("item", self.item_emb(items.clamp(max=self.item_emb.num_embeddings - 1)))        # [B, D]
        ids = user_hops[0]["ids"][pair].clamp(max=self.item_emb.num_embeddings - 1)
        hist = patch("item", self.item_emb(ids))                                                     # [B, L, D]
        c = e_i[:, None].expand_as(hist)
        w = self.unit(torch.cat([hist, c, hist - c, hist * c], -1)).squeeze(-1)   # [B, L]
        w = w * user_hops[0]["mask"][pair]
        pooled = (w[..., None] * hist).sum(1)                                     # [B, D]
        hidden = self.mlp[:-1](torch.cat([e_u, e_i, pooled, pooled * e_i], -1))   # [B, H]
        return self.mlp[-1](patch("hidden", hidden)).squeeze(-1)


class EmbeddingMLP(nn.Module):
    """MLP over frozen embeddings ``users: [U, d]``, ``items: [I, d]`` (unknown ids read 0)."""

    def __init__(self, users: Tensor, items: Tensor, hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        d = users.shape[1]
        self.register_buffer("users", torch.cat([users.float(), torch.zeros(1, d)]))
        self.register_buffer("items", torch.cat([items.float(), torch.zeros(1, d)]))
        self.mlp = nn.Sequential(nn.Linear(3 * d, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, users: Tensor, items: Tensor, user_hops: list[dict], item_hops: list[dict],
                pair: Tensor | None = None) -> Tensor:
        pair = torch.arange(len(items), device=items.device) if pair is None else pair
        y_u = self.users[users.clamp(max=len(self.users) - 1)][pair]
        y_i = self.items[items.clamp(max=len(self.items) - 1)]
        return self.mlp(torch.cat([y_u, y_i, y_u * y_i], -1)).squeeze(-1)


def build_ranker(kind: str, num_users: int, num_items: int, dsgl: DSGLConfig, fields: dict | None = None,
                 pretrained: tuple[Tensor, Tensor] | None = None) -> nn.Module:
    """``kind`` in :data:`RANKERS`. ``fields``: ``{"user": (codes, cards), "item": ...}`` for
    DSGL; ``pretrained``: ``(users [U, d], items [I, d])`` embeddings, required by ``mlp``
    and, for DSGL, the start of its id tables (unit rows through a fixed random orthonormal
    map to ``dsgl.dim``, so inner products are kept up to the projection's distortion)."""
    if kind not in RANKERS:
        raise ConfigError(f"ranker must be one of {RANKERS}, got {kind!r}")
    if kind == "din":
        return DIN(num_users, num_items, dsgl.dim, dsgl.mlp_hidden, dsgl.dropout)
    if kind == "mlp":
        if pretrained is None:
            raise ConfigError("ranker 'mlp' needs pretrained embeddings (RankerConfig.embeddings: a run directory)")
        return EmbeddingMLP(*pretrained, hidden=dsgl.mlp_hidden, dropout=dsgl.dropout)
    fields = fields or {}
    (uf, uc), (itf, ic) = fields.get("user", (None, [])), fields.get("item", (None, []))
    model = DSGL(num_users, num_items, dsgl, uf, uc, itf, ic)
    if pretrained is not None:
        d = pretrained[0].shape[1]
        # a fixed random orthonormal map d -> dim keeps inner products (Johnson-Lindenstrauss)
        gen = torch.Generator().manual_seed(0)
        proj = torch.linalg.qr(torch.randn(max(d, dsgl.dim), max(d, dsgl.dim), generator=gen))[0][:d, :dsgl.dim]
        with torch.no_grad():
            for emb, src in ((model.user_emb, pretrained[0]), (model.item_emb, pretrained[1])):
                unit = src.float() / src.float().norm(dim=1, keepdim=True).clamp(min=1e-9)
                emb.weight[: len(src)] = unit @ proj * (0.5 * (max(d, dsgl.dim) / d) ** 0.5)
    return model
