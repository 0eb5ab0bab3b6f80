"""Full-ranking top-K metrics with known items masked, as in RecBole's published tables.

Definitions (RecBole ``recbole/evaluator/metrics.py``), for one user with test set T and
top-K list r_1..r_K (hit_i = r_i in T):

* Recall@K = sum(hit) / |T|
* NDCG@K   = sum_i hit_i / log2(i + 1)  /  sum_{i <= min(K, |T|)} 1 / log2(i + 1)
* Hit@K    = 1 if any hit
* MRR@K    = 1 / (rank of the first hit), 0 if none

Averaged over users with at least one test item. Items with equal scores are ordered by a
fixed random permutation of the items (a nudge below float32's resolution), not by id. In
MovieLens, ids follow the order in which movies entered the catalogue, and 65 of the 66 new
items of the temporal split have no count: breaking popularity's ties by id
(``torch.topk``'s order) ranked them by age and scored popularity 0.31 NDCG@10 on new
items, against 0.15 on average over 100 random tie orders (0.10 to 0.35).

Sampled metrics (1 positive + 100 negatives) inflate NDCG severalfold (ALGORITHMS.md,
"Evaluation pitfalls"), so every item is ranked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from graphs.exceptions import ConfigError
from trainers.evaluation.splits import Interactions

ScoreFn = Callable[[torch.Tensor], torch.Tensor]  # users [B] int64 -> scores [B, num_items]


def _csr(parts: Sequence[Interactions], num_users: int, num_items: int) -> sp.csr_matrix:
    """Binary user x item matrix of the union of ``parts``: [num_users, num_items]."""
    user = np.concatenate([p.user for p in parts]) if parts else np.empty(0, dtype=np.int64)
    item = np.concatenate([p.item for p in parts]) if parts else np.empty(0, dtype=np.int64)
    m = sp.csr_matrix((np.ones(len(user), dtype=np.float32), (user, item)), shape=(num_users, num_items))
    m.data[:] = 1.0  # duplicates were summed
    return m


def evaluate_scores(score_fn: ScoreFn, target: Interactions, train: Interactions | Sequence[Interactions],
                    ks: Sequence[int] = (10, 20), batch_users: int = 1024,
                    candidates: np.ndarray | None = None, tie_seed: int = 0) -> dict[str, float]:
    """Rank all items for every user of ``target``; return ``{"recall@10": ..., "ndcg@10": ...}``.

    ``train``: the interactions to mask to -inf (pass ``[train, valid]`` when scoring test).
    ``candidates``: item ids [C] to rank (None: every item); the others are masked too.
    Users are scored ``batch_users`` at a time, so memory is [batch_users, num_items].
    A masked item never counts as a hit, even if it is also a target item. Ties are broken
    by a random permutation of the items drawn from ``tie_seed`` (module doc).
    """
    masked = [train] if isinstance(train, Interactions) else list(train)
    n_users, n_items = target.num_users, target.num_items
    if any(p.num_items != n_items or p.num_users != n_users for p in masked):
        raise ConfigError("target and masked interactions must share the same user and item id spaces")
    if not ks or min(ks) < 1:
        raise ConfigError(f"ks must be positive cutoffs, got {ks}")
    k_max = min(max(ks), n_items)
    mask, truth = _csr(masked, n_users, n_items), _csr([target], n_users, n_items)
    outside = None
    if candidates is not None:
        outside = torch.ones(n_items, dtype=torch.bool)
        outside[torch.as_tensor(np.asarray(candidates, dtype=np.int64))] = False
    users = target.users()
    # strictly below half a float32 step, so distinct float32 scores keep their order: [N] in [0, 1)
    tie_rank = torch.from_numpy(np.random.default_rng(tie_seed).permutation(n_items) / n_items)
    discount = 1.0 / np.log2(np.arange(2, k_max + 2))  # [K]
    ideal = np.cumsum(discount)  # ideal[j - 1] = IDCG with j relevant items

    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg", "hit", "mrr")}
    for start in range(0, len(users), batch_users):
        batch = users[start:start + batch_users]  # [B]
        with torch.no_grad():
            scores = score_fn(torch.from_numpy(batch)).detach().float()  # [B, N]
        if scores.shape != (len(batch), n_items):
            raise ConfigError(f"score_fn returned {tuple(scores.shape)}, expected {(len(batch), n_items)}")
        scores = scores.double()
        scores = torch.where(torch.isfinite(scores), scores + (scores.abs() * 2**-25 + 1e-46) * tie_rank, scores)
        rows, cols = mask[batch].nonzero()
        scores[torch.from_numpy(rows), torch.from_numpy(cols)] = -torch.inf
        if outside is not None:
            scores[:, outside] = -torch.inf
        top_val, top_idx = torch.topk(scores, k_max, dim=1)  # [B, K]
        t = truth[batch].toarray().astype(bool)  # [B, N]
        hits = np.take_along_axis(t, top_idx.numpy(), axis=1)  # [B, K]
        hits &= np.isfinite(top_val.numpy())  # fewer unmasked items than K: padding never hits
        n_true = t.sum(axis=1)  # [B], >= 1 by construction
        for k in ks:
            h = hits[:, :k]
            kk = min(k, k_max)
            first = np.where(h.any(axis=1), h.argmax(axis=1) + 1, 0)
            sums[f"recall@{k}"] += float((h.sum(axis=1) / n_true).sum())
            sums[f"ndcg@{k}"] += float(((h * discount[:kk]).sum(axis=1) / ideal[np.minimum(n_true, kk) - 1]).sum())
            sums[f"hit@{k}"] += float(h.any(axis=1).sum())
            sums[f"mrr@{k}"] += float(np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0).sum())
    n = max(len(users), 1)
    return {name: total / n for name, total in sums.items()}
