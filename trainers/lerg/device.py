"""The reference device scorer: numpy only, from a bundle (:mod:`trainers.lerg.bundle`).

    scorer = DeviceScorer.load("bundle.npz")
    top = scorer.recommend(user=12, local_items=[5, 9, 40], k=20)

It rebuilds the layer-0 rows, propagates them over the rewired graph (LightGCN's mean of
layers, normalised by the full graph's degrees, as on the server), then fine-tunes the one
entity whose data is on the device, the user: its final vector takes a few BPR steps on its
local interactions against sampled negatives (items and codebook stay frozen), and scores
every item with it. A user the bundle does not know starts from the mean of its local items.
A catalogue too large to propagate in a device's memory is scored from the bundle's PQ
codes instead (``hetrec export RUN --device OUT --pq 16``; :class:`DeviceScorer`).
"""

from __future__ import annotations

import numpy as np

from trainers.lerg.bundle import Bundle, BundleError, read_bundle


def propagate_numpy(emb0: np.ndarray, bundle: Bundle) -> np.ndarray:
    """Mean of layers 0..L over the rewired graph: emb0 [E, D] -> [E, D] float32."""
    import scipy.sparse as sp

    a = bundle.arrays
    indptr, indices = a["graph_indptr"].astype(np.int64), a["graph_indices"].astype(np.int64)
    if indptr[-1] != len(indices) or (len(indices) and indices.max() >= len(indptr) - 1):
        raise BundleError(f"{bundle.path}: the rewired graph is inconsistent (graph_indptr ends at {indptr[-1]}, "
                          f"graph_indices has {len(indices)} entries)")
    inv = 1.0 / np.sqrt(np.maximum(a["degree"].astype(np.float32), 1))
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    n = len(indptr) - 1
    adj = sp.csr_matrix(((inv[rows] * inv[indices]).astype(np.float32), indices, indptr), shape=(n, n))
    out, h = emb0.copy(), emb0
    for _ in range(bundle.header["layers"]):
        h = adj @ h
        out += h
    return out / (bundle.header["layers"] + 1)


class DeviceScorer:
    """Item vectors from a bundle: propagated here (``propagate=True``; users [U, D] and items
    [N, D] held), or, for a catalogue too large to propagate on a device, read from the
    bundle's PQ codes (``propagate=False``; items stay M bytes each, scored by table lookups; a
    bundle user starts from :meth:`known_user`, a new one from its local items). Default: PQ
    when the bundle has codes."""

    def __init__(self, bundle: Bundle, propagate: bool | None = None):
        self.bundle = bundle
        self.num_users = bundle.header["num_users"]
        has_pq = "pq_codes" in bundle.arrays
        if propagate is False and not has_pq:
            raise BundleError(f"{bundle.path}: has no PQ codes; export it with --pq M, or propagate")
        self.propagate = not has_pq if propagate is None else propagate
        if self.propagate:
            final = propagate_numpy(bundle.layer0(), bundle)
            self.users, self.items = final[:self.num_users], final[self.num_users:]
            self.num_items = len(self.items)
        else:
            self.users = None
            self.codes = bundle.arrays["pq_codes"]  # [N, M] uint8
            self.centroids = bundle.arrays["pq_centroids"].astype(np.float32)  # [M, 256, D / M]
            self.num_items = len(self.codes)

    def known_user(self, user: int, local: np.ndarray) -> np.ndarray:
        """A bundle user's propagated row without propagating: LightGCN's mean of L + 1 layers,
        ``(h_u^0 + sum_l A h_items^l) / (L + 1)``, with each item's layers taken as its final
        row: ``h_u^0 / (L + 1) + L / (L + 1) * sum_i F_i / sqrt(d_u d_i)`` over the local items."""
        layers = self.bundle.header["layers"]
        degree = self.bundle.arrays["degree"]
        items = np.unique(local)
        norm = 1.0 / np.sqrt(max(int(degree[user]), 1) * np.maximum(degree[self.num_users + items], 1))  # [L]
        own = self.bundle.layer0(np.array([user]))[0]
        return (own + layers * (norm[:, None] * self.item_rows(items)).sum(0)) / (layers + 1)

    def item_rows(self, ids: np.ndarray) -> np.ndarray:
        """Item vectors [..., D] for ids [...]."""
        if self.propagate:
            return self.items[ids]
        m = np.arange(self.codes.shape[1])
        return self.centroids[m, self.codes[ids]].reshape(*np.shape(ids), -1)  # [..., M, D/M] -> [..., D]

    def item_scores(self, vec: np.ndarray) -> np.ndarray:
        """<item, vec> for every item: [N] float32 (PQ: a lookup table [M, 256], then one
        gather per sub-quantiser, which keeps the temporaries at [N])."""
        if self.propagate:
            return self.items @ vec
        lut = np.einsum("mkd,md->mk", self.centroids, vec.reshape(len(self.centroids), -1))  # [M, 256]
        out = np.zeros(self.num_items, dtype=np.float32)
        for m in range(len(lut)):
            out += lut[m][self.codes[:, m]]
        return out

    @classmethod
    def load(cls, path, propagate: bool | None = None) -> DeviceScorer:
        return cls(read_bundle(path), propagate)

    def finetune(self, user: int | None, local_items, steps: int = 20, lr: float = 0.05, negatives: int = 8,
                 seed: int = 0) -> np.ndarray:
        """The user's vector [D] after ``steps`` of BPR on ``local_items`` (item ids)."""
        local = np.asarray(local_items, dtype=np.int64)
        if len(local) and (local.min() < 0 or local.max() >= self.num_items):
            raise BundleError(f"local item ids must lie in [0, {self.num_items}), got [{local.min()}, {local.max()}]")
        if user is not None and not 0 <= user < self.num_users:
            raise BundleError(f"user must lie in [0, {self.num_users}) or be None, got {user}")
        if user is not None and self.users is not None:
            vec = self.users[user].copy()
        elif user is not None and len(local):
            vec = self.known_user(user, local)
        elif len(local):
            vec = self.item_rows(local).mean(0)
        else:
            return np.zeros(self.bundle.header["dim"], dtype=np.float32)
        if not len(local):
            return vec
        rng = np.random.default_rng(seed)
        pos_vec = self.item_rows(local)  # [L, D]
        for _ in range(steps):
            neg_vec = self.item_rows(rng.integers(0, self.num_items, (len(local), negatives)))  # [L, M, D]
            diff = pos_vec[:, None, :] - neg_vec  # [L, M, D]
            margin = diff @ vec  # [L, M]
            # d/dvec of -log sigmoid(margin), averaged
            grad = -((1 / (1 + np.exp(margin)))[..., None] * diff).mean((0, 1))
            vec = vec - lr * grad
        return vec.astype(np.float32)

    def recommend(self, user: int | None, local_items, k: int = 20, **finetune) -> np.ndarray:
        """The top-k item ids [k] for the fine-tuned user, its local items left out."""
        vec = self.finetune(user, local_items, **finetune)
        scores = self.item_scores(vec)  # [N]
        scores[np.asarray(local_items, dtype=np.int64)] = -np.inf
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        return top[np.argsort(-scores[top])]
