"""LERG's quantised compositional embedding table (Liang et al., TOIS 2025, 2505.18999; after
LEGCF, SIGIR 2024).

Every entity (users ``[0, U)``, then items ``[U, U + N)``, as in
:func:`trainers.evaluation.baselines.bipartite_adjacency`) is a sparse combination of ``t``
rows of a small codebook of ``C`` meta-embeddings:

    e_n = sum_j  w[n, j] * Q_b(codebook[index[n, j]])

``index`` [E, t] is fixed before training, initialised from the graph (:func:`graph_assignment`):
an entity's first code is its cluster (users and items have codebook ranges of their own),
the others are drawn at random, so entities of one cluster still differ (LEGCF). ``w`` [E, t]
stays at its initial value (``anchor`` on the cluster's code, the rest shared; a device
bundle then stores no weights) unless ``train_weights``; only the codebook is trained, as in
LEGCF. ``Q_b`` is symmetric per-row fake quantisation to ``b`` bits with a straight-through
estimator (:func:`fake_quant`), so the codebook that ships is ``b``-bit integers plus one
float32 scale per row.

What we chose where the paper's text was not available to us (BENCHMARKS.md "LERG"): the
scale is each row's max-abs (the paper says LSQ, a learnt step); the graph partition is
spectral (scipy ``svds`` of the normalised interaction matrix, then faiss k-means), not
METIS, which is not a dependency. Chosen on validation (MovieLens-100K, random split):
fixed weights (trained ones lost 0.02 NDCG@20), 16 spectral dimensions, init std 0.03.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import svds
from torch import nn

from graphs.exceptions import ConfigError

BITS = (4, 8, 16)


@dataclass(frozen=True)
class CodebookConfig:
    """``codebook``: meta-embeddings C; ``per_entity``: t codes per entity; ``bits``: 4, 8 or 16
    (None: float32, no quantisation); ``dim``: D; ``anchor``: the weight of an entity's own
    cluster (LEGCF: 0.9), the rest shared by its other codes; ``spectral_dim``: singular
    vectors the clustering reads; ``init_std``: the codebook's initial scale;
    ``train_weights``: also train the composition weights; ``user_share``: the users' share
    of the codebook (None: their share of the entities)."""

    codebook: int = 256
    per_entity: int = 2
    bits: int | None = 8
    dim: int = 64
    anchor: float = 0.9
    spectral_dim: int = 16
    init_std: float = 0.03
    train_weights: bool = False
    user_share: float | None = None

    def __post_init__(self) -> None:
        if self.codebook < 2 or self.dim < 1:
            raise ConfigError(f"codebook must be >= 2 and dim >= 1, got {self.codebook}, {self.dim}")
        if not 1 <= self.per_entity <= self.codebook:
            raise ConfigError(f"per_entity must lie in [1, codebook={self.codebook}], got {self.per_entity}")
        if self.bits is not None and self.bits not in BITS:
            raise ConfigError(f"bits must be one of {BITS} or None, got {self.bits}")
        if not 0 < self.anchor <= 1:
            raise ConfigError(f"anchor must lie in (0, 1], got {self.anchor}")


def quant_scale(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-row step: max |x_row| / (2^(bits-1) - 1). x: [C, D] -> [C, 1]."""
    return x.detach().abs().amax(dim=1, keepdim=True).clamp_min(1e-8) / (2 ** (bits - 1) - 1)


def fake_quant(x: torch.Tensor, bits: int | None) -> torch.Tensor:
    """Round ``x`` [C, D] to ``bits``-bit integers times a per-row scale; the gradient passes
    straight through the rounding (STE)."""
    if bits is None:
        return x
    step = quant_scale(x, bits)
    q = torch.round(x / step).clamp(-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) * step
    return x + (q - x).detach()


def quantise(x: np.ndarray, bits: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The integers and scales :func:`fake_quant` rounds to: x [C, D] -> (q [C, D], scale [C])."""
    if bits is None:
        return x.astype(np.float32), np.ones(len(x), dtype=np.float32)
    step = quant_scale(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), bits).numpy()
    limit = 2 ** (bits - 1) - 1
    q = np.clip(np.round(x / step), -limit, limit).astype(np.int8 if bits <= 8 else np.int16)
    return q, step[:, 0].astype(np.float32)


class CompositionalTable(nn.Module):
    """The table above, for E entities.

    Shapes: ``index`` [E, t] (fixed buffer), ``weight`` [E, t], ``codebook`` [C, D];
    :meth:`forward` () -> [E, D].
    """

    def __init__(self, index: np.ndarray, weight: np.ndarray, cfg: CodebookConfig, seed: int = 0):
        super().__init__()
        self.bits = cfg.bits
        self.register_buffer("index", torch.from_numpy(np.asarray(index, dtype=np.int64)))
        self.weight = nn.Parameter(torch.from_numpy(np.asarray(weight, dtype=np.float32)),
                                   requires_grad=cfg.train_weights)
        gen = torch.Generator().manual_seed(seed)
        self.codebook = nn.Parameter(torch.randn(cfg.codebook, cfg.dim, generator=gen) * cfg.init_std)

    def meta(self) -> torch.Tensor:
        """The (fake-)quantised codebook: [C, D]."""
        return fake_quant(self.codebook, self.bits)

    def forward(self) -> torch.Tensor:
        # weight [E, t, 1] * meta[index] [E, t, D], summed over t
        return (self.weight.unsqueeze(-1) * self.meta()[self.index]).sum(1)


def graph_assignment(norm: sp.spmatrix, cfg: CodebookConfig, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed codes from the graph: spectral coordinates of every entity (the top singular
    vectors of ``norm``, the normalised interaction matrix D_u^-1/2 R D_i^-1/2 [U, N], i.e. the
    user-item block of LightGCN's propagation matrix, scaled by sqrt(sigma), row-normalised), faiss
    k-means of the users into C * U / E clusters and of the items into the rest, each
    entity's cluster as its first code and t - 1 random codes of its type's range after it.
    Returns (index [U + N, t] int64, weight [U + N, t] float32: ``anchor`` on the first code,
    the rest shared equally)."""
    num_users, num_items = norm.shape
    if cfg.codebook >= num_users + num_items:
        raise ConfigError(f"codebook ({cfg.codebook}) must be smaller than the number of entities "
                          f"({num_users + num_items:,} users and items): a table that large saves nothing")
    k = max(1, min(cfg.spectral_dim, min(norm.shape) - 1))
    u, s, vt = svds(norm.astype(np.float64), k=k, random_state=seed)
    coords = np.concatenate([u * np.sqrt(s), vt.T * np.sqrt(s)]).astype(np.float32)  # [U + N, k]
    coords /= np.linalg.norm(coords, axis=1, keepdims=True).clip(min=1e-12)
    index = np.empty((len(coords), cfg.per_entity), dtype=np.int64)
    rng = np.random.default_rng(seed)
    # users and items get codebook ranges of their own, in proportion to their counts by default
    share = num_users / len(coords) if cfg.user_share is None else cfg.user_share
    c_items = min(num_items, max(cfg.per_entity, cfg.codebook - round(cfg.codebook * share)))
    c_users = cfg.codebook - c_items
    if not cfg.per_entity <= c_users <= num_users:
        raise ConfigError(f"codebook {cfg.codebook} cannot be split into ranges of at least per_entity "
                          f"({cfg.per_entity}) codes for {num_users:,} users and {num_items:,} items")
    for rows, first, size in ((slice(0, num_users), 0, c_users),
                              (slice(num_users, None), c_users, cfg.codebook - c_users)):
        index[rows] = first + _cluster_codes(coords[rows], size, cfg.per_entity, seed, rng)
    weight = np.full(index.shape, (1 - cfg.anchor) / max(1, cfg.per_entity - 1), dtype=np.float32)
    weight[:, 0] = cfg.anchor if cfg.per_entity > 1 else 1.0
    return index, weight


def _cluster_codes(coords: np.ndarray, size: int, per_entity: int, seed: int, rng: np.random.Generator
                   ) -> np.ndarray:
    """Codes in ``[0, size)`` for rows of ``coords`` [M, k]: the k-means cluster first, then
    ``per_entity - 1`` other codes at random (LEGCF), so entities of one cluster still differ:
    [M, t]."""
    kmeans = faiss.Kmeans(coords.shape[1], size, niter=20, seed=seed, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=1024)
    kmeans.train(np.ascontiguousarray(coords))
    _, nearest = kmeans.index.search(np.ascontiguousarray(coords), 1)  # [M, 1]
    index = np.empty((len(coords), per_entity), dtype=np.int64)
    index[:, 0] = np.maximum(nearest[:, 0], 0)
    if per_entity > 1:
        other = rng.integers(0, max(1, size - 1), (len(coords), per_entity - 1))
        index[:, 1:] = other + (other >= index[:, :1])  # never the anchor itself
    return index