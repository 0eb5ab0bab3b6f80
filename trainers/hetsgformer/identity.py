"""IEL, the identity embedding layer of HetSGFormer (arXiv 2512.13120, Sec. IEL).

A node's vector is ``id_table[row(type, id)] + type_emb[type] + attributes``, so memory is
``O(V_max * D)`` rather than ``O(|V| * D)``. Attribute columns go through one-layer
encoders; a single learnable imputation token stands in for every missing value.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from graphs.schema import FeatureSpec, GraphSchema
from trainers.hetsgformer.config import HetSGFormerConfig

# A prime coprime to every practical v_max: ``id -> id * P + salt (mod v_max)`` is then a
# bijection of Z_{v_max}, so the hash is collision-free within a type of count <= v_max.
_PRIME = 2_654_435_761

# Feature values for one node type: ``{name: (values, present)}``. ``values`` is
# dense ``[N, dim]`` float, categorical ``[N]`` int64, token_list ``[N, L]`` int64 padded
# with -1; ``present: [N]`` bool, False where the attribute is null.
TypeFeatures = dict[str, tuple[Tensor, Tensor]]


class IdentityEmbedding(nn.Module):
    """Shared hashed ID table + type embedding + attribute encoders + imputation token.

    Shapes:
        ids: ``[N]`` ids within ``ntype``; features: :data:`TypeFeatures`;
        returns: ``[N, D]``.

    Rows: when the counts of all types fit (``sum(count) <= v_max``) each type gets its
    own block of rows and no two nodes share one. Otherwise ids are hashed within their
    type, collision-free per type while ``count <= v_max``; the type embedding tells
    colliding types apart. ``text`` columns are not encoded (left to a text tower).
    """

    def __init__(self, schema: GraphSchema, cfg: HetSGFormerConfig):
        super().__init__()
        self.schema, self.v_max, D = schema, cfg.v_max, cfg.dim
        self.type_index = {n.name: i for i, n in enumerate(schema.node_types)}
        self.disjoint = schema.num_nodes <= cfg.v_max
        self.use_attributes = cfg.attributes
        self.id_table = nn.Embedding(cfg.v_max, D, sparse=cfg.sparse_ids)
        self.type_emb = nn.Embedding(max(1, len(schema.node_types)), D)
        self.impute = nn.Parameter(torch.randn(D) * 0.02)
        self.encoders = nn.ModuleList(
            nn.ModuleDict({f.name: _encoder(f, D) for f in n.features if f.kind != "text"})
            for n in schema.node_types
        )
        nn.init.normal_(self.id_table.weight, std=0.02)
        nn.init.normal_(self.type_emb.weight, std=0.02)

    def rows(self, ntype: str, ids: Tensor) -> Tensor:
        """ID-table rows ``[N]`` int64 for ``ids: [N]`` of ``ntype``."""
        t = self.type_index[ntype]
        if self.disjoint:
            return ids + self.schema.offsets[ntype]
        salt = (t * 0x9E3779B1) % self.v_max
        # Reduce first so the product stays well inside int64.
        return ((ids % self.v_max) * (_PRIME % self.v_max) + salt) % self.v_max

    def forward(self, ntype: str, ids: Tensor, features: TypeFeatures | None = None) -> Tensor:
        t = self.type_index[ntype]
        x = self.id_table(self.rows(ntype, ids))                     # [N, D]
        x = x + self.type_emb.weight[t]
        encoders = self.encoders[t]
        if len(encoders) and self.use_attributes:
            x = x + self._attributes(encoders, ids.shape[0], features or {})
        return x

    def inputs(self, ntype: str, n: int, features: TypeFeatures | None = None) -> Tensor:
        """What IEL knows of ``n`` nodes of ``ntype`` without their ID rows: type embedding
        plus attributes (imputation token where null), ``[n, D]``. A node that was never
        trained has this and nothing else; ILLE reconstructs in this space."""
        t = self.type_index[ntype]
        x = self.type_emb.weight[t].expand(n, -1)
        encoders = self.encoders[t]
        if len(encoders) and self.use_attributes:
            x = x + self._attributes(encoders, n, features or {})
        return x

    def _attributes(self, encoders: nn.ModuleDict, n: int, features: TypeFeatures) -> Tensor:
        """Mean over columns of the encoded values, the imputation token where null: ``[N, D]``."""
        out = []
        for name, enc in encoders.items():
            if name not in features:                      # column absent: all missing
                out.append(self.impute.expand(n, -1))
                continue
            values, present = features[name]
            encoded, present = enc(values, present)       # [N, D], [N]
            out.append(torch.where(present[:, None], encoded, self.impute))
        return torch.stack(out).mean(0)


def _encoder(spec: FeatureSpec, dim: int) -> nn.Module:
    if spec.kind == "dense":
        return _Dense(spec.dim, dim)
    if spec.kind == "categorical":
        return _Categorical(spec.cardinality, dim)
    return _TokenList(spec.cardinality, dim)


class _Dense(nn.Module):
    """``values: [N, F]`` (or ``[N]``) float -> ``[N, D]``."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.lin = nn.Linear(in_dim, dim)

    def forward(self, values: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        values = values.float().reshape(values.shape[0], -1)
        present = present & torch.isfinite(values).all(1)
        return self.lin(torch.nan_to_num(values)), present


class _Categorical(nn.Module):
    """``values: [N]`` int64 in ``[0, cardinality)`` -> ``[N, D]``; out-of-range counts as null."""

    def __init__(self, cardinality: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(cardinality, dim)

    def forward(self, values: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        ok = present & (values >= 0) & (values < self.emb.num_embeddings)
        return self.emb(torch.where(ok, values, 0)), ok


class _TokenList(nn.Module):
    """``values: [N, L]`` int64 padded with -1 -> mean token embedding ``[N, D]``.

    An empty list is treated as null.
    """

    def __init__(self, cardinality: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(cardinality, dim)

    def forward(self, values: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        valid = (values >= 0) & (values < self.emb.num_embeddings)       # [N, L]
        vecs = self.emb(torch.where(valid, values, 0)) * valid[..., None]  # [N, L, D]
        count = valid.sum(1)                                               # [N]
        mean = vecs.sum(1) / count.clamp(min=1)[:, None]
        return mean, present & (count > 0)
