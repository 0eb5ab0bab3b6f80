"""Per-epoch validation of a training run: full-ranking NDCG@10 on held-out user-item pairs.

The held-out pairs are a parquet file with ``src`` and ``dst`` columns (ids within the
target edge type's source and destination types), written for example by the evaluation
harness from its split's valid part. Up to ``max_users`` users are scored against every
item; each user's training items (its neighbours in the shard store) are masked.

Scores are the model's ranking scores, ``cos(u, i) + w_u * log(1 + n_i)`` (:func:`popularity_prior`,
``n_i`` the item's count of training edges), with ``w_u = w + (COLD_PRIOR - w) / m_u`` for a
user with ``m_u`` training edges (:func:`user_prior_weights`): the less a user has shown,
the more its ranking leans on popularity. :meth:`Validator.score` tries each ``w`` of a
grid on the same embeddings and keeps the best, so the weight is chosen on validation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from graphs.exceptions import GraphFormatError
from graphs.schema import EdgeType
from graphs.shards import ShardStore
from graphs.store import atomic_file
from trainers.evaluation.metrics import evaluate_scores
from trainers.evaluation.splits import Interactions
from trainers.features import FeatureStore
from trainers.hetsgformer.inference import embed_nodes, global_context


PRIOR_GRID = (0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3)
"""Popularity-prior weights a validating run chooses among (on the cosine's scale)."""
DEFAULT_PRIOR = 0.3
"""The weight ``w`` of a run without validation: the choice of the temporal protocol's
validation window (``hetrec eval --protocol temporal-valid``, MovieLens-100K, 3 seeds;
BENCHMARKS.md "The prior's weight per user")."""
COLD_PRIOR = 1.0
"""The prior's weight for a user with one training edge (chosen on the same window)."""


def user_prior_weights(weight: float, activity: np.ndarray, cold: float = COLD_PRIOR) -> torch.Tensor:
    """``[U]`` float32: each user's prior weight ``weight + (cold - weight) / max(1, m_u)``,
    ``activity: [U]`` the users' counts ``m_u`` of training edges."""
    m = np.maximum(np.asarray(activity, dtype=np.float64), 1.0)
    return torch.from_numpy((weight + (cold - weight) / m).astype(np.float32))


def popularity_prior(store: ShardStore, target: EdgeType) -> np.ndarray:
    """``log(1 + n_i)`` for every item of ``target``'s destination type, ``n_i`` its count of
    ``target`` edges in ``store``: ``[N]`` float32. The sampled softmax's logQ correction
    trains the embeddings without item popularity; ranking adds it back with a weight
    (:class:`trainers.hetsgformer.train.TrainConfig` ``popularity_prior``)."""
    items = np.arange(store.counts[target.dst])
    return np.log1p(store.degree(target.reverse().key, items)).astype(np.float32)


def cosine_scores(users: torch.Tensor, items: torch.Tensor, bias: torch.Tensor | None = None,
                  user_scale: torch.Tensor | None = None):
    """The model's ranking rule as a scorer ``rows [B] -> [B, N]``: cosine between
    ``users[rows]`` (``users: [U, D]``) and every row of ``items: [N, D]``, plus ``bias: [N]``
    (the popularity prior; None: none), times ``user_scale[rows]`` (``[U]``, each user's
    weight: :func:`user_prior_weights`; None: 1)."""
    u, v = F.normalize(users, dim=-1), F.normalize(items, dim=-1)
    bias = torch.zeros(len(v)) if bias is None else bias
    if user_scale is None:
        return lambda rows: u[rows] @ v.T + bias
    return lambda rows: u[rows] @ v.T + user_scale[rows, None] * bias


def write_pairs(path: str | Path, inter: Interactions) -> Path:
    """Write ``inter``'s (user, item) pairs as a validation file."""
    import pyarrow as pa

    path = Path(path)
    with atomic_file(path) as tmp:
        pq.write_table(pa.table({"src": inter.user, "dst": inter.item}), tmp)
    return path


class Validator:
    """NDCG@10 of the current model on held-out pairs; see the module docstring."""

    def __init__(self, path: str | Path, store: ShardStore, target: EdgeType, max_users: int = 1000,
                 seed: int = 0):
        try:
            table = pq.read_table(path, columns=["src", "dst"])
        except (OSError, KeyError, ValueError) as err:
            raise GraphFormatError(f"validation pairs {path}: cannot read src/dst columns ({err})") from None
        src, dst = (table[c].to_numpy().astype(np.int64) for c in ("src", "dst"))
        n_users, n_items = store.counts[target.src], store.counts[target.dst]
        for name, col, n in (("src", src, n_users), ("dst", dst, n_items)):
            if len(col) and (col.min() < 0 or col.max() >= n):
                raise GraphFormatError(f"validation pairs {path}: column {name} has id "
                                       f"{int(col.min() if col.min() < 0 else col.max())} outside [0, {n})")
        users = np.unique(src)
        if len(users) > max_users:
            users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
        keep = np.isin(src, users)
        self.users, self.store, self.target, self.seed = users, store, target, seed
        self.valid = Interactions(src[keep], dst[keep], np.zeros(int(keep.sum()), np.int64), n_users, n_items)
        seen = store.neighbors(target.key, users)
        self.activity = np.diff(seen.ptr)                                             # [users]
        seen_users = np.repeat(users, self.activity)
        self.train = Interactions(seen_users, seen.ids, np.zeros(len(seen_users), np.int64), n_users, n_items)
        self.prior = torch.from_numpy(popularity_prior(store, target))                # [N]

    def score(self, model, features: FeatureStore, fanouts: list[int], per: str = "relation",
              weights: tuple[float, ...] = (0.0,)) -> tuple[float, float]:
        """Embed the users and every item with ``model``; the best NDCG@10 over the held-out
        pairs among the popularity-prior ``weights``, and that weight (the first on ties)."""
        if not len(self.users):
            return float("nan"), float(weights[0])
        items = np.arange(self.store.counts[self.target.dst])
        ctx = global_context(model, self.store, features, self.seed)
        u = embed_nodes(model, self.store, features, self.target.src, self.users, fanouts, self.seed, per=per,
                        context=ctx).cpu()
        v = embed_nodes(model, self.store, features, self.target.dst, items, fanouts, self.seed, per=per,
                        context=ctx).cpu()
        row = {int(x): i for i, x in enumerate(self.users)}
        index = np.vectorize(row.__getitem__, otypes=[np.int64])

        results = []
        for w in weights:
            scorer = cosine_scores(u, v, self.prior, user_prior_weights(w, self.activity))
            ndcg = evaluate_scores(lambda batch: scorer(index(batch.numpy())), self.valid, self.train, ks=[10])
            results.append((ndcg["ndcg@10"], float(w)))
        return max(results, key=lambda r: r[0])
