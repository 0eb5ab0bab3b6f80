"""Metrics against hand computation; random and temporal splits on synthetic interactions."""

from __future__ import annotations

from math import log2

import numpy as np
import pytest
import torch

from trainers.evaluation.evaluate import (evaluate_scores, format_table, make_split, random_split, score_split,
                                          temporal_split)
from trainers.evaluation.splits import Interactions, _ratio_counts


def inter(pairs, num_users=3, num_items=6, ts=None) -> Interactions:
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    ts = np.zeros(len(pairs), dtype=np.int64) if ts is None else np.asarray(ts, dtype=np.int64)
    return Interactions(pairs[:, 0], pairs[:, 1], ts, num_users, num_items)


SCORES = torch.tensor([
    [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # user 0
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # user 1
    [0.5, 0.5, 0.9, 0.1, 0.2, 0.3],  # user 2: no test items, must not enter the averages
])


def fixed(users: torch.Tensor) -> torch.Tensor:
    return SCORES[users]


def test_metrics_match_hand_computation():
    train = inter([(0, 0), (1, 5), (2, 2)])  # each user's top-scored item is a train item
    test = inter([(0, 1), (0, 3), (1, 2)])
    got = evaluate_scores(fixed, test, train, ks=(2, 3))
    # user 0 ranks 1, 2, 3, 4, 5 (item 0 masked), test {1, 3}: hits at ranks 1 and 3
    # user 1 ranks 4, 3, 2, 1, 0 (item 5 masked), test {2}: hit at rank 3
    u0 = {"recall@2": 1 / 2, "ndcg@2": 1 / (1 + 1 / log2(3)), "hit@2": 1, "mrr@2": 1,
          "recall@3": 1, "ndcg@3": (1 + 1 / log2(4)) / (1 + 1 / log2(3)), "hit@3": 1, "mrr@3": 1}
    u1 = {"recall@2": 0, "ndcg@2": 0, "hit@2": 0, "mrr@2": 0,
          "recall@3": 1, "ndcg@3": (1 / log2(4)) / 1, "hit@3": 1, "mrr@3": 1 / 3}
    assert set(got) == set(u0)
    for name in u0:
        assert got[name] == pytest.approx((u0[name] + u1[name]) / 2, abs=1e-6), name


def test_batches_do_not_change_metrics():
    train = inter([(0, 0), (1, 5), (2, 2)])
    test = inter([(0, 1), (0, 3), (1, 2), (2, 0)])
    one = evaluate_scores(fixed, test, train, ks=(1, 2, 3), batch_users=1)
    all_ = evaluate_scores(fixed, test, train, ks=(1, 2, 3), batch_users=1024)
    assert one == pytest.approx(all_, abs=1e-9)


def test_masked_top_item_never_counts():
    train = inter([(0, 0)])
    test = inter([(0, 0), (0, 5)])  # item 0 is both a train item and the top score
    got = evaluate_scores(fixed, test, train, ks=(1,))
    assert got["hit@1"] == 0 and got["recall@1"] == 0
    unmasked = evaluate_scores(fixed, test, inter([]), ks=(1,))
    assert unmasked["recall@1"] == pytest.approx(0.5)


def test_valid_items_masked_when_given_and_padding_never_hits():
    train, valid = inter([(0, 1), (0, 2), (0, 3), (0, 4)]), inter([(0, 0)])
    test = inter([(0, 5)])
    got = evaluate_scores(fixed, test, [train, valid], ks=(1, 10))  # only item 5 left unmasked
    assert got["mrr@1"] == 1 and got["recall@10"] == 1
    both = inter([(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (0, 5)])
    assert evaluate_scores(fixed, test, both, ks=(10,))["hit@10"] == 0  # all masked: -inf never hits


def test_score_fn_shape_checked():
    with pytest.raises(ValueError, match="expected"):
        evaluate_scores(lambda u: torch.zeros(len(u), 5), inter([(0, 1)]), inter([]))


def synthetic(num_users=60, num_items=300, seed=1) -> Interactions:
    """Users with 1..80 interactions, distinct items per user, distinct timestamps."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 80, num_users)
    user = np.repeat(np.arange(num_users), sizes)
    item = np.concatenate([rng.choice(num_items, n, replace=False) for n in sizes])
    ts = rng.permutation(len(user)).astype(np.int64) * 10
    return Interactions(user, item, ts, num_users, num_items)


def keys(part: Interactions) -> np.ndarray:
    return part.user * part.num_items + part.item


def test_ratio_counts_match_recbole():
    # RecBole Dataset._calcu_split_ids: tot=10 -> [8, 1, 1]; tot=5 -> [3, 1, 1]; tot=25 -> [21, 2, 2]
    got = _ratio_counts(np.array([10, 5, 25]), (0.8, 0.1, 0.1))
    assert got.tolist() == [[8, 1, 1], [3, 1, 1], [21, 2, 2]]


def test_random_split_per_user_sizes_disjoint_and_complete():
    data = synthetic()
    split = random_split(data, seed=3)
    parts = [split.train, split.valid, split.test]
    all_keys = np.concatenate([keys(p) for p in parts])
    assert len(all_keys) == len(data) and len(np.unique(all_keys)) == len(all_keys)  # disjoint
    assert np.array_equal(np.sort(all_keys), np.sort(keys(data)))  # union = all
    n = np.bincount(data.user, minlength=data.num_users)
    size = [np.bincount(p.user, minlength=data.num_users) for p in parts]
    small = n < 3
    assert (size[0][small] == n[small]).all()
    big = n >= 10
    for s, r, tol in zip(size, (0.8, 0.1, 0.1), (2.0, 1.0, 1.0)):  # train takes the rounding rest
        assert (np.abs(s[big] - r * n[big]) < tol).all()
    assert (size[2][n >= 3] >= 1).all()
    other = random_split(data, seed=4)
    assert not np.array_equal(np.sort(keys(other.test)), np.sort(keys(split.test)))


def with_newcomers(base: Interactions, users: int = 5, items: int = 3) -> Interactions:
    """``base`` plus ``users`` users and ``items`` items that only appear after its 90% time
    quantile (a user of them has 4 interactions, one on a new item)."""
    rng = np.random.default_rng(11)
    late = int(np.quantile(base.ts, 0.95))
    u = np.repeat(np.arange(base.num_users, base.num_users + users), 4)
    i = rng.integers(0, base.num_items, len(u))
    i[::4] = base.num_items + rng.integers(0, items, users)
    ts = late + rng.integers(0, 1000, len(u))
    return Interactions(np.concatenate([base.user, u]), np.concatenate([base.item, i]), np.concatenate([base.ts, ts]),
                        base.num_users + users, base.num_items + items)


@pytest.mark.parametrize("m", [1, 3])
def test_temporal_segments_follow_the_protocol(m):
    data = with_newcomers(synthetic(num_users=80))
    split = temporal_split(data, train_frac=0.8, first_events=m)
    before = data.ts < split.cut
    assert split.train.ts.max() < split.cut <= split.test.ts.min()
    # warm: every warm test user has training interactions before the cut
    assert np.isin(split.test.users(), split.train.users()).all()
    # cold: exactly the users without any interaction before the cut (the 5 newcomers among them)
    cold = np.setdiff1d(np.unique(data.user[~before]), np.unique(data.user[before]))
    assert np.isin(np.arange(80, 85), cold).all()
    assert np.array_equal(np.unique(split.cold_events.user), cold)
    assert not np.isin(cold, split.train.user).any() and not np.isin(cold, split.test.user).any()
    after_counts = np.bincount(data.user[~before], minlength=data.num_users)
    assert (np.bincount(split.cold_events.user, minlength=data.num_users)[cold]
            == np.minimum(m, after_counts[cold])).all()                       # their first m events
    for u in cold:
        if (split.cold_test.user == u).any():
            assert split.cold_events.ts[split.cold_events.user == u].max() <= split.cold_test.ts[
                split.cold_test.user == u].min()
    # new items: none before the cut; their test rows come from the warm and cold tests
    assert np.array_equal(split.new_items, np.setdiff1d(np.arange(data.num_items), data.item[before]))
    assert np.isin(np.arange(data.num_items - 3, data.num_items), split.new_items).all()
    assert np.isin(split.new_item_test.item, split.new_items).all()
    on_new = np.isin(split.test.item, split.new_items).sum() + np.isin(split.cold_test.item, split.new_items).sum()
    assert len(split.new_item_test) == on_new > 0
    # everything after the cut is in exactly one part; nothing before it is lost
    assert len(split.test) + len(split.cold_events) + len(split.cold_test) == (~before).sum()
    assert len(split.train) == before.sum() and len(split.valid) == 0
    seg = split.segments()
    assert seg["warm_users"] == len(split.test.users()) and seg["cold_users"] == len(split.cold_test.users())
    assert seg["cold_events"] == len(split.cold_events) and seg["new_items"] == len(split.new_items)


def test_temporal_split_holds_out_warm_users_on_request():
    data = synthetic(num_users=80)
    natural, held = temporal_split(data), temporal_split(data, cold_user_frac=0.1, seed=0)
    extra = np.setdiff1d(np.unique(held.cold_events.user), np.unique(natural.cold_events.user))
    assert 0 < len(extra) <= round(0.1 * len(natural.train.users()))
    assert np.isin(extra, natural.train.user).all() and not np.isin(extra, held.train.user).any()
    assert len(held.train) < len(natural.train)
    with pytest.raises(ValueError, match="first_events"):
        temporal_split(data, first_events=0)


def test_temporal_metrics_come_per_segment():
    data = with_newcomers(synthetic(num_users=80))
    split = temporal_split(data, train_frac=0.8)
    popular = torch.from_numpy(np.bincount(split.train.item, minlength=data.num_items).astype(np.float32))
    got = score_split(lambda users: popular.expand(len(users), -1), split, ks=(10,))
    assert {"warm_ndcg@10", "cold_ndcg@10", "new_item_ndcg@10"} <= set(got)
    # new items are ranked among themselves only: a score that prefers them changes nothing there
    boost = popular.clone()
    boost[torch.from_numpy(split.new_items)] += 1e6
    again = score_split(lambda users: boost.expand(len(users), -1), split, ks=(10,))
    assert again["new_item_ndcg@10"] == pytest.approx(got["new_item_ndcg@10"])
    assert again["warm_ndcg@10"] != pytest.approx(got["warm_ndcg@10"])


def test_the_temporal_validation_window_never_sees_the_test_window():
    data = with_newcomers(synthetic(num_users=80))
    test = make_split(data, "temporal", seed=0)
    valid = make_split(data, "temporal-valid", seed=0)
    # the window's own parts all lie before the test cut, its cut at 0.8 of what is there
    for part in (valid.train, valid.test, valid.cold_events, valid.cold_test):
        assert (part.ts < test.cut).all()
    assert valid.cut == int(np.quantile(data.ts[data.ts < test.cut], 0.8, method="higher")) < test.cut
    assert len(valid.train) + len(valid.test) + len(valid.cold_events) + len(valid.cold_test) \
        == (data.ts < test.cut).sum()
    # its new items are new at its own cut: the test's, and any first taken between the cuts
    assert not np.isin(valid.new_items, valid.train.item).any() and np.isin(test.new_items, valid.new_items).all()
    with pytest.raises(ValueError, match="protocol must be one of"):
        make_split(data, "future", seed=0)


def test_temporal_split_rejects_missing_timestamps():
    with pytest.raises(ValueError, match="timestamps"):
        temporal_split(inter([(0, 1), (1, 2)]))


def test_format_table_lists_models_and_metrics():
    table = format_table({"pop": {"ndcg@10": {"mean": 0.1234, "std": 0.01}},
                          "mf": {"ndcg@10": {"mean": 0.2, "std": 0.0}}})
    assert "ndcg@10" in table and "0.1234±0.0100" in table and table.splitlines()[-1].startswith("mf")


def test_format_table_shows_a_metric_only_some_models_have():
    table = format_table({"lerg": {"ndcg@10": {"mean": 0.25, "std": 0.0}, "size_ratio": {"mean": 0.035, "std": 0.0}},
                          "pop": {"ndcg@10": {"mean": 0.14, "std": 0.0}}})
    head, _, lerg, pop = table.splitlines()
    assert "size_ratio" in head and "0.0350" in lerg and pop.split()[-1] == "-"
