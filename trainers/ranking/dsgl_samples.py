"""Ranking samples for DSGL and its baselines, and the ranking metrics (AUC, log loss).

A sample is ``(u, i, t, y)``: each observed interaction is a positive (y = 1) at its own
time, and ``negatives`` items drawn uniformly for the same user and time are negatives
(y = 0). A negative never collides with anything the user interacted with in ``known``
(pass every interaction you have, so no future positive becomes a negative either).
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
                 max_tries: int = 50) -> Samples:
    """Positives plus ``negatives`` per positive, shuffled (see the module doc).

    Raises ValueError naming the user when a user has interacted with (nearly) every item.
    """
    if negatives < 0:
        raise ConfigError(f"negatives must be >= 0, got {negatives!r}")
    seen = sp.csr_matrix((np.ones(len(known), bool), (known.user, known.item)),
                         shape=(known.num_users, known.num_items))
    seen.sum_duplicates()
    P = len(positives)
    users = np.repeat(positives.user, negatives)
    items = rng.integers(0, known.num_items, len(users))
    bad = np.asarray(seen[users, items]).ravel().astype(bool)
    for _ in range(max_tries):                     # redraw collisions only
        if not bad.any():
            break
        items[bad] = rng.integers(0, known.num_items, int(bad.sum()))
        bad[bad] = np.asarray(seen[users[bad], items[bad]]).ravel().astype(bool)
    if bad.any():
        raise ConfigError(f"user {users[bad][0]}: no item left to draw as a negative after {max_tries} tries")
    out = Samples(np.concatenate([positives.user, users]), np.concatenate([positives.item, items]),
                  np.concatenate([positives.ts, np.repeat(positives.ts, negatives)]),
                  np.concatenate([np.ones(P, np.float32), np.zeros(len(users), np.float32)]))
    return out.take(rng.permutation(len(out)))


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count one half)."""
    labels = np.asarray(labels).astype(bool)
    pos, neg = labels.sum(), (~labels).sum()
    if pos == 0 or neg == 0:
        raise ConfigError(f"auc needs both classes, got {pos} positives and {neg} negatives")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities ``probs`` against ``labels``."""
    p = np.clip(np.asarray(probs, np.float64), eps, 1 - eps)
    y = np.asarray(labels, np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
