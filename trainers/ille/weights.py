"""ILLE, incremental locally linear embedding (arXiv 2512.13120; ALGORITHMS.md "ILLE").

A new or changed node v gets an embedding without retraining:

1. its k neighbours, 1-hop first then 2-hop (:func:`trainers.ille_neighbors.select_neighbors`);
2. reconstruction weights in a space v already has, its input representation ``x``
   (IEL attributes + type, and a structural signature; :mod:`trainers.ille.inputs`):
   ``G = Z Z^T`` with ``Z = [x_j - x_v]``, ``(G + r trace(G) I) w = 1``, ``w /= sum(w)``
   (Roweis & Saul 2000), :func:`lle_weights`;
3. ``y_v = sum_j w_j y_j`` from the current embeddings. When nodes of one batch are each
   other's neighbours they are solved jointly, old embeddings fixed (:func:`solve_joint`).

Weights are invariant to rotation, scale and translation of ``x``, which is why they
carry over to the embedding space. Cost per node is ``O(k D + k^3)``; nothing here looks
at the whole graph, and there is no eigendecomposition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from graphs.exceptions import ConfigError

# Per-node outcome, returned with every solve so callers can report it.
LLE, SINGLE, DEGREE_FALLBACK, ISOLATED = 0, 1, 2, 3
STATUS_NAMES = ("lle", "single_neighbor", "degree_fallback", "isolated")


RULES = ("target", "auto", "adjacent", "all")


@dataclass(frozen=True)
class ILLEConfig:
    """ILLE settings.

    ``k`` neighbours per node (``adaptive_k``: ``clip(ceil(4 log2(2 + deg)), k_min, k_max)``
    from the node's 1-hop degree instead). ``reg`` is r in ``G + r trace(G) I`` (Roweis and
    Saul's relative form; they use about 1e-3). The default 0.3 keeps the weights close to
    uniform. On the cold-start validation holdouts (seeds 1, 4, 5; m = 1, 3, 5), ranked by
    cosine alone, every step down to 1e-1, 1e-2 and 1e-3 lost NDCG@20, because the input
    space (no ID rows) is only a rough proxy for the learned embedding space; ranked with the
    popularity prior, 1e-2 and 1e-1 are 0.003 above 0.3 and 1e-3 is 0.02 below
    (BENCHMARKS.md "ILLE cold start").
    ``scan``: neighbours read per node and relation (evenly spaced; bounds the cost of
    hubs); ``expand``: 1-hop neighbours whose own neighbours are read for the 2-hop ring,
    ``scan2`` of them per relation.
    ``structure_weight`` scales the structural signature against the IEL attributes in x;
    at 1.0 it made reconstructions extrapolate (a new node's degree lies outside its
    neighbours'), so the default is 0.1 (same validation run).
    ``change_threshold``: None (default) leaves every trained row as training made it; a
    number re-solves a trained node when the half-edges added or removed at it reach that
    fraction of its base degree (and at least one). Nodes ILLE itself created are re-solved
    whenever a batch touches them.
    ``neighbour_types``: which neighbour types reconstruct a node: ``"target"`` (default),
    the two ends of the run's interaction relation from each other (a user from the items it
    touched, an item from the users who touched it) and every other type as ``"auto"``;
    ``"auto"``, the types its own type has edges to that have at least ``min_type_nodes``
    nodes (a user from its items, not from users two hops away nor from its age group; an
    item from its users, entities and related items, not from a genre shared by a tenth of
    the catalogue); ``"adjacent"``, every type its type has edges to; ``"all"``; or
    ``{type: (types, ...)}`` (types not listed: all). On the cold-start validation holdouts,
    ranked with the per-user prior, ``"target"`` was the best rule for new users and level
    with ``"all"`` over users and new items together; ``"auto"`` was the worst of the four
    (BENCHMARKS.md "ILLE cold start"). A node left without neighbours by the rule takes any
    type. ``walk_all``: the 2-hop ring is reached through every 1-hop node, also those the
    rule leaves out (a movie rebuilt from the movies its users rated), instead of through
    its neighbours only (on the same holdouts it lost on users and new items).
    """

    k: int = 8
    adaptive_k: bool = False
    k_min: int = 4
    k_max: int = 32
    reg: float = 0.3
    scan: int = 32
    expand: int = 8
    scan2: int = 8
    structure_weight: float = 0.1
    change_threshold: float | None = None
    neighbour_types: str | dict = "target"
    walk_all: bool = False
    min_type_nodes: int = 100

    def __post_init__(self) -> None:
        for name in ("k", "k_min", "k_max", "scan", "expand", "scan2"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"ILLEConfig.{name} must be an int >= 1, got {value!r}")
        if self.k_min > self.k_max:
            raise ConfigError(f"ILLEConfig.k_min ({self.k_min}) must be <= k_max ({self.k_max})")
        if not self.reg > 0:
            raise ConfigError(f"ILLEConfig.reg must be > 0, got {self.reg!r}")
        if self.structure_weight < 0 or (self.change_threshold is not None and self.change_threshold < 0):
            raise ConfigError("ILLEConfig.structure_weight and change_threshold must be >= 0, got "
                             f"{self.structure_weight!r}, {self.change_threshold!r}")
        if not (self.neighbour_types in RULES or isinstance(self.neighbour_types, dict)):
            raise ConfigError(f"ILLEConfig.neighbour_types must be one of {RULES} or a dict {{type: (types, ...)}}, "
                              f"got {self.neighbour_types!r}")

    def allowed(self, ntype: str, types: list[str], counts: dict[str, int], adjacent: set[str],
                target: tuple[str, str] | None = None) -> list[str]:
        """The neighbour types that reconstruct a node of type ``ntype`` (see the class doc);
        ``adjacent``: the types ``ntype`` has edge types to; ``target``: the (source,
        destination) types of the run's interaction relation, for ``"target"``."""
        if isinstance(self.neighbour_types, dict):
            return list(self.neighbour_types.get(ntype, types))
        if self.neighbour_types == "target" and target is not None and ntype in target:
            return [target[1] if ntype == target[0] else target[0]]
        if self.neighbour_types == "all":
            return list(types)
        if self.neighbour_types == "adjacent":
            return [t for t in types if t in adjacent]
        return [t for t in types if t in adjacent and counts[t] >= self.min_type_nodes]   # auto, target's others

    def k_for(self, degree: np.ndarray) -> np.ndarray:
        """Neighbours wanted per node from its 1-hop degree ``[B] -> [B]``."""
        if not self.adaptive_k:
            return np.full(len(degree), self.k, np.int64)
        k = np.ceil(4 * np.log2(2 + np.asarray(degree, np.float64))).astype(np.int64)
        return np.clip(k, self.k_min, self.k_max)


def lle_weights(x: np.ndarray, nb: np.ndarray, mask: np.ndarray, reg: float = 1e-3,
                degree: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Locally linear reconstruction weights for a batch of nodes.

    Shapes:
        x: ``[B, F]`` the nodes' inputs; nb: ``[B, K, F]`` their neighbours' inputs, padded;
        mask: ``[B, K]`` bool, real neighbours; degree: ``[B, K]`` neighbour degrees for the
        fallback (None: uniform);
        returns ``w: [B, K]`` float64 (0 on padding, rows sum to 1 where any neighbour) and
        ``status: [B]`` int8 (:data:`LLE`, :data:`SINGLE`, :data:`DEGREE_FALLBACK`, :data:`ISOLATED`).

    ``G = Z Z^T`` with ``Z = nb - x``; ``(G + reg trace(G) I) w = 1`` then ``w /= sum(w)``.
    When ``trace(G)`` is 0 (every neighbour equals x: the inputs say nothing) or the solve
    is not finite, the weights fall back to ``1/sqrt(1 + deg_j)``, normalised.
    """
    B, K = mask.shape
    mask = mask.astype(bool)
    count = mask.sum(1)
    z = (nb - x[:, None, :]) * mask[..., None]                           # [B, K, F]
    G = np.einsum("bkf,bjf->bkj", z, z)                                  # [B, K, K]
    trace = np.trace(G, axis1=1, axis2=2)                                # [B]
    eye = np.eye(K)[None]
    G = G + reg * np.maximum(trace, 0)[:, None, None] * eye
    G = np.where(mask[:, :, None] & mask[:, None, :], G, eye)           # padding: identity rows
    informative = trace > 1e-12 * np.maximum(1.0, (x * x).sum(1))
    G = np.where(informative[:, None, None], G, eye)                     # solved, then replaced
    rhs = mask.astype(np.float64)
    w = np.linalg.solve(G, rhs[..., None])[..., 0] * mask                # [B, K]
    total = w.sum(1)
    ok = informative & np.isfinite(w).all(1) & (np.abs(total) > 1e-12)
    w = np.where(ok[:, None], w / np.where(ok, total, 1.0)[:, None], 0.0)
    fallback = ~ok & (count > 0)
    if fallback.any():
        deg = np.zeros((B, K)) if degree is None else np.asarray(degree, np.float64)
        d = mask / np.sqrt(1.0 + deg)
        w[fallback] = (d / d.sum(1, keepdims=True).clip(min=1e-12))[fallback]
    status = np.full(B, LLE, np.int8)
    status[fallback] = DEGREE_FALLBACK
    status[count == 1] = SINGLE
    status[count == 0] = ISOLATED
    w[count == 1] = mask[count == 1]                                     # one neighbour: its copy
    return w, status


def solve_joint(rows: np.ndarray, cols: np.ndarray, w: np.ndarray, b: np.ndarray,
                direct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of a batch of U nodes whose neighbours may be each other.

    Shapes:
        rows, cols, w: ``[M]`` weight ``w`` of unknown ``cols[m]`` in unknown ``rows[m]``'s
        reconstruction (indices in 0..U-1); b: ``[U, D]`` each unknown's weighted sum over
        its known neighbours, ``sum_j w_j y_j``; direct: ``[U]`` bool, has a known neighbour;
        returns ``Y: [U, D]`` float32 and ``anchored: [U]`` bool.

    With the batch's weight matrix split into ``W_uu`` (unknown neighbours) and ``W_uk``
    (known ones), minimising ``||(I - W) Y||^2`` over the unknown rows with the known rows
    fixed is the paper's ``Y_u = -M_uu^{-1} M_uk Y_k`` for ``M = (I - W)^T (I - W)``; it
    has the same solution as the square sparse system ``(I - W_uu) Y_u = W_uk Y_k = b``,
    which is what is solved (better conditioned than the normal equations). Unknowns with
    no path to a known node have nothing to anchor them: they get 0 and ``anchored=False``.
    """
    U = len(b)
    W = sp.csr_matrix((w, (rows, cols)), shape=(U, U))
    # Anchored: reaches a known neighbour by following unknown -> unknown neighbour links.
    reach = (W != 0).astype(np.int32)
    anchored = np.asarray(direct, bool).copy()
    while True:
        grown = anchored | (reach @ anchored.astype(np.int32) > 0)
        if (grown == anchored).all():
            break
        anchored = grown
    Y = np.zeros(b.shape)
    idx = np.flatnonzero(anchored)
    Y[idx] = b[idx]
    if len(idx) and W[idx][:, idx].nnz:
        A = (sp.identity(len(idx), format="csc") - W[idx][:, idx]).tocsc()
        try:
            Y[idx] = splu(A).solve(np.asarray(b[idx], np.float64))
        except RuntimeError:                      # singular block: keep the first estimate
            pass
    Y[~np.isfinite(Y).all(1)] = 0.0
    return Y.astype(np.float32), anchored
