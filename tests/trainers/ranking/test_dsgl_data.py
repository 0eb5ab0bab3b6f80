"""DSGL sequence graphs: the last L interactions strictly before each parent's time."""

from __future__ import annotations

import numpy as np
import pytest

from trainers.evaluation.evaluate import make_split
from trainers.evaluation.splits import Interactions, load_interactions
from trainers.ranking.dsgl_data import SequenceGraphs


def test_hand_made_sequences_cut_at_every_hop():
    #            u0 i0 @1, u0 i1 @5, u1 i0 @2, u1 i1 @3, u2 i0 @9, u0 i2 @7
    inter = Interactions(np.array([0, 0, 1, 1, 2, 0]), np.array([0, 1, 0, 1, 0, 2]),
                         np.array([1, 5, 2, 3, 9, 7]), 3, 3)
    graphs = SequenceGraphs(inter, length=2, depth=2, base=2.0)
    (u1, u2), (i1,) = graphs.batch([0], [0], [7])
    assert u1.ids[0].tolist() == [0, 1] and u1.ts[0].tolist() == [1, 5]     # i2 @7 is not before 7
    assert u1.gap[0].tolist() == [2, 1]                                      # log2(6+1), log2(2+1)
    # item 0 seen @1: nobody before; item 1 seen @5: u1 @3 (and not u0 @5 itself)
    assert u2.mask[0].tolist() == [[False, False], [False, True]] and u2.ids[0, 1, 1] == 1
    assert i1.ids[0].tolist() == [0, 1] and i1.mask[0].tolist() == [True, True]  # users of i0 before 7
    (u1, _), _ = graphs.batch([1], [2], [0])                                   # before everything
    assert not u1.mask.any()


@pytest.fixture(scope="module")
def movielens(ml100k):
    return load_interactions(ml100k)


def test_no_leakage_on_movielens(movielens):
    split = make_split(movielens, "temporal", 0)
    graphs = SequenceGraphs(split.train, length=10, depth=3)
    rng = np.random.default_rng(0)
    rows = rng.choice(len(split.test), 256, replace=False)
    users, items, t = split.test.user[rows], split.test.item[rows], split.test.ts[rows]
    user_hops, item_hops = graphs.batch(users, items, t)
    assert len(user_hops) == 3 and len(item_hops) == 2 and user_hops[0].mask.any()
    for hops in (user_hops, item_hops):
        parent = t                                                # [B], then [B, L], [B, L, L]
        for hop in hops:
            before = np.broadcast_to(parent[..., None], hop.ts.shape)
            assert (hop.ts[hop.mask] < before[hop.mask]).all()    # strictly before the parent
            root = np.broadcast_to(t.reshape(-1, *[1] * (hop.ts.ndim - 1)), hop.ts.shape)
            assert (hop.ts[hop.mask] < root[hop.mask]).all()      # and before the scoring time
            parent = hop.ts
    # sequences end at the user's most recent training interaction before t
    u1 = user_hops[0]
    b = int(np.flatnonzero(u1.mask[:, -1])[0])
    hist = split.train.ts[(split.train.user == users[b]) & (split.train.ts < t[b])]
    assert u1.ts[b, -1] == hist.max() and u1.mask[b].sum() == min(10, len(hist))
