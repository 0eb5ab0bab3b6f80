"""Ranking samples never pair a user with an item from their history; AUC and log loss by hand."""

from __future__ import annotations

import numpy as np
import pytest

from trainers.evaluation.splits import Interactions
from trainers.ranking.dsgl_samples import auc, log_loss, make_samples


def test_negatives_avoid_every_known_interaction():
    rng = np.random.default_rng(0)
    known = Interactions(rng.integers(0, 20, 300), rng.integers(0, 15, 300), rng.integers(0, 99, 300), 20, 15)
    pos = known.subset(np.arange(100))
    s = make_samples(pos, known, 4, rng)
    assert len(s) == 500 and s.labels.sum() == 100
    history = set(zip(known.user.tolist(), known.item.tolist()))
    neg = s.labels == 0
    assert not any((u, i) in history for u, i in zip(s.users[neg].tolist(), s.items[neg].tolist()))
    # each negative keeps its positive's user and time
    assert sorted(zip(s.users[neg].tolist(), s.ts[neg].tolist())) == sorted(
        [(u, t) for u, t in zip(pos.user.tolist(), pos.ts.tolist()) for _ in range(4)])
    full = Interactions(np.zeros(15, np.int64), np.arange(15), np.zeros(15, np.int64), 20, 15)
    with pytest.raises(ValueError, match="user 0: no item left"):
        make_samples(full.subset(np.arange(1)), full, 1, rng)


def test_auc_and_log_loss_by_hand():
    y = np.array([1, 0, 1, 0])
    assert auc(y, np.array([0.9, 0.1, 0.4, 0.6])) == pytest.approx(0.75)   # 3 of 4 pairs ordered
    assert auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)
    assert log_loss(y, np.array([0.9, 0.1, 0.4, 0.6])) == pytest.approx(
        -(np.log(0.9) + np.log(0.9) + np.log(0.4) + np.log(0.4)) / 4)
    with pytest.raises(ValueError, match="both classes"):
        auc(np.ones(3), np.arange(3))
