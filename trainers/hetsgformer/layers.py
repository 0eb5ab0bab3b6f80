"""HetSGFormer's mixing layers: GAL (global attention), EAL (edge attention), GCN branch.

Edges follow :class:`graphs.samplers.SampledSubgraph`: ``edges[ekey]: [2, E]`` with row 0
indexing ``nodes[src]`` and row 1 ``nodes[dst]`` of ``ekey = "src__rel__dst"``; messages
flow dst -> src, towards the seeds. EAL and GCN work on the batch flattened over types
(:class:`TypedGraph`), so a step costs a few kernels whatever the number of relations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
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

    def forward(self, x: Tensor, context: dict[str, Tensor] | None = None) -> Tensor:
        """``context``: the key/value summary to attend over (:meth:`summary`, summed over any
        set of nodes, e.g. the whole graph at inference); None: the batch ``x`` itself."""
        if self.kind == "none":
            return x
        q, k, v = self.qkv(x).chunk(3, dim=-1)                        # each [N, D]
        ctx = context if context is not None else self._stats(k, v, q)
        attn = self._sgformer(q, v, ctx) if self.kind == "sgformer" else self._kernel(q, ctx)
        return self.norm(self.beta * self.dropout(attn) + (1 - self.beta) * x)

    def summary(self, x: Tensor) -> dict[str, Tensor] | None:
        """What the attention needs from the nodes attended over, additive across node sets:
        ``kv: [D, D]`` (keys^T values), ``k: [D]`` (sum of keys), ``n``, ``qq``, ``kk`` (count
        and squared Frobenius norms of queries and keys, for ``kind="sgformer"``). None for "none"."""
        if self.kind == "none":
            return None
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self._stats(k, v, q)

    def _stats(self, k: Tensor, v: Tensor, q: Tensor) -> dict[str, Tensor]:
        if self.kind == "kernel":
            k = F.elu(k) + 1                                          # positive features
        return {"kv": k.t() @ v, "k": k.sum(0), "n": k.new_tensor(float(k.shape[0])),
                "qq": q.pow(2).sum(), "kk": k.pow(2).sum()}

    @staticmethod
    def _sgformer(q: Tensor, v: Tensor, ctx: dict[str, Tensor]) -> Tensor:
        q, kn = q / ctx["qq"].sqrt(), ctx["kk"].sqrt()                # whole-tensor Frobenius norms
        num = q @ (ctx["kv"] / kn) + ctx["n"] * v                     # [N, D]
        den = ctx["n"] + q @ (ctx["k"][:, None] / kn)                 # [N, 1]
        return num / den

    @staticmethod
    def _kernel(q: Tensor, ctx: dict[str, Tensor]) -> Tensor:
        q = F.elu(q) + 1
        num = q @ ctx["kv"]                                           # [N, D]
        den = q @ ctx["k"][:, None]                                   # [N, 1], > 0
        return num / den.clamp(min=1e-6)


def split_key(ekey: str) -> tuple[str, str, str]:
    """``"src__rel__dst"`` -> ``(src, rel, dst)``; names never contain ``__`` (schema.py)."""
    parts = ekey.split("__")
    if len(parts) != 3:
        raise ConfigError(f"edge key {ekey!r} is not of the form 'src__rel__dst'")
    return parts[0], parts[1], parts[2]


@dataclass
class TypedGraph:
    """A sampled subgraph flattened over types, so each layer runs one kernel per step for
    all relations (:class:`TypedLinear` for the typed weights, one softmax, one scatter).

    Nodes of type ``types[t]`` are rows ``ptr[t]:ptr[t+1]`` of one ``[N, D]`` tensor;
    ``node_type: [N]`` (sorted). Edge e carries a message from row ``dst[e]`` to row
    ``src[e]`` through relation ``rel[e]`` (``rels`` index, sorted). ``inv_deg: [N, 1]`` is
    ``1 / (1 + in-messages)``. ``node_ends: [T]`` / ``edge_ends: [R]`` (int32) are where each
    type's rows / each relation's edges end, the group offsets of :func:`grouped_matmul`.
    """

    types: list[str]
    ptr: list[int]
    node_type: Tensor
    src: Tensor
    dst: Tensor
    rel: Tensor
    inv_deg: Tensor
    node_ends: Tensor
    edge_ends: Tensor

    @classmethod
    def build(cls, sizes: dict[str, int], edges: dict[str, np.ndarray | Tensor], types: list[str],
              rels: list[str], device=None) -> TypedGraph:
        """``sizes[t]`` nodes of each type present, ``edges[ekey]: [2, E]`` local indices (row 0
        into ``src``, row 1 into ``dst`` of ``ekey``, as :class:`graphs.samplers.SampledSubgraph`)."""
        for t in sizes:
            if t not in types:
                raise ConfigError(f"node type {t!r} is not in the model's types {types}")
        counts = [int(sizes.get(t, 0)) for t in types]
        ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        rel_index = {r: i for i, r in enumerate(rels)}
        src, dst, rel = [], [], []
        for ekey in sorted(edges, key=lambda k: rel_index.get(k, -1)):
            if ekey not in rel_index:
                raise ConfigError(f"edge type {ekey!r} is not in the model's relations {rels}")
            ei = np.asarray(edges[ekey].cpu() if isinstance(edges[ekey], Tensor) else edges[ekey], dtype=np.int64)
            s, _, d = split_key(ekey)
            src.append(ei[0] + ptr[types.index(s)])
            dst.append(ei[1] + ptr[types.index(d)])
            rel.append(np.full(ei.shape[1], rel_index[ekey], dtype=np.int64))
        src, dst, rel = (np.concatenate(a) if a else np.zeros(0, np.int64) for a in (src, dst, rel))
        n = int(ptr[-1])
        inv_deg = 1.0 / (1.0 + np.bincount(src, minlength=n).astype(np.float32))
        edge_ends = np.cumsum(np.bincount(rel, minlength=len(rels)))
        t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
        return cls(list(types), ptr.tolist(), t(np.repeat(np.arange(len(types)), counts)), t(src), t(dst), t(rel),
                   t(inv_deg)[:, None], t(ptr[1:].astype(np.int32)), t(edge_ends.astype(np.int32)))

    def flat(self, x_dict: dict[str, Tensor]) -> Tensor:
        """``{t: [N_t, D]}`` -> ``[N, D]`` in type order."""
        return torch.cat([x_dict[t] for t in self.types if t in x_dict])

    def split(self, x: Tensor, keys) -> dict[str, Tensor]:
        """Inverse of :meth:`flat` for the types ``keys``: ``[N, D]`` -> ``{t: [N_t, D]}``."""
        i = {t: k for k, t in enumerate(self.types)}
        return {t: x[self.ptr[i[t]]:self.ptr[i[t] + 1]] for t in keys}


_GROUPED_FAILED: set[tuple[str, torch.dtype]] = set()


def grouped_matmul(x: Tensor, weight: Tensor, ends: Tensor) -> Tensor:
    """Row group g of ``x`` times ``weight[g]``: ``x: [M, I]`` (rows sorted by group),
    ``weight: [G, I, O]``, ``ends: [G]`` int32 (group g is rows ``ends[g-1]:ends[g]``) -> ``[M, O]``.

    One ``torch._grouped_mm`` kernel forward and backward (torch's grouped GEMM) where the
    device and dtype take it; else one matmul per non-empty group, concatenated.
    """
    key = (x.device.type, x.dtype)
    aligned = all(n * x.element_size() % 16 == 0 for n in (x.shape[1], weight.shape[2]))  # its row rule
    if aligned and key not in _GROUPED_FAILED and hasattr(torch, "_grouped_mm"):
        try:
            return torch._grouped_mm(x, weight, offs=ends)
        except RuntimeError:      # a device or dtype without grouped GEMM: remember, use the loop
            _GROUPED_FAILED.add(key)
    bounds = [0, *ends.tolist()]
    parts = [x[a:b] @ weight[g] for g, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])) if b > a]
    return torch.cat(parts) if parts else x.new_zeros(0, weight.shape[2])


class TypedLinear(nn.Module):
    """A linear layer with one weight (and bias) per type, over rows sorted by type.

    Shapes: x ``[M, I]``, ends ``[G]`` (:func:`grouped_matmul`), types ``[M]`` -> ``[M, O]``.
    Initialised per type as ``nn.Linear``.
    """

    def __init__(self, num_types: int, in_dim: int, out_dim: int, bias: bool = True):
        super().__init__()
        bound = 1 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(num_types, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_types, out_dim).uniform_(-bound, bound)) if bias else None

    def forward(self, x: Tensor, ends: Tensor, types: Tensor) -> Tensor:
        out = grouped_matmul(x, self.weight, ends)
        return out if self.bias is None else out + self.bias[types]


class TypedLayerNorm(nn.Module):
    """LayerNorm with one affine pair per node type: ``x: [N, D]``, ``node_type: [N]`` -> ``[N, D]``."""

    def __init__(self, num_types: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_types, dim))
        self.bias = nn.Parameter(torch.zeros(num_types, dim))

    def forward(self, x: Tensor, node_type: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:]) * self.weight[node_type] + self.bias[node_type]


class EdgeAttention(nn.Module):
    """EAL: type-aware multi-head attention over each node's sampled neighbours.

    For a receiver ``s`` of type A and an edge ``(s, d)`` of relation r (d of type B):
    ``score = <Wq_A x_s, Wk_r x_d> / sqrt(D/H)``, softmax over all of ``s``'s incoming
    edges of every relation jointly (as HGT, Hu et al. 2020 Sec. 3.2), message ``Wv_r x_d``.
    ``out_A = layernorm_A(x_A + Wo_A(gelu(agg)))``; a node with no neighbours keeps ``x_A``
    plus a bias. Typed weights are :class:`TypedLinear` over rows sorted by type.

    Shapes: x ``[N, D]`` (rows of a :class:`TypedGraph`) -> ``[N, D]``.
    """

    def __init__(self, node_types: list[str], relations: list[str], dim: int,
                 heads: int = 2, dropout: float = 0.0):
        super().__init__()
        T, R = len(node_types), len(relations)
        self.heads, self.dh = heads, dim // heads
        self.q = TypedLinear(T, dim, dim)
        self.o = TypedLinear(T, dim, dim)
        self.norm = TypedLayerNorm(T, dim)
        self.kv = TypedLinear(R, dim, 2 * dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, g: TypedGraph) -> Tensor:
        N, E, H, dh = x.shape[0], g.src.shape[0], self.heads, self.dh
        q = self.q(x, g.node_ends, g.node_type)                               # [N, D]
        k, v = self.kv(x[g.dst], g.edge_ends, g.rel).chunk(2, dim=-1)         # [E, D] each
        score = (q[g.src].view(E, H, dh) * k.reshape(E, H, dh)).sum(-1) / math.sqrt(dh)   # [E, H]
        alpha = self.dropout(softmax(score, g.src, num_nodes=N))              # [E, H]
        agg = scatter(alpha[..., None] * v.reshape(E, H, dh), g.src, dim=0, dim_size=N, reduce="sum")
        h = self.o(F.gelu(agg.reshape(N, H * dh)), g.node_ends, g.node_type)
        return self.norm(x + self.dropout(h), g.node_type)


class HeteroGCN(nn.Module):
    """SGFormer's GCN branch, made heterogeneous with one weight per relation.

    ``h0 = relu(layernorm(W_in x))``; each round ``a_s = (h_s + sum_r sum_{d in N_r(s)}
    W_r h_d) / (1 + deg_s)`` (mean over the node and its neighbours, the self-loop of
    SGFormer's Â), then ``h = relu(layernorm(W_t [a || h0])) + h0``. LayerNorm replaces
    SGFormer's BatchNorm so a node's output does not depend on the rest of the mini-batch.
    Weights are per node type (``W_in``, ``W_t``, the norms) or per relation (``W_r``).

    Shapes: x ``[N, D]`` (rows of a :class:`TypedGraph`) -> ``[N, D]``.
    """

    def __init__(self, node_types: list[str], relations: list[str], dim: int,
                 num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        T, R = len(node_types), len(relations)
        self.inp = TypedLinear(T, dim, dim)
        self.inp_norm = TypedLayerNorm(T, dim)
        self.rel = nn.ModuleList(TypedLinear(R, dim, dim, bias=False) for _ in range(num_layers))
        self.mix = nn.ModuleList(TypedLinear(T, 2 * dim, dim) for _ in range(num_layers))
        self.mix_norm = nn.ModuleList(TypedLayerNorm(T, dim) for _ in range(num_layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, g: TypedGraph) -> Tensor:
        t, ends = g.node_type, g.node_ends
        h0 = self.dropout(F.relu(self.inp_norm(self.inp(x, ends, t), t)))
        h = h0
        for rel_w, mix, norm in zip(self.rel, self.mix, self.mix_norm):
            msg = rel_w(h[g.dst], g.edge_ends, g.rel)                           # [E, D]
            total = h + scatter(msg, g.src, dim=0, dim_size=h.shape[0], reduce="sum")
            h = self.dropout(F.relu(norm(mix(torch.cat([total * g.inv_deg, h0], -1), ends, t), t))) + h0
        return h


class LightPropagation(nn.Module):
    """A parameter-free GCN branch in the manner of LightGCN (He et al. 2020): each round
    ``h_s = (h_s + sum_{d in N(s)} h_d) / (1 + deg_s)`` over every relation of the sampled
    graph (the mean over the node and its neighbours), and the output is the mean of the
    input and every round's ``h``. No weights, no non-linearity: what the branch adds is the
    neighbourhood itself. Shapes: x ``[N, D]`` (rows of a :class:`TypedGraph`) -> ``[N, D]``.
    """

    def __init__(self, num_layers: int = 1):
        super().__init__()
        self.num_layers = num_layers

    def forward(self, x: Tensor, g: TypedGraph) -> Tensor:
        h, total = x, x
        for _ in range(self.num_layers):
            h = (h + scatter(h[g.dst], g.src, dim=0, dim_size=h.shape[0], reduce="sum")) * g.inv_deg
            total = total + h
        return total / (1 + self.num_layers)
