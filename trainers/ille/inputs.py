"""The space ILLE computes reconstruction weights in: what a brand-new node already has.

``x(node) = [ IEL inputs / ||IEL inputs|| , structure_weight * log1p(degree per relation) / 4 ]``

The first part is HetSGFormer's identity layer without the ID row (type embedding plus
attribute encoders, imputation token where an attribute is null,
:meth:`IdentityEmbedding.inputs`); the second is the node's structural signature, its
current degree in every relation (one slot per relation of the schema, 0 elsewhere).
Both exist for a node that was never trained, and both mean the same for old nodes.
"""

from __future__ import annotations

import numpy as np
import torch

from graphs.delta import DeltaGraph
from graphs.samplers import split_key
from trainers.features import FeatureStore
from trainers.hetsgformer.identity import IdentityEmbedding


class InputSpace:
    """``x(keys [M]) -> [M, D + R]`` float64 (D: model dim, R: relations of the schema)."""

    def __init__(self, iel: IdentityEmbedding, features: FeatureStore, graph: DeltaGraph,
                 types: list[str], structure_weight: float = 0.1):
        self.iel, self.features, self.graph, self.types = iel, features, graph, types
        self.relations = [e.key for e in graph.schema.edge_types]
        self.structure_weight = structure_weight
        self.dim = iel.type_emb.weight.shape[1]

    def __call__(self, keys: np.ndarray) -> np.ndarray:
        t_idx, ids = split_key(keys)
        out = np.zeros((len(keys), self.dim + len(self.relations)))
        for t in np.unique(t_idx):
            sel = np.flatnonzero(t_idx == t)
            ntype = self.types[t]
            with torch.no_grad():
                x = self.iel.inputs(ntype, len(sel), self.features.gather(ntype, ids[sel])).double().numpy()
            out[sel, :self.dim] = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            if self.structure_weight:
                for etype in self.graph.edge_types_from(ntype):
                    r = self.dim + self.relations.index(etype.key)
                    out[sel, r] = self.structure_weight * np.log1p(self.graph.degree(etype.key, ids[sel])) / 4
        return out
