"""Ranking samples never pair a user with an item met by the sample's time (and may with a
later one); AUC and log loss by hand."""

from __future__ import annotations

import numpy as np
import pytest

from trainers.evaluation.splits import Interactions
from trainers.ranking.dsgl_samples import auc, log_loss, make_samples


def test_negatives_avoid_what_the_user_had_met_by_then():
    rng = np.random.default_rng(0)
    known = Interactions(rng.integers(0, 20, 300), rng.integers(0, 15, 300), rng.integers(0, 99, 300), 20, 15)
    pos = known.subset(np.arange(100))
    s = make_samples(pos, known, 4, rng)
    assert len(s) == 500 and s.labels.sum() == 100
    met = {}
    for u, i, t in zip(known.user.tolist(), known.item.tolist(), known.ts.tolist()):
        met[(u, i)] = min(t, met.get((u, i), t))
    neg = s.labels == 0
    assert not any(met.get((u, i), 10**9) <= t
                   for u, i, t in zip(s.users[neg].tolist(), s.items[neg].tolist(), s.ts[neg].tolist()))
    # each negative keeps its positive's user and time
    assert sorted(zip(s.users[neg].tolist(), s.ts[neg].tolist())) == sorted(
        [(u, t) for u, t in zip(pos.user.tolist(), pos.ts.tolist()) for _ in range(4)])
    full = Interactions(np.zeros(15, np.int64), np.arange(15), np.zeros(15, np.int64), 20, 15)
    with pytest.raises(ValueError, match="user 0: no item left"):
        make_samples(full.subset(np.arange(1)), full, 1, rng)


def test_a_later_item_may_be_a_negative_an_earlier_one_never():
    # user 0 meets item 0 at t=1 and item 1 at t=10, of 3 items
    known = Interactions(np.zeros(2, np.int64), np.array([0, 1]), np.array([1, 10]), 1, 3)
    early = make_samples(known.subset(np.array([0])), known, 200, np.random.default_rng(1))
    assert set(early.items[early.labels == 0].tolist()) == {1, 2}      # item 1 is not known yet at t=1
    late = make_samples(known.subset(np.array([1])), known, 50, np.random.default_rng(1))
    assert set(late.items[late.labels == 0].tolist()) == {2}           # item 0 was met before t=10


def test_auc_and_log_loss_by_hand():
    y = np.array([1, 0, 1, 0])
    assert auc(y, np.array([0.9, 0.1, 0.4, 0.6])) == pytest.approx(0.75)   # 3 of 4 pairs ordered
    assert auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)
    assert log_loss(y, np.array([0.9, 0.1, 0.4, 0.6])) == pytest.approx(
        -(np.log(0.9) + np.log(0.9) + np.log(0.4) + np.log(0.4)) / 4)
    with pytest.raises(ValueError, match="both classes"):
        auc(np.ones(3), np.arange(3))
