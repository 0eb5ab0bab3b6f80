"""Full-ranking metrics and AUC against independent computations: a per-user reference
written from RecBole's definitions (sorted lists, no vectorisation), a hand-worked case,
ties, candidate restriction, and AUC as the share of correctly ordered pairs."""

from __future__ import annotations

from itertools import product
from math import log2

import numpy as np
import pytest
import torch

from trainers.evaluation.metrics import evaluate_scores
from trainers.evaluation.splits import Interactions
from trainers.ranking.dsgl_samples import auc, gauc, popularity_before


def interactions(pairs, num_users, num_items) -> Interactions:
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return Interactions(pairs[:, 0], pairs[:, 1], np.zeros(len(pairs), np.int64), num_users, num_items)


def reference(scores: np.ndarray, test: set, masked: set, k: int, candidates=None) -> dict[str, float]:
    """RecBole's Recall/NDCG/Hit/MRR@k for one user, from a sorted list."""
    items = [i for i in range(len(scores)) if i not in masked and (candidates is None or i in candidates)]
    ranked = sorted(items, key=lambda i: -scores[i])[:k]
    hits = [i in test for i in ranked]
    dcg = sum(1 / log2(r + 2) for r, h in enumerate(hits) if h)
    idcg = sum(1 / log2(r + 2) for r in range(min(k, len(test))))
    first = next((r + 1 for r, h in enumerate(hits) if h), None)
    return {f"recall@{k}": sum(hits) / len(test), f"ndcg@{k}": dcg / idcg, f"hit@{k}": float(any(hits)),
            f"mrr@{k}": 1 / first if first else 0.0}


@pytest.mark.parametrize("seed, restrict", product(range(5), [False, True]))
def test_full_ranking_metrics_equal_the_reference(seed, restrict):
    rng = np.random.default_rng(seed)
    users, items = 12, 40
    scores = rng.permutation(users * items).reshape(users, items).astype(np.float32)   # distinct: no ties
    pairs = {(u, i) for u in range(users) for i in rng.choice(items, 8, replace=False)}
    pairs = sorted(pairs)
    train = [p for j, p in enumerate(pairs) if j % 3 == 0]
    test = [p for j, p in enumerate(pairs) if j % 3 != 0]
    candidates = set(rng.choice(items, 25, replace=False).tolist()) if restrict else None
    if restrict:
        test = [p for p in test if p[1] in candidates]
    got = evaluate_scores(lambda u: torch.from_numpy(scores[u.numpy()]), interactions(test, users, items),
                          interactions(train, users, items), ks=(5, 10),
                          candidates=np.array(sorted(candidates)) if restrict else None)
    want = {}
    scored = sorted({u for u, _ in test})
    for k in (5, 10):
        per_user = [reference(scores[u], {i for v, i in test if v == u}, {i for v, i in train if v == u}, k,
                              candidates) for u in scored]
        want.update({name: float(np.mean([r[name] for r in per_user])) for name in per_user[0]})
    assert got == pytest.approx(want, abs=1e-6)


def test_hand_worked_case():
    # one user, 5 items scored 5..1; item 0 masked; test {2, 4}: ranks are 1, 2, 3, 4 -> items 1, 2, 3, 4
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    got = evaluate_scores(lambda u: scores[u], interactions([(0, 2), (0, 4)], 1, 5), interactions([(0, 0)], 1, 5),
                          ks=(3,))
    idcg = 1 + 1 / log2(3)
    assert got == pytest.approx({"recall@3": 0.5, "ndcg@3": (1 / log2(3)) / idcg, "hit@3": 1.0, "mrr@3": 0.5})


def test_ties_give_a_value_between_the_worst_and_the_best_order():
    # every item scores the same: any order of the 9 unmasked items is a valid ranking
    scores = torch.zeros(1, 10)
    test, train = interactions([(0, 7), (0, 9)], 1, 10), interactions([(0, 0)], 1, 10)
    got = evaluate_scores(lambda u: scores[u], test, train, ks=(3,))
    best = reference(np.array([0, 0, 0, 0, 0, 0, 0, 2, 0, 1.0]), {7, 9}, {0}, 3)
    worst = reference(np.array([0, 1, 1, 1, 1, 1, 1, 0, 1, 0.0]), {7, 9}, {0}, 3)
    for name in got:
        assert worst[name] - 1e-9 <= got[name] <= best[name] + 1e-9


def test_ties_are_broken_at_random_not_by_item_id():
    # 100 items, all tied but item 50 (a hair above, below float32's step at 1.0 it would be lost):
    # item 50 ranks first on every tie order, and a test item among the ties is found at the
    # same average rank whether its id is low or high (by id, item 1 always made the top 10)
    scores = torch.ones(1, 100)
    scores[0, 50] += 1e-6
    train = interactions([(0, 0)], 1, 100)
    for seed in range(3):
        got = evaluate_scores(lambda u: scores[u], interactions([(0, 50)], 1, 100), train, ks=(1,), tie_seed=seed)
        assert got["hit@1"] == 1.0
    low, high = ([evaluate_scores(lambda u: scores[u], interactions([(0, item)], 1, 100), train, ks=(10,),
                                  tie_seed=seed)["hit@10"] for seed in range(200)] for item in (1, 98))
    assert 0.03 < np.mean(low) < 0.17 and 0.03 < np.mean(high) < 0.17     # 9 of 98 tied slots: 0.092
    assert evaluate_scores(lambda u: scores[u], interactions([(0, 1)], 1, 100), train, ks=(10,)) == \
        evaluate_scores(lambda u: scores[u], interactions([(0, 1)], 1, 100), train, ks=(10,))   # deterministic


def test_masked_items_never_count_even_if_in_test():
    scores = torch.tensor([[3.0, 2.0, 1.0]])
    got = evaluate_scores(lambda u: scores[u], interactions([(0, 0), (0, 2)], 1, 3), interactions([(0, 0)], 1, 3),
                          ks=(1,))
    assert got["hit@1"] == 0.0 and got["recall@1"] == 0.0


def pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The share of (positive, negative) pairs ordered right, ties counting one half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_the_pairwise_definition(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.normal(size=60) + labels, 1)          # rounded: many ties
    assert auc(labels, scores) == pytest.approx(pairwise_auc(labels, scores))
    assert auc(labels, -scores) == pytest.approx(1 - auc(labels, scores))
    with pytest.raises(ValueError, match="both classes"):
        auc(np.ones(4), np.arange(4.0))


def test_gauc_is_the_sample_weighted_mean_of_per_user_auc():
    rng = np.random.default_rng(3)
    users = rng.integers(0, 6, 120)
    labels = rng.integers(0, 2, 120)
    labels[users == 5] = 1                                      # one class only: left out
    scores = np.round(rng.normal(size=120) + labels, 1)
    per_user = [(np.sum(users == u), pairwise_auc(labels[users == u], scores[users == u])) for u in range(5)]
    want = sum(n * a for n, a in per_user) / sum(n for n, _ in per_user)
    assert gauc(users, labels, scores) == pytest.approx(want)
    assert gauc(users, labels, scores) != pytest.approx(auc(labels, scores))


def test_popularity_counts_only_what_came_before():
    known = Interactions(np.arange(6), np.array([0, 0, 0, 1, 1, 2]), np.array([1, 5, 9, 2, 40, 3]), 6, 3)
    items, ts = np.array([0, 0, 0, 1, 1, 2, 2]), np.array([1, 6, 100, 41, 40, 3, 4])
    assert popularity_before(known, items, ts).tolist() == [0, 2, 3, 2, 1, 0, 1]
    assert popularity_before(known, items, ts, window=5).tolist() == [0, 2, 0, 1, 0, 0, 1]
