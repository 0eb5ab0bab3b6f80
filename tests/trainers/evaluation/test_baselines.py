"""Baselines on real MovieLens-100K (random split, seed 0), scored by trainers.evaluation.metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.nn import LightGCN

from trainers.evaluation.baselines import BPRConfig, bipartite_adjacency, fit_lightgcn, fit_mf_bpr, fit_popularity
from trainers.evaluation.evaluate import evaluate_scores, format_table, load_interactions, random_split, run_eval
from trainers.evaluation.splits import Interactions


@pytest.fixture(scope="module")
def split(ml100k):
    return random_split(load_interactions(ml100k), seed=0)


@pytest.fixture(scope="module")
def pop_ndcg(split):
    return evaluate_scores(fit_popularity(split.train), split.test, [split.train, split.valid])["ndcg@10"]


def test_interactions_loaded(ml100k, split):
    inter = load_interactions(ml100k)
    assert (inter.num_users, inter.num_items, len(inter)) == (943, 1682, 100_000)
    assert len(split.train) + len(split.valid) + len(split.test) == 100_000


def test_popularity_in_published_range(pop_ndcg):
    assert 0.05 < pop_ndcg < 0.25


def test_mf_bpr_beats_popularity(split, pop_ndcg):
    got = evaluate_scores(fit_mf_bpr(split.train, seed=0), split.test, [split.train, split.valid])
    print(f"mf: {got}")
    assert got["ndcg@10"] > pop_ndcg + 0.05


@pytest.mark.slow
def test_lightgcn_beats_popularity(split, pop_ndcg):
    # 20 epochs clear popularity by far; the tuned default trains longer (BENCHMARKS.md)
    got = evaluate_scores(fit_lightgcn(split.train, seed=0, config=BPRConfig(epochs=20, lr=1e-2)),
                          split.test, [split.train, split.valid])
    print(f"lightgcn: {got}")
    assert got["ndcg@10"] > pop_ndcg + 0.05


@pytest.mark.parametrize("fit", [fit_mf_bpr, fit_lightgcn])
def test_validation_curve_hook_sees_every_epoch(split, fit):
    """``on_epoch`` scores the model as it is after each epoch (what the baseline grid reads)."""
    curve = []
    score = fit(split.train, seed=0, config=BPRConfig(epochs=3, lr=1e-2),
                on_epoch=lambda epoch, fn: curve.append(
                    (epoch, evaluate_scores(fn, split.valid, [split.train], ks=(10,))["ndcg@10"])))
    assert [e for e, _ in curve] == [0, 1, 2]
    assert curve[-1][1] > curve[0][1]                                   # it learns between epochs
    final = evaluate_scores(score, split.valid, [split.train], ks=(10,))["ndcg@10"]
    assert final == pytest.approx(curve[-1][1])                         # the last hook saw the returned model


def test_csr_adjacency_propagates_like_edge_index():
    rng = np.random.default_rng(0)
    train = Interactions(rng.integers(0, 7, 40), rng.integers(0, 9, 40), np.zeros(40, dtype=np.int64), 7, 9)
    pairs = np.unique(np.stack([train.user, train.item + 7]), axis=1)
    edge_index = torch.from_numpy(np.concatenate([pairs, pairs[::-1]], axis=1))
    model = LightGCN(16, 4, 3)
    torch.testing.assert_close(model.get_embedding(bipartite_adjacency(train)), model.get_embedding(edge_index))


def test_run_eval_pop_both_protocols(ml100k, pop_ndcg):
    random = run_eval(ml100k, models=["pop"], protocol="random", seeds=[0, 1])
    assert random["pop"]["ndcg@10"]["std"] > 0
    assert abs(random["pop"]["ndcg@10"]["mean"] - pop_ndcg) < 0.02
    temporal = run_eval(ml100k, models=["pop", "mf"], protocol="temporal", seeds=[0])
    assert {f"{segment}_{metric}" for segment in ("warm", "cold", "new_item") for metric in
            ("ndcg@20", "mrr@10", "hit@10", "recall@20")} <= set(temporal["pop"])
    assert "ndcg@10" not in temporal["pop"]                 # no unsegmented number to misread
    assert "pop" in format_table(temporal)
    with pytest.raises(ValueError, match="unknown models"):
        run_eval(ml100k, models=["nope"])


def test_step_cap_grows_the_batch_on_large_data_only():
    capped = BPRConfig(batch_size=2048, max_steps_per_epoch=64)
    assert capped.batch_for(80_000) == 2048                 # MovieLens-100K keeps its tuned batch
    assert capped.batch_for(1_000_000) == 15_625            # 64 steps of ceil(1e6 / 64)
    assert BPRConfig(batch_size=2048).batch_for(1_000_000) == 2048
    with pytest.raises(ValueError, match="max_steps_per_epoch"):
        BPRConfig(max_steps_per_epoch=0)
