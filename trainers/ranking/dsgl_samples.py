"""Ranking samples for DSGL and its baselines, and the ranking metrics (AUC, log loss).

A sample is ``(u, i, t, y)``: each observed interaction is a positive (y = 1) at its own
time, and ``negatives`` items drawn uniformly for the same user and time are negatives
(y = 0). A negative never collides with an item the user had interacted with in ``known``
at or before ``t``: only what is visible at the sample's time, so a negative may be an
item the user meets later (excluding those would tell the model the future).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

from graphs.exceptions import ConfigError
from trainers.evaluation.splits import Interactions


@dataclass
class Samples:
    """``users, items, ts: [S]`` int64, ``labels: [S]`` float32 (1 positive, 0 negative)."""

    users: np.ndarray
    items: np.ndarray
    ts: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def take(self, rows: np.ndarray) -> Samples:
        return Samples(self.users[rows], self.items[rows], self.ts[rows], self.labels[rows])


def make_samples(positives: Interactions, known: Interactions, negatives: int, rng: np.random.Generator,
                 max_tries: int = 50, weights: np.ndarray | None = None) -> Samples:
    """Positives plus ``negatives`` per positive, shuffled (see the module doc). Negatives are
    drawn uniformly, or with ``weights`` [I] in proportion to them (e.g. item popularity: a
    harder test, where popularity alone cannot tell positives from negatives).

    Raises ValueError naming the user when a user has interacted with (nearly) every item.
    """
    if negatives < 0:
        raise ConfigError(f"negatives must be >= 0, got {negatives!r}")
    first, t0 = _first_seen(known)
    P = len(positives)
    users, ts = np.repeat(positives.user, negatives), np.repeat(positives.ts, negatives)

    def visible(u: np.ndarray, i: np.ndarray, t: np.ndarray) -> np.ndarray:
        if not len(u):                                     # scipy returns a sparse matrix for no rows
            return np.zeros(0, bool)
        seen_at = np.asarray(first[u, i]).ravel()          # 1 + first time - t0; 0: never
        return (seen_at > 0) & (seen_at - 1 + t0 <= t)

    p = None if weights is None else np.asarray(weights, np.float64) / np.sum(weights)

    def draw(n: int) -> np.ndarray:
        return rng.integers(0, known.num_items, n) if p is None else rng.choice(known.num_items, n, p=p)

    items = draw(len(users))
    bad = visible(users, items, ts)
    for _ in range(max_tries):                     # redraw collisions only
        if not bad.any():
            break
        items[bad] = draw(int(bad.sum()))
        bad[bad] = visible(users[bad], items[bad], ts[bad])
    if bad.any():
        raise ConfigError(f"user {users[bad][0]}: no item left to draw as a negative after {max_tries} tries")
    out = Samples(np.concatenate([positives.user, users]), np.concatenate([positives.item, items]),
                  np.concatenate([positives.ts, np.repeat(positives.ts, negatives)]),
                  np.concatenate([np.ones(P, np.float32), np.zeros(len(users), np.float32)]))
    return out.take(rng.permutation(len(out)))


def _first_seen(known: Interactions) -> tuple[sp.csr_matrix, int]:
    """``([U, I], t0)``: ``1 + first - t0`` for the first time each user met each item (0
    where never; ``t0`` the earliest time, so that 0 stays free)."""
    t0 = int(known.ts.min()) if len(known) else 0
    keys = known.user * known.num_items + known.item
    order = np.lexsort((known.ts, keys))
    first = order[np.unique(keys[order], return_index=True)[1]]     # each pair's earliest row
    m = sp.csr_matrix((known.ts[first] - t0 + 1, (known.user[first], known.item[first])),
                      shape=(known.num_users, known.num_items))
    return m, t0


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half)."""
    labels = np.asarray(labels).astype(bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        raise ConfigError(f"auc needs both classes, got {pos} positives and {neg} negatives")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Per-user AUC averaged with each user's sample count as weight, over the users with
    both a positive and a negative sample (GAUC, as in DIN, Zhou et al. 2018)."""
    users, labels, scores = np.asarray(users), np.asarray(labels).astype(bool), np.asarray(scores)
    order = np.argsort(users, kind="stable")
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    total = weight = 0.0
    for rows in np.split(order, bounds):
        y = labels[rows]
        if y.all() or not y.any():
            continue
        total += len(rows) * auc(y, scores[rows])
        weight += len(rows)
    if weight == 0:
        raise ConfigError("gauc needs a user with both a positive and a negative sample")
    return total / weight


def popularity_before(known: Interactions, items: np.ndarray, ts: np.ndarray, window: int | None = None) -> np.ndarray:
    """For each ``(items[j], ts[j])``: how many interactions of ``known`` the item had strictly
    before ``ts[j]``; with ``window`` (seconds) only those in ``[ts - window, ts)``, a
    recency-weighted count with a box kernel. The popularity baselines of the ranking
    tables: they see only what happened before the sample. ``items``, ``ts``: [S] -> [S]."""
    t_min = int(min(known.ts.min(), ts.min())) if len(known) else 0
    span = int(max(known.ts.max(), ts.max())) - t_min + 2 if len(known) else 2
    key = np.sort(known.item.astype(np.int64) * span + (known.ts - t_min))
    items = np.asarray(items, np.int64)
    end = np.searchsorted(key, items * span + (np.asarray(ts) - t_min), "left")
    lo = 0 if window is None else np.maximum(np.asarray(ts) - window - t_min, 0)
    start = np.searchsorted(key, items * span + lo, "left")
    return (end - start).astype(np.float64)


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities ``probs`` against ``labels``."""
    p = np.clip(np.asarray(probs, np.float64), eps, 1 - eps)
    y = np.asarray(labels, np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
