"""LERG on LightGCN's propagation: pretrain the quantised compositional table on the full
graph, rewire, fine-tune the retained entities on the rewired graph.

    state = fit_lerg(train, seed=0, cfg=LERGConfig())
    score = state.score_fn()          # users [B] -> [B, N]
    state.final()                     # [U + N, D], what the device bundle encodes

Entities are users ``[0, U)`` and items ``[U, U + N)``; propagation is LightGCN's (mean of
layers 0..L of the symmetrically normalised bipartite adjacency), trained with BPR and L2 on
the batch's layer-0 rows, on the same batches as the baselines
(:func:`trainers.evaluation.baselines.bpr_batches`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from graphs.exceptions import ConfigError
from trainers.evaluation.baselines import bpr_batches
from trainers.evaluation.metrics import ScoreFn
from trainers.evaluation.splits import Interactions
from trainers.lerg.codebook import CodebookConfig, CompositionalTable, fake_quant, graph_assignment
from trainers.lerg.rewire import (RewireConfig, contribution, macs, placeholder_codebook, rewired,
                                  select_retained)


@dataclass(frozen=True)
class LERGConfig:
    """Pretraining (``epochs``) then fine-tuning on the rewired graph (``finetune_epochs``;
    none when ``rewire.retention`` is 1). ``batch_size`` grows so an epoch takes at most
    ``max_steps_per_epoch`` steps (as the LightGCN baseline's)."""

    table: CodebookConfig = field(default_factory=CodebookConfig)
    rewire: RewireConfig = field(default_factory=RewireConfig)
    layers: int = 3
    epochs: int = 40
    finetune_epochs: int = 10
    lr: float = 1e-2
    weight_decay: float = 1e-4
    batch_size: int = 2048
    max_steps_per_epoch: int = 64

    def __post_init__(self) -> None:
        if self.layers < 0 or self.epochs < 1 or self.finetune_epochs < 0:
            raise ConfigError(f"layers, epochs and finetune_epochs must be >= 0, >= 1, >= 0, got "
                              f"{self.layers}, {self.epochs}, {self.finetune_epochs}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(f"lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")


def bipartite_norm(train: Interactions) -> sp.csr_matrix:
    """LightGCN's D^-1/2 A D^-1/2 over distinct pairs: [U + N, U + N] float32."""
    u, i = train.user, train.item + train.num_users
    n = train.num_users + train.num_items
    a = sp.coo_matrix((np.ones(2 * len(u), dtype=np.float32), (np.concatenate([u, i]), np.concatenate([i, u]))),
                      shape=(n, n)).tocsr()
    a.data[:] = 1.0
    d = np.asarray(a.sum(1)).ravel().clip(min=1) ** -0.5
    return (sp.diags(d.astype(np.float32)) @ a @ sp.diags(d.astype(np.float32))).tocsr()


def to_torch(adj: sp.csr_matrix) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse (CSR tensor support|invariant checks)")
        return torch.sparse_csr_tensor(torch.from_numpy(adj.indptr.astype(np.int64)),
                                       torch.from_numpy(adj.indices.astype(np.int64)),
                                       torch.from_numpy(adj.data.astype(np.float32)), size=adj.shape)


def propagate(emb0: torch.Tensor, adj: torch.Tensor, layers: int) -> torch.Tensor:
    """Mean of layers 0..L: emb0 [E, D], adj sparse [E, E] -> [E, D]."""
    out, h = emb0, emb0
    for _ in range(layers):
        h = adj @ h
        out = out + h
    return out / (layers + 1)


@dataclass
class LERGState:
    """A trained model. ``retained`` [E] bool; pruned entities' layer-0 rows are
    ``placeholders`` [K, D] at ``placeholder_of`` [E] (-1 for retained ones)."""

    table: CompositionalTable
    adj: sp.csr_matrix  # the rewired propagation matrix [E, E]
    full_macs: int
    retained: np.ndarray
    placeholders: np.ndarray
    placeholder_of: np.ndarray
    num_users: int
    layers: int
    degree: np.ndarray  # [E] degrees of the full graph (symmetric: what each entity sends and receives)

    @property
    def bits(self) -> int | None:
        return self.table.bits

    def layer0(self) -> torch.Tensor:
        """[E, D]: the composed rows, pruned ones replaced by their (quantised) placeholder."""
        emb = self.table()
        pruned = torch.from_numpy(~self.retained)
        if pruned.any():
            ph = fake_quant(torch.from_numpy(self.placeholders), self.bits)
            emb = emb.clone()
            emb[pruned] = ph[torch.from_numpy(self.placeholder_of[~self.retained])]
        return emb

    def final(self) -> torch.Tensor:
        """Propagated embeddings [E, D], no gradient."""
        with torch.no_grad():
            return propagate(self.layer0(), to_torch(self.adj), self.layers)

    def macs(self) -> int:
        return macs(self.adj, self.layers, self.table.codebook.shape[1])

    def score_fn(self) -> ScoreFn:
        emb = self.final()
        users, items = emb[:self.num_users], emb[self.num_users:]
        return lambda u: users[u] @ items.T


def lerg_config(name: str) -> LERGConfig:
    """The evaluation model ``name``: ``lerg`` (defaults), ``lerg-int4|8|16`` (bits),
    ``lerg-r1.0|0.7|0.5`` (retention), or both (``lerg-int4-r0.5``)."""
    cfg, parts = LERGConfig(), name.split("-")
    if parts[0] != "lerg":
        raise ConfigError(f"not a LERG model name: {name!r}")
    for part in parts[1:]:
        try:
            if part.startswith("int"):
                cfg = replace(cfg, table=replace(cfg.table, bits=int(part[3:])))
            elif part.startswith("r"):
                cfg = replace(cfg, rewire=replace(cfg.rewire, retention=float(part[1:])))
            else:
                raise ValueError(part)
        except ValueError:
            raise ConfigError(f"bad LERG model {name!r} at {part!r}: use lerg[-int4|8|16][-rRETENTION]") from None
    return cfg


def _train(state: LERGState, train: Interactions, epochs: int, cfg: LERGConfig, rng: np.random.Generator,
           log=None, stage: str = "pretrain") -> None:
    adj = to_torch(state.adj)
    opt = torch.optim.Adam([p for p in state.table.parameters() if p.requires_grad], lr=cfg.lr)
    n_users, batch = train.num_users, max(cfg.batch_size, -(-len(train) // cfg.max_steps_per_epoch))
    for epoch in range(epochs):
        total, steps = 0.0, 0
        for user, pos, neg in bpr_batches(train, batch, rng):
            emb0 = state.layer0()  # [E, D]
            emb = propagate(emb0, adj, cfg.layers)
            ids = torch.cat([user, pos + n_users, neg + n_users])
            u, p, n = emb[user], emb[pos + n_users], emb[neg + n_users]
            loss = -F.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()
            loss = loss + cfg.weight_decay * emb0[ids].pow(2).sum() / (2 * len(user))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, steps = total + loss.detach().item(), steps + 1
        if log:
            log(f"lerg {stage} epoch {epoch + 1}/{epochs}: loss {total / max(steps, 1):.4f}")


def fit_lerg(train: Interactions, seed: int = 0, cfg: LERGConfig = LERGConfig(), log=None) -> LERGState:
    """Pretrain, rewire (``cfg.rewire``), fine-tune; ``log`` gets one line per stage."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    full = bipartite_norm(train)
    n, users = full.shape[0], train.num_users
    index, weight = graph_assignment(full[:users, users:], cfg.table, seed)
    state = LERGState(CompositionalTable(index, weight, cfg.table, seed), full, 0, np.ones(n, dtype=bool),
                      np.zeros((1, cfg.table.dim), dtype=np.float32), np.full(n, -1, dtype=np.int64),
                      users, cfg.layers, np.diff(full.indptr))
    state.full_macs = state.macs()
    _train(state, train, cfg.epochs, cfg, rng, log)
    if cfg.rewire.retention < 1:
        with torch.no_grad():
            emb0 = state.layer0().numpy()
        retained = select_retained(contribution(full, emb0), state.degree, cfg.rewire)
        pruned = np.flatnonzero(~retained)
        state.placeholders, assign = placeholder_codebook(emb0, pruned, cfg.rewire.placeholders, seed)
        state.placeholder_of[pruned] = assign
        state.retained, state.adj = retained, rewired(full, retained)
        if log:
            log(f"lerg: kept {retained.sum():,} of {n:,} entities; MACs {state.macs() / state.full_macs:.2f}x")
        _train(state, train, cfg.finetune_epochs, cfg, rng, log, "fine-tune")
    return state
