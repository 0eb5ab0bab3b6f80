"""HetSGFormer's mixing layers: GAL (global attention), EAL (edge attention), GCN branch.

Edges follow :class:`graphs.samplers.SampledSubgraph`: ``edges[ekey]: [2, E]`` with row 0
indexing ``nodes[src]`` and row 1 ``nodes[dst]`` of ``ekey = "src__rel__dst"``; messages
flow dst -> src, towards the seeds.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax

from graphs.exceptions import ConfigError
from trainers.hetsgformer.config import GAL_KINDS


class GlobalAttention(nn.Module):
    """All-pair linear attention over the N nodes of a batch, in O(N * D^2) time and memory.

    ``kind="sgformer"`` is SGFormer's (Wu et al. 2023, qitianwu/SGFormer ``large/ours.py``)::

        Q~ = Q / ||Q||_F,  K~ = K / ||K||_F
        out = (Q~ (K~^T V) + N V) / (N + Q~ (K~^T 1))

    whose cross-node part is ~1/N of the output (ALGORITHMS.md, "The catch").
    ``kind="kernel"`` is linear attention with ``phi(x) = elu(x) + 1`` (Katharopoulos et al.
    2020, eq. 4-6): ``out_i = phi(q_i) (phi(K)^T V) / (phi(q_i) phi(K)^T 1)``, a per-row
    convex mix of all nodes. ``kind="none"`` returns ``x``. Neither kind ever forms an
    ``[N, N]`` tensor: ``K^T V`` is ``[D, D]``.

    Shapes: x: ``[N, D]`` -> ``[N, D]``. Output: ``layernorm(beta * attn + (1 - beta) * x)``.
    """

    def __init__(self, dim: int, kind: str = "kernel", beta: float = 0.5, dropout: float = 0.0):
        super().__init__()
        if kind not in GAL_KINDS:
            raise ConfigError(f"kind must be one of {GAL_KINDS}, got {kind!r}")
        self.kind, self.beta = kind, beta
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "none":
            return x
        q, k, v = self.qkv(x).chunk(3, dim=-1)                        # each [N, D]
        attn = self._sgformer(q, k, v) if self.kind == "sgformer" else self._kernel(q, k, v)
        return self.norm(self.beta * self.dropout(attn) + (1 - self.beta) * x)

    @staticmethod
    def _sgformer(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        n = q.shape[0]
        q, k = q / q.norm(), k / k.norm()                             # whole-tensor Frobenius norm
        num = q @ (k.t() @ v) + n * v                                 # [N, D]; k.t() @ v is [D, D]
        den = n + q @ k.sum(0, keepdim=True).t()                      # [N, 1]
        return num / den

    @staticmethod
    def _kernel(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        q, k = F.elu(q) + 1, F.elu(k) + 1                             # positive features
        num = q @ (k.t() @ v)                                         # [N, D]
        den = q @ k.sum(0, keepdim=True).t()                          # [N, 1], > 0
        return num / den.clamp(min=1e-6)


def split_key(ekey: str) -> tuple[str, str, str]:
    """``"src__rel__dst"`` -> ``(src, rel, dst)``; names never contain ``__`` (schema.py)."""
    parts = ekey.split("__")
    if len(parts) != 3:
        raise ConfigError(f"edge key {ekey!r} is not of the form 'src__rel__dst'")
    return parts[0], parts[1], parts[2]


class EdgeAttention(nn.Module):
    """EAL: type-aware multi-head attention over each node's sampled neighbours.

    For a receiver ``s`` of type A and an edge ``(s, d)`` of relation r (d of type B):
    ``score = <Wq_A x_s, Wk_r x_d> / sqrt(D/H)``, softmax over all of ``s``'s incoming
    edges of every relation jointly (as HGT, Hu et al. 2020 Sec. 3.2), message ``Wv_r x_d``.
    ``out_A = layernorm(x_A + Wo_A(gelu(agg)))``; a node with no neighbours keeps ``x_A``
    plus a bias.

    Shapes: x_dict ``{t: [N_t, D]}``, edge_index_dict ``{ekey: [2, E]}`` -> ``{t: [N_t, D]}``.
    """

    def __init__(self, node_types: list[str], relations: list[str], dim: int,
                 heads: int = 2, dropout: float = 0.0):
        super().__init__()
        self.types = {t: i for i, t in enumerate(node_types)}
        self.rels = {r: i for i, r in enumerate(relations)}
        self.heads, self.dh = heads, dim // heads
        self.q = nn.ModuleList(nn.Linear(dim, dim) for _ in node_types)
        self.o = nn.ModuleList(nn.Linear(dim, dim) for _ in node_types)
        self.norm = nn.ModuleList(nn.LayerNorm(dim) for _ in node_types)
        self.kv = nn.ModuleList(nn.Linear(dim, 2 * dim) for _ in relations)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x_dict: dict[str, Tensor], edge_index_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for t, x in x_dict.items():
            i = self.types[t]
            agg = self._aggregate(t, self.q[i](x), x_dict, edge_index_dict)   # [N_t, D]
            out[t] = self.norm[i](x + self.dropout(self.o[i](F.gelu(agg))))
        return out

    def _aggregate(self, t: str, q: Tensor, x_dict, edge_index_dict) -> Tensor:
        """Attention-weighted sum of incoming messages, ``[N_t, D]``."""
        n, H, dh = q.shape[0], self.heads, self.dh
        recv, scores, msgs = [], [], []
        for ekey, ei in edge_index_dict.items():
            src, _, dst = split_key(ekey)
            if src != t or ei.shape[1] == 0:
                continue
            k, v = self.kv[self._rel(ekey)](x_dict[dst][ei[1]]).chunk(2, dim=-1)  # [E, D]
            qe = q[ei[0]].view(-1, H, dh)
            scores.append((qe * k.view(-1, H, dh)).sum(-1) / math.sqrt(dh))      # [E, H]
            msgs.append(v.view(-1, H, dh))
            recv.append(ei[0])
        if not recv:
            return q.new_zeros(q.shape)
        index = torch.cat(recv)
        alpha = self.dropout(softmax(torch.cat(scores), index, num_nodes=n))     # [E, H]
        agg = scatter(alpha[..., None] * torch.cat(msgs), index, dim=0, dim_size=n, reduce="sum")
        return agg.reshape(n, H * dh)

    def _rel(self, ekey: str) -> int:
        if ekey not in self.rels:
            raise ConfigError(f"edge type {ekey!r} is not in the model's relations {list(self.rels)}")
        return self.rels[ekey]


class HeteroGCN(nn.Module):
    """SGFormer's GCN branch, made heterogeneous with one weight per relation.

    ``h0 = relu(layernorm(W_in x))``; each round ``a_s = (h_s + sum_r sum_{d in N_r(s)}
    W_r h_d) / (1 + deg_s)`` (mean over the node and its neighbours, the self-loop of
    SGFormer's Â), then ``h = relu(layernorm(W_t [a || h0])) + h0``. LayerNorm replaces
    SGFormer's BatchNorm so a node's output does not depend on the rest of the mini-batch.

    Shapes: x_dict ``{t: [N_t, D]}``, edge_index_dict ``{ekey: [2, E]}`` -> ``{t: [N_t, D]}``.
    """

    def __init__(self, node_types: list[str], relations: list[str], dim: int,
                 num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.types = {t: i for i, t in enumerate(node_types)}
        self.rels = {r: i for i, r in enumerate(relations)}
        T, R = len(node_types), len(relations)
        self.inp = nn.ModuleList(nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim)) for _ in range(T))
        self.rel = nn.ModuleList(
            nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(R)) for _ in range(num_layers))
        self.mix = nn.ModuleList(
            nn.ModuleList(nn.Sequential(nn.Linear(2 * dim, dim), nn.LayerNorm(dim)) for _ in range(T))
            for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x_dict: dict[str, Tensor], edge_index_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        h0 = {t: self.dropout(F.relu(self.inp[self.types[t]](x))) for t, x in x_dict.items()}
        h = h0
        for rel_w, mix in zip(self.rel, self.mix):
            agg = self._propagate(h, edge_index_dict, rel_w)
            h = {t: self.dropout(F.relu(mix[self.types[t]](torch.cat([agg[t], h0[t]], -1)))) + h0[t]
                 for t in h}
        return h

    def _propagate(self, h: dict[str, Tensor], edge_index_dict, rel_w: nn.ModuleList) -> dict[str, Tensor]:
        """Mean over self and all typed neighbours, ``{t: [N_t, D]}``."""
        total = {t: x.clone() for t, x in h.items()}
        deg = {t: x.new_ones(x.shape[0], 1) for t, x in h.items()}
        for ekey, ei in edge_index_dict.items():
            src, _, dst = split_key(ekey)
            if ekey not in self.rels:
                raise ConfigError(f"edge type {ekey!r} is not in the model's relations {list(self.rels)}")
            n = h[src].shape[0]
            total[src] = total[src] + scatter(rel_w[self.rels[ekey]](h[dst][ei[1]]), ei[0],
                                              dim=0, dim_size=n, reduce="sum")
            deg[src] = deg[src] + scatter(ei.new_ones(ei.shape[1]).float(), ei[0],
                                          dim=0, dim_size=n, reduce="sum")[:, None]
        return {t: total[t] / deg[t] for t in h}
