"""Heterogeneous GNN peers: R-GCN and HGT over the whole graph directory, trained with BPR.

They see every edge type (attributes, knowledge graph) and its reverse, with the user-item
type replaced by the split's train part: valid/test interactions never reach propagation.
Nodes get ID embeddings; two layers propagate the full graph at every step; a user-item
score is the dot product of ``x + h`` (input embedding plus layer output).

* ``rgcn``: Schlichtkrull et al. 2018, eq. 2, mean per relation plus a per-type root weight.
* ``hgt``: ``torch_geometric.nn.HGTConv`` (Hu et al. 2020).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import HeteroData
from torch_geometric.nn import HGTConv
from torch_geometric.nn.module_dict import ModuleDict  # PyG's: type names may hold "."
from torch_geometric.nn.parameter_dict import ParameterDict
from torch_geometric.utils import to_torch_csr_tensor

from graphs.exceptions import ConfigError
from graphs.store import GraphDir
from trainers.evaluation.baselines import BPRConfig, bpr_batches
from trainers.evaluation.metrics import ScoreFn
from trainers.evaluation.splits import Interactions

KINDS = ("rgcn", "hgt")


@dataclass(frozen=True)
class PeerModelConfig:
    """Layer settings; training settings are :class:`trainers.evaluation.baselines.BPRConfig`."""

    heads: int = 2  # HGT only
    dropout: float = 0.0  # on the first layer's output, while training

    def __post_init__(self) -> None:
        if self.heads < 1 or not 0 <= self.dropout < 1:
            raise ConfigError(f"heads must be >= 1 and dropout in [0, 1), got {self.heads}, {self.dropout}")


def build_hetero_data(graph_dir: str | Path, train: Interactions, etype: str) -> HeteroData:
    """Every node type (``num_nodes``) and edge type of ``graph_dir`` plus its reverse
    (``edge_index: [2, E]``), with ``etype``'s edges replaced by ``train`` [M] only."""
    g = GraphDir(graph_dir)
    target = g.schema.edge_type(etype)  # GraphFormatError naming etype and the known ones
    if target.reverse().key in {e.key for e in g.schema.edge_types}:
        raise ConfigError(f"{graph_dir} stores {target.reverse().key}, which would leak held-out interactions")
    n_src, n_dst = g.schema.node_type(target.src).count, g.schema.node_type(target.dst).count
    if (n_src, n_dst) != (train.num_users, train.num_items):
        raise ConfigError(f"{etype} joins {n_src} x {n_dst} nodes but train has "
                         f"{train.num_users} users x {train.num_items} items")
    data = HeteroData()
    for n in g.schema.node_types:
        data[n.name].num_nodes = n.count
    for e in g.schema.edge_types:
        edges = {"src": train.user, "dst": train.item} if e.key == etype else g.read_edges(e.key)
        index = torch.from_numpy(np.stack([edges["src"], edges["dst"]]).astype(np.int64))
        data[e.src, e.rel, e.dst].edge_index = index
        r = e.reverse()
        data[r.src, r.rel, r.dst].edge_index = index.flip(0)
    return data


def relation_groups(data: HeteroData) -> dict[tuple[str, str], Tensor]:
    """Row-normalised adjacencies (``A @ x_src`` = neighbour mean) of the k relations between
    each (src, dst) type pair, stacked into one sparse CSR: ``[k * N_dst, N_src]`` when
    ``N_dst <= N_src`` (the layer aggregates, then transforms), else ``[N_dst, k * N_src]``."""
    rows, cols, vals, sizes = {}, {}, {}, {}
    for (src, _, dst), index in data.edge_index_dict.items():  # index: [2, E]
        n_src, n_dst = data[src].num_nodes, data[dst].num_nodes
        j = len(rows.setdefault((src, dst), []))
        vals.setdefault((src, dst), []).append(1.0 / torch.bincount(index[1], minlength=n_dst).float()[index[1]])
        rows[src, dst].append(index[1] + (j * n_dst if n_dst <= n_src else 0))
        cols.setdefault((src, dst), []).append(index[0] + (0 if n_dst <= n_src else j * n_src))
        sizes[src, dst] = ((j + 1) * n_dst, n_src) if n_dst <= n_src else (n_dst, (j + 1) * n_src)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse (CSR tensor support|invariant checks)")
        return {g: to_torch_csr_tensor(torch.stack([torch.cat(rows[g]), torch.cat(cols[g])]), torch.cat(vals[g]),
                                       size=sizes[g]) for g in rows}


class RGCNLayer(nn.Module):
    """``h'_v = W_type(v) h_v + sum_r W_r mean_{u in N_r(v)} h_u`` (Schlichtkrull et al. 2018, eq. 2).

    PyG's ``RGCNConv`` and ``HeteroConv(SAGEConv)`` apply each relation's weight to [N_dst, D]:
    with 22 relations into 33k KG entities, ~1.3 s a step on one core. Here the relations of
    a type pair share one sparse matmul, weights on the smaller side (``(A x) W = A (x W)``).

    Shapes: x: ``{t: [N_t, D]}``, groups: :func:`relation_groups` -> ``{t: [N_t, D]}`` for
    the types that receive a relation.
    """

    def __init__(self, node_types: list[str], groups: dict[tuple[str, str], int], dim: int):
        super().__init__()
        self.root = ModuleDict({t: nn.Linear(dim, dim) for t in node_types})
        bound = dim ** -0.5  # nn.Linear's init
        self.rel = ParameterDict({f"{s}__{d}": nn.Parameter(torch.empty(k, dim, dim).uniform_(-bound, bound))
                                  for (s, d), k in groups.items()})  # [k, D, D], k relations from s to d

    def forward(self, x: dict[str, Tensor], groups: dict[tuple[str, str], Tensor]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for (src, dst), a in groups.items():
            w = self.rel[f"{src}__{dst}"]
            (k, dim, _), n_src, n_dst = w.shape, len(x[src]), len(x[dst])
            if n_dst <= n_src:
                msg = torch.einsum("knd,kde->ne", (a @ x[src]).view(k, n_dst, dim), w)  # [N_dst, D]
            else:
                msg = a @ torch.einsum("nd,kde->kne", x[src], w).reshape(k * n_src, dim)
            out[dst] = out[dst] + msg if dst in out else self.root[dst](x[dst]) + msg
        return out


class FastHGTConv(HGTConv):
    """``HGTConv`` with each relation's key/value transform applied only to the nodes that
    send an edge of that relation. Same weights, same result (tests check it against
    ``HGTConv``, as this overrides a private method of PyG 2.5-2.8).

    Stock ``HGTConv`` without ``pyg_lib`` transforms every node of the source type for each
    relation (22 relations from 33k KG entities) through ``HeteroLinear`` slices of one
    [heads * sum_e N_src(e), D/heads] tensor whose backward each allocates the whole
    tensor: ~90 s a step on ml-100k, against ~1.5 s here.
    """

    def forward(self, x_dict: dict[str, Tensor], edge_index_dict: dict[tuple, Tensor]) -> dict[str, Tensor]:
        self._senders, local = {}, {}
        for edge_type, index in edge_index_dict.items():  # index: [2, E]
            self._senders[edge_type], src = index[0].unique(return_inverse=True)  # [S], [E] in [0, S)
            local[edge_type] = torch.stack([src, index[1]])
        return super().forward(x_dict, local)

    def _construct_src_node_feat(self, k_dict, v_dict, edge_index_dict):
        h, d, n_types = self.heads, self.out_channels // self.heads, len(self.edge_types)
        w_k = self.k_rel.weight.view(h, n_types, d, d)  # type id = head * n_types + edge type id
        w_v = self.v_rel.weight.view(h, n_types, d, d)
        ks, vs, offset, cumsum = [], [], {}, 0
        for src in dict.fromkeys(e[0] for e in edge_index_dict):
            types = [e for e in edge_index_dict if e[0] == src]
            sizes = [len(self._senders[e]) for e in types]
            senders = torch.cat([self._senders[e] for e in types])  # one gather per type, so
            k_src, v_src = k_dict[src][senders], v_dict[src][senders]  # one [N_src, H, d] grad
            for e, k, v in zip(types, k_src.split(sizes), v_src.split(sizes)):  # [S_e, H, d] each
                i = self.edge_types_map[e]
                offset[e], cumsum = cumsum, cumsum + len(k)
                ks.append(torch.einsum("nhd,hde->nhe", k, w_k[:, i]))
                vs.append(torch.einsum("nhd,hde->nhe", v, w_v[:, i]))
        return torch.cat(ks), torch.cat(vs), offset


class HeteroPeer(nn.Module):
    """ID embeddings, two heterogeneous layers, skip from the input: ``x + layer2(layer1(x))``.

    The last layer keeps only the relations into ``out_types`` (user and item): nothing
    else reaches the score, and the KG entities' 22 relations are most of the cost.

    Shapes: graph: :func:`relation_groups` (rgcn) or ``edge_index_dict`` (hgt) ->
    ``{t: [N_t, D]}`` for ``out_types``.
    """

    def __init__(self, data: HeteroData, kind: str, dim: int, out_types: tuple[str, str], config: PeerModelConfig):
        super().__init__()
        node_types, edge_types = data.metadata()
        self.out_types, self.dropout = out_types, config.dropout
        self.emb = ModuleDict({t: nn.Embedding(data[t].num_nodes, dim) for t in node_types})
        for e in self.emb.values():
            nn.init.normal_(e.weight, std=0.1)
        if kind == "rgcn":
            pairs = Counter((s, d) for s, _, d in edge_types)
            last = {p: k for p, k in pairs.items() if p[1] in out_types}
            self.convs = nn.ModuleList([RGCNLayer(node_types, pairs, dim), RGCNLayer(node_types, last, dim)])
        else:
            last = [e for e in edge_types if e[2] in out_types]
            self.convs = nn.ModuleList([FastHGTConv(dim, dim, (node_types, edge_types), config.heads),
                                        FastHGTConv(dim, dim, (node_types, last), config.heads)])

    def forward(self, graph: dict) -> dict[str, Tensor]:
        x = {t: e.weight for t, e in self.emb.items()}  # {t: [N_t, D]}
        h = {t: F.dropout(torch.relu(v), self.dropout, self.training) for t, v in self.convs[0](x, graph).items()}
        h = {t: h.get(t, x[t]) for t in x}  # types no relation reaches keep their input
        last = {e: a for e, a in graph.items() if e[-1] in self.out_types}  # e: (src, dst) or (src, rel, dst)
        h = self.convs[1](h, last)
        return {t: x[t] + h[t] for t in self.out_types}


def fit_hetero_peer(train: Interactions, seed: int, graph_dir: str | Path, etype: str, kind: str = "rgcn", config: BPRConfig | None = None,
                    model_config: PeerModelConfig | None = None) -> ScoreFn:
    """BPR on ``train``: a full-graph forward per batch, Adam, lr decayed by a cosine (without
    it the last epoch's valid NDCG@10 swings by +-0.02). Returns ``users [B] -> [B, N]``."""
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {KINDS}, got {kind!r}")
    config, model_config = config or DEFAULTS[kind][0], model_config or DEFAULTS[kind][1]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = build_hetero_data(graph_dir, train, etype)
    user_t, _, item_t = etype.split("__")  # names cannot hold "__" (graphs.schema)
    graph = relation_groups(data) if kind == "rgcn" else data.edge_index_dict
    model = HeteroPeer(data, kind, config.dim, (user_t, item_t), model_config)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps = config.epochs * math.ceil(len(train) / config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(config.epochs):
        for user, pos, neg in bpr_batches(train, config.batch_size, rng):
            out = model(graph)
            u, p, n = out[user_t][user], out[item_t][pos], out[item_t][neg]  # [B, D] each
            loss = -F.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()
            x_u, x_p, x_n = model.emb[user_t](user), model.emb[item_t](pos), model.emb[item_t](neg)
            reg = (x_u.pow(2).sum() + x_p.pow(2).sum() + x_n.pow(2).sum()) / len(user)  # as MF-BPR
            opt.zero_grad()
            (loss + config.weight_decay * reg).backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        out = model(graph)
    user_emb, item_emb = out[user_t], out[item_t]  # [U, D], [N, D]
    return lambda users: user_emb[users] @ item_emb.T


# Picked on ml-100k valid NDCG@10 (random split, seed 0), one thread while another job held
# the second core. R-GCN (fit 52 s): 12 epochs of 4096 at 1e-2, dropout 0.4 (0.217); without
# dropout it overfits (15 epochs: 0.206 at 5e-3, 0.195 at 1e-2); dropout 0.2 at 5e-3: 0.218 in
# 15 epochs. A full-graph step costs ~0.2 s (R-GCN) or ~1.6 s (HGT) whatever the batch, so HGT
# (fit 67 s) gets 40 full batches at 3e-2 (0.154); 8 epochs of 16384 at 3e-2: 0.148; 32 full
# batches: 0.128; 4e-2 is unstable (0.093). Cosine decay added 0.01-0.03 over a constant lr.
DEFAULTS = {"rgcn": (BPRConfig(epochs=12, batch_size=4096, lr=1e-2), PeerModelConfig(dropout=0.4)),
            "hgt": (BPRConfig(epochs=40, batch_size=1 << 17, lr=3e-2), PeerModelConfig())}

HETERO_PEERS = {kind: partial(fit_hetero_peer, kind=kind) for kind in KINDS}
