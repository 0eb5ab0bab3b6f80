"""LERG's graph rewiring: which entities keep sending signals in propagation.

A pruned entity stops sending: every edge out of it is dropped from the propagation matrix
(it still receives, so its own final embedding keeps its neighbours' signal), and its own
layer-0 row becomes a placeholder meta-embedding (k-means of the pruned entities' pretrained
rows), so it needs no codes of its own.

Selection, gradient-free (the paper's binary integer program; its exact objective was not
available to us, so this is ours, stated in BENCHMARKS.md "LERG"):

    max_x  sum_i x_i c_i   s.t.  sum_i x_i = ceil(rho * E),   sum_i x_i s_i <= m * sum_i s_i,   x in {0, 1}^E

with ``c_i = ||e_i|| * ||A[:, i]||`` (the norm of the signal entity i sends per layer, from the
pretrained layer-0 rows ``e`` and the normalised adjacency ``A``), ``s_i`` its out-edges (its
share of the propagation's multiply-accumulates), ``rho`` the retention and ``m`` the MAC
budget. Solved by Lagrangian relaxation of the budget: keep the top ``rho * E`` by
``c_i - lambda * s_i * mean(c) / mean(s)``, with the smallest ``lambda >= 0`` that meets the
budget (bisection; ``lambda = 0`` is the plain top-k by contribution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np
import scipy.sparse as sp

from graphs.exceptions import ConfigError


@dataclass(frozen=True)
class RewireConfig:
    """``retention``: share of entities that keep sending (1: no rewiring); ``mac_budget``:
    the rewired propagation's MACs over the full graph's, at most (None: ``retention``);
    ``placeholders``: k-means centroids for the pruned entities."""

    retention: float = 0.7
    mac_budget: float | None = None
    placeholders: int = 32

    def __post_init__(self) -> None:
        if not 0 < self.retention <= 1:
            raise ConfigError(f"retention must lie in (0, 1], got {self.retention}")
        if self.mac_budget is not None and not 0 < self.mac_budget <= 1:
            raise ConfigError(f"mac_budget must lie in (0, 1] or be None, got {self.mac_budget}")
        if self.placeholders < 1:
            raise ConfigError(f"placeholders must be >= 1, got {self.placeholders}")


def contribution(adj: sp.csr_matrix, emb: np.ndarray) -> np.ndarray:
    """c_i = ||e_i|| * ||A[:, i]||: adj [E, E] (row j receives from column i), emb [E, D] -> [E]."""
    col_norm = np.sqrt(np.asarray(adj.multiply(adj).sum(axis=0)).ravel())
    return np.linalg.norm(emb, axis=1) * col_norm


def select_retained(score: np.ndarray, sends: np.ndarray, cfg: RewireConfig) -> np.ndarray:
    """The kept entities as a bool mask [E] (module doc): score, sends: [E]."""
    n = len(score)
    keep = min(n, math.ceil(cfg.retention * n))
    if keep == n:
        return np.ones(n, dtype=bool)
    budget = (cfg.mac_budget if cfg.mac_budget is not None else cfg.retention) * sends.sum()
    scale = score.mean() / max(sends.mean(), 1e-12)

    def top(lam: float) -> np.ndarray:
        mask = np.zeros(n, dtype=bool)
        mask[np.argpartition(-(score - lam * scale * sends), keep - 1)[:keep]] = True
        return mask

    mask = top(0.0)
    if sends[mask].sum() <= budget:
        return mask
    lo, hi = 0.0, 1.0
    while sends[top(hi)].sum() > budget and hi < 1e6:
        lo, hi = hi, hi * 4
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sends[top(mid)].sum() > budget else (lo, mid)
    return top(hi)


def placeholder_codebook(emb: np.ndarray, pruned: np.ndarray, count: int, seed: int = 0
                         ) -> tuple[np.ndarray, np.ndarray]:
    """k-means of the pruned entities' rows: emb [E, D], pruned [P] ids -> (centroids [K, D],
    assignment [P] int64), K = min(count, P)."""
    rows = np.ascontiguousarray(emb[pruned], dtype=np.float32)
    k = max(1, min(count, len(rows)))
    if len(rows) == 0:
        return np.zeros((1, emb.shape[1]), dtype=np.float32), np.zeros(0, dtype=np.int64)
    kmeans = faiss.Kmeans(rows.shape[1], k, niter=20, seed=seed, verbose=False, min_points_per_centroid=1)
    kmeans.train(rows)
    _, assign = kmeans.index.search(rows, 1)
    return kmeans.centroids.copy(), assign[:, 0].astype(np.int64)


def rewired(adj: sp.csr_matrix, retained: np.ndarray) -> sp.csr_matrix:
    """The propagation matrix without the pruned entities' out-edges (columns): [E, E]."""
    out = (adj @ sp.diags(retained.astype(adj.dtype))).tocsr()
    out.eliminate_zeros()
    return out


def macs(adj: sp.csr_matrix, layers: int, dim: int) -> int:
    """Multiply-accumulates of one propagation: layers x nnz x D."""
    return int(layers) * int(adj.nnz) * int(dim)
