"""HetSGFormer (arXiv 2512.13120): IEL -> GAL -> EAL, blended with a GCN branch.

The attention branch follows SGFormer (Wu et al. 2023): one global attention layer over
the sampled subgraph, here followed by the paper's type-aware edge attention; the GCN
branch and the blend ``z = g * h_gcn + (1 - g) * z_attn`` are SGFormer's. Training uses
:func:`link_loss`, a sampled softmax with logQ correction.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from graphs.exceptions import ConfigError
from graphs.samplers import SampledSubgraph
from graphs.schema import GraphSchema
from trainers.hetsgformer.config import HetSGFormerConfig
from trainers.hetsgformer.identity import IdentityEmbedding, TypeFeatures
from trainers.hetsgformer.layers import (EdgeAttention, GlobalAttention, HeteroGCN, LightPropagation, TypedGraph,
                                         TypedLinear)


def relations(schema: GraphSchema) -> list[str]:
    """Edge keys the model has weights for: every schema edge type and its reverse.

    A schema that already lists reverses (a partitioned store's) gains no ``rev_rev_`` keys.
    """
    keys = [e.key for e in schema.edge_types]
    keys += [e.reverse().key for e in schema.edge_types if not e.rel.startswith("rev_")]
    return list(dict.fromkeys(keys))


class HetSGFormer(nn.Module):
    """Embeds the nodes of a sampled subgraph.

    Shapes:
        batch: :class:`SampledSubgraph` (``nodes[t]: [N_t]``, ``edges[ekey]: [2, E]``);
        features: ``{t: TypeFeatures}`` (see :mod:`trainers.hetsgformer.identity`), optional;
        context: GAL's summary of the nodes to attend over (:meth:`gal_context`); None: the batch;
        returns: ``{t: [N_t, D]}``, rows in the order of ``batch.nodes[t]`` (seeds first).
    """

    def __init__(self, schema: GraphSchema, cfg: HetSGFormerConfig):
        super().__init__()
        self.cfg = cfg
        self.types, self.rels = [n.name for n in schema.node_types], relations(schema)
        types, rels = self.types, self.rels
        self.iel = IdentityEmbedding(schema, cfg)
        self.gal = GlobalAttention(cfg.dim, cfg.gal_kind, cfg.beta, cfg.dropout)
        self.eal = EdgeAttention(types, rels, cfg.dim, cfg.num_heads, cfg.dropout)
        self.gcn = (HeteroGCN(types, rels, cfg.dim, cfg.num_gcn_layers, cfg.dropout) if cfg.gcn_kind == "sgformer"
                    else LightPropagation(cfg.num_gcn_layers))
        self.out = TypedLinear(len(types), cfg.dim, cfg.dim) if cfg.out_proj else None

    def forward(self, batch: SampledSubgraph, features: dict[str, TypeFeatures] | None = None,
                context: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        x = self.embed_nodes(batch, features or {})                   # {t: [N_t, D]}
        graph = TypedGraph.build({t: v.shape[0] for t, v in x.items()}, batch.edges, self.types, self.rels,
                                 self.iel.id_table.weight.device)
        x = graph.flat(x)                                             # [N, D], rows by type
        g = self.cfg.gcn_weight
        z = self.gcn(x, graph) if g > 0 else 0
        if g < 1:                                                     # the attention branch
            z_attn = self.gal(x, context)
            if self.cfg.eal:
                z_attn = self.eal(z_attn, graph)
            z = g * z + (1 - g) * z_attn
        if self.out is not None:
            z = self.out(z, graph.node_ends, graph.node_type)
        return graph.split(z, batch.nodes)

    def gal_context(self, nodes: dict[str, np.ndarray], features: dict[str, TypeFeatures]) -> dict[str, Tensor] | None:
        """GAL's key/value summary of ``nodes: {t: [N_t]}`` (IEL only, no neighbourhood);
        summaries of disjoint node sets add up (:func:`add_context`)."""
        x = self.embed_nodes(SampledSubgraph(nodes, {}), features)
        return self.gal.summary(torch.cat(list(x.values())))

    def embed_nodes(self, batch: SampledSubgraph, features: dict[str, TypeFeatures]) -> dict[str, Tensor]:
        """IEL for every node type in the batch, ``{t: [N_t, D]}``."""
        return {t: self.iel(t, self._tensor(ids), features.get(t)) for t, ids in batch.nodes.items()}

    @staticmethod
    def score(u_emb: Tensor, i_emb: Tensor) -> Tensor:
        """Dot-product relevance: ``u_emb: [B, D]``, ``i_emb: [B, D]`` -> ``[B]``."""
        return (u_emb * i_emb).sum(-1)

    def _tensor(self, a: np.ndarray | Tensor) -> Tensor:
        return torch.as_tensor(a, dtype=torch.long, device=self.iel.id_table.weight.device)


def add_context(a: dict[str, Tensor] | None, b: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
    """The summary of two disjoint node sets from theirs (:meth:`HetSGFormer.gal_context`)."""
    return b if a is None else {k: a[k] + b[k] for k in a}


def link_loss(user_emb: Tensor, pos_item_emb: Tensor, pos_logq: Tensor | None = None, *,
              target: Tensor | None = None, rand_neg_emb: Tensor | None = None,
              rand_neg_logq: Tensor | None = None, hard_neg_emb: Tensor | None = None,
              pos_item_ids: Tensor | None = None, exclude: Tensor | None = None, temperature: float = 0.1,
              reduction: str = "mean") -> Tensor:
    """Sampled softmax with in-batch, uniform random and hard negatives.

    For user ``b`` the candidates are the batch's positive items ``c`` (``target[b]`` is its
    own), ``R`` shared random items and ``H`` hard items of its own; the logit of candidate c is

        s_bc = <u_b, v_c> / T - log q_c

    and the loss is ``-log softmax_c(s_b)[target_b]``. Subtracting ``log q_c``, the log of the
    probability that c is drawn as a candidate, is the sampling-bias correction of Yi et
    al. 2019 ("Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
    Recommendations", eq. 3): in-batch negatives are drawn by popularity, so popular items
    would otherwise be over-penalised. Mixing in uniform negatives follows Yang et al.
    2020 (mixed negative sampling). Hard negatives get no correction.

    Shapes:
        user_emb: ``[B, D]``; pos_item_emb: ``[C, D]``, the batch's distinct positives with
        ``target: [B]`` the column of each user's (None: ``C == B`` and user b's is row b);
        pos_logq: ``[C]`` (None: no correction); rand_neg_emb: ``[R, D]``, rand_neg_logq: ``[R]``
        (None: no correction); hard_neg_emb: ``[B, H, D]``; pos_item_ids: ``[B]`` with
        ``target`` None, masks in-batch columns holding the user's own positive item again
        (false negatives); exclude: ``[B, C + R + H]`` bool, candidates left out of user b's
        softmax (items it is known to like; never its target); returns: scalar, or ``[B]``
        with ``reduction="none"``.
    With all logits equal the loss is ``log(C + R + H)``. The ``[B, C]`` logits are the step's
    largest tensor, so the temperature scales the ``[B, D]`` users instead, and the parts are
    reduced by logsumexp one by one rather than concatenated.
    """
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}")
    B, C = user_emb.shape[0], pos_item_emb.shape[0]
    R = 0 if rand_neg_emb is None else rand_neg_emb.shape[0]
    u = user_emb / temperature
    logits = u @ pos_item_emb.t()                                      # [B, C]
    if pos_logq is not None:
        logits = logits - pos_logq[None, :]
    if exclude is not None:
        logits = logits.masked_fill(exclude[:, :C], -math.inf)
    if target is None:
        target = torch.arange(B, device=user_emb.device)
        if pos_item_ids is not None:
            dup = (pos_item_ids[:, None] == pos_item_ids[None, :]) & ~torch.eye(B, dtype=torch.bool,
                                                                                device=logits.device)
            logits = logits.masked_fill(dup, -math.inf)
    parts = [logits.logsumexp(1)]
    if rand_neg_emb is not None:
        rand = u @ rand_neg_emb.t()                                    # [B, R]
        rand = rand - rand_neg_logq[None, :] if rand_neg_logq is not None else rand
        parts.append((rand if exclude is None else rand.masked_fill(exclude[:, C:C + R], -math.inf)).logsumexp(1))
    if hard_neg_emb is not None:
        hard = torch.einsum("bd,bhd->bh", u, hard_neg_emb)            # [B, H]
        parts.append((hard if exclude is None else hard.masked_fill(exclude[:, C + R:], -math.inf)).logsumexp(1))
    lse = parts[0] if len(parts) == 1 else torch.stack(parts, 1).logsumexp(1)      # [B]
    loss = lse - logits.gather(1, target[:, None]).squeeze(1)
    if reduction == "none":
        return loss
    if reduction != "mean":
        raise ConfigError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return loss.mean()
