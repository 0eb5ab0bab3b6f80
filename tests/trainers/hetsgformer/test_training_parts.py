"""The parts around the training loop: split graphs, hard-negative pools, validation, curves."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import random_graph

from graphs.exceptions import GraphFormatError
from graphs.partition import PartitionConfig, partition_graph
from graphs.shards import ShardStore
from graphs.store import GraphDir
from trainers.evaluation.split_graph import write_split_graph
from trainers.evaluation.splits import Interactions, load_interactions, random_split
from trainers.hetsgformer.batch_loss import HardPool, drop_target_edges, history_mask
from trainers.hetsgformer.curves import write_metrics
from trainers.hetsgformer.validation import Validator, popularity_prior, write_pairs

EDGES = {("user", "rates", "item", True, True): 3000, ("item", "in", "cat", False, False): 200}
COUNTS = {"user": 60, "item": 100, "cat": 5}


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    path = tmp_path_factory.mktemp("parts") / "g"
    random_graph(path, 3, COUNTS, EDGES)
    return path


@pytest.fixture(scope="module")
def store(graph, tmp_path_factory, ray_local):
    """The graph partitioned into 2 shards, once for the module."""
    parts = tmp_path_factory.mktemp("parts2") / "p"
    partition_graph(graph, parts, PartitionConfig(num_parts=2))
    return ShardStore(parts)


def test_split_graph_keeps_train_edges_only(graph, tmp_path):
    inter = load_interactions(graph, "user__rates__item")
    split = random_split(inter, seed=0)
    out = write_split_graph(graph, tmp_path / "split", split.train, "user__rates__item")
    g = GraphDir(out, validate="full")
    edges = g.read_edges("user__rates__item")
    assert g.schema.edge_type("user__rates__item").count == len(edges["src"]) == len(split.train)
    got = set(zip(edges["src"].tolist(), edges["dst"].tolist()))
    assert got == set(zip(split.train.user.tolist(), split.train.item.tolist()))
    held_out = set(zip(split.test.user.tolist(), split.test.item.tolist())) - got
    assert held_out and not held_out & got  # test pairs not also in train are gone
    source = GraphDir(graph)
    for key in ("item__in__cat",):  # other edge types and all nodes are the source's
        np.testing.assert_array_equal(g.read_edges(key)["dst"], source.read_edges(key)["dst"])
    assert g.schema.node_type("user").count == 60
    with pytest.raises(FileExistsError):
        write_split_graph(graph, out, split.train, "user__rates__item")
    wider = Interactions(split.train.user, split.train.item, split.train.ts, 61, 100)
    with pytest.raises(ValueError, match="joins 60 x 100 nodes"):
        write_split_graph(graph, tmp_path / "bad", wider, "user__rates__item")


def test_hard_pool_draws_top_items_never_the_positive():
    emb = torch.eye(4)                                       # items 10..13 point along the 4 axes
    pool = HardPool(np.array([10, 11, 12, 13]), emb)
    users = torch.tensor([[1.0, 0.9, 0.0, 0.0], [0.0, 0.0, 1.0, 0.5]])
    rng = np.random.default_rng(0)
    for _ in range(20):
        got = pool.draw(users, positives=np.array([10, 13]), count=1, top=2, rng=rng)
        assert got.shape == (2, 1)
        assert got[0, 0] == 11 and got[1, 0] == 12         # the best items that are not positives


def test_validator_masks_train_items_and_names_bad_ids(graph, store, tmp_path):
    target = store.edge_types["user__rates__item"]
    inter = load_interactions(graph, "user__rates__item")
    v = Validator(write_pairs(tmp_path / "valid.parquet", inter.subset(np.arange(50))), store, target)
    users = v.users
    assert len(v.valid) == 50 and set(v.valid.user.tolist()) == set(users.tolist())
    want = {(u, i) for u, i in zip(inter.user.tolist(), inter.item.tolist()) if u in set(users.tolist())}
    assert set(zip(v.train.user.tolist(), v.train.item.tolist())) == want  # the store's train edges
    first = inter.subset(np.arange(3))
    bad = Interactions(first.user, np.array([1, 2, 100]), first.ts, 60, 101)
    with pytest.raises(GraphFormatError, match="column dst has id 100 outside \\[0, 100\\)"):
        Validator(write_pairs(tmp_path / "bad.parquet", bad), store, target)


def test_validator_chooses_the_popularity_prior_on_validation(graph, tmp_path, ray_local):
    from trainers.features import FeatureStore
    from trainers.hetsgformer.config import HetSGFormerConfig
    from trainers.hetsgformer.model import HetSGFormer

    split = random_split(load_interactions(graph, "user__rates__item"), seed=0)
    partition_graph(write_split_graph(graph, tmp_path / "split", split.train, "user__rates__item"), tmp_path / "p",
                    PartitionConfig(num_parts=2))
    store = ShardStore(tmp_path / "p")
    target = store.edge_types["user__rates__item"]
    counts = np.bincount(split.train.item, minlength=100)                 # the training graph's
    np.testing.assert_allclose(popularity_prior(store, target), np.log1p(counts), rtol=1e-6)
    v = Validator(write_pairs(tmp_path / "valid.parquet", split.valid), store, target)
    torch.manual_seed(0)
    model = HetSGFormer(store.schema, HetSGFormerConfig(dim=16, v_max=1000, num_heads=2)).eval()
    args = (model, FeatureStore(GraphDir(graph, validate="none")), [4], "node")
    alone = {w: v.score(*args, weights=(w,)) for w in (0.0, 0.05, 5.0)}
    assert [w for _, w in alone.values()] == [0.0, 0.05, 5.0]
    assert len({round(n, 6) for n, _ in alone.values()}) == 3          # the prior changes the ranking
    best, chosen = v.score(*args, weights=(0.0, 0.05, 5.0))
    assert best == max(n for n, _ in alone.values()) and alone[chosen][0] == best


def test_metrics_csv_and_png(tmp_path):
    rows = [{"epoch": e, "loss": 5.0 - e, "edges_per_s": 100.0 + e, "valid_ndcg@10": 0.1 * e} for e in range(3)]
    rows[0]["valid_ndcg@10"] = float("nan")
    write_metrics(tmp_path, rows, rows[-1])
    with open(tmp_path / "metrics.csv") as f:
        got = list(csv.DictReader(f))
    assert [float(r["loss"]) for r in got] == [5.0, 4.0, 3.0]
    assert json.loads((tmp_path / "metrics.json").read_text())["final"]["epoch"] == 2
    assert (tmp_path / "metrics.png").read_bytes()[:4] == b"\x89PNG"


def test_drop_target_edges_removes_batch_pairs_both_ways():
    from graphs.samplers import SampledSubgraph
    from graphs.schema import EdgeType

    target = EdgeType("user", "rates", "item", ts=True)
    sub = SampledSubgraph(
        nodes={"user": np.array([5, 7]), "item": np.array([2, 3, 9])},
        edges={"user__rates__item": np.array([[0, 0, 1, 1], [0, 1, 1, 2]]),   # 5-2, 5-3, 7-3, 7-9
               "item__rev_rates__user": np.array([[0, 1, 2], [0, 1, 1]])},   # 2-5, 3-7, 9-7
        edge_ts={"user__rates__item": np.array([10, 11, 12, 13])})
    drop_target_edges(sub, target, src=np.array([5, 7]), dst=np.array([3, 9]))  # positives 5-3 and 7-9
    assert sub.edges["user__rates__item"].T.tolist() == [[0, 0], [1, 1]]         # 5-2 and 7-3 stay
    assert sub.edge_ts["user__rates__item"].tolist() == [10, 12]
    assert sub.edges["item__rev_rates__user"].T.tolist() == [[0, 0], [1, 1]]     # 2-5 and 3-7 stay


def test_history_mask_marks_exactly_the_users_training_items(graph, store, tmp_path):
    target = store.edge_types["user__rates__item"]
    inter = load_interactions(graph, "user__rates__item")
    known = set(zip(inter.user.tolist(), inter.item.tolist()))
    users = np.array([3, 3, 17, 59])
    items = np.random.default_rng(0).integers(0, 100, (4, 40))
    got = history_mask(store, target, users, items)
    want = np.array([[(u, i) in known for i in row] for u, row in zip(users.tolist(), items.tolist())])
    assert want.any() and not want.all()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("per", ["relation", "node", "edge"])
def test_embeddings_do_not_depend_on_the_chunking(graph, store, per):
    from trainers.features import FeatureStore
    from trainers.hetsgformer.config import HetSGFormerConfig
    from trainers.hetsgformer.inference import embed_nodes
    from trainers.hetsgformer.model import HetSGFormer

    features = FeatureStore(GraphDir(graph, validate="none"))
    torch.manual_seed(0)
    model = HetSGFormer(store.schema, HetSGFormerConfig(dim=16, num_heads=2))
    ids = np.arange(100)
    whole = embed_nodes(model, store, features, "item", ids, [4], chunk=100, per=per)
    small = embed_nodes(model, store, features, "item", ids, [4], chunk=7, per=per)
    torch.testing.assert_close(small, whole, atol=1e-5, rtol=1e-4)
    some = embed_nodes(model, store, features, "item", ids[[5, 50, 99]], [4], per=per)
    torch.testing.assert_close(some, whole[[5, 50, 99]], atol=1e-5, rtol=1e-4)
    assert whole.std(0).mean() > 1e-3                                     # rows differ


def test_a_user_with_less_history_leans_more_on_popularity(tmp_path):
    from trainers.hetsgformer.export import ranking_scores
    from trainers.hetsgformer.validation import user_prior_weights

    assert user_prior_weights(0.3, np.array([0, 1, 2, 100]), cold=1.0).tolist() == pytest.approx(
        [1.0, 1.0, 0.65, 0.307])
    version = tmp_path / "v0001"
    version.mkdir()
    np.save(version / "user.npy", np.array([[1.0, 0.0], [1.0, 0.0]], np.float32))     # both like item 0
    np.save(version / "item.npy", np.array([[1.0, 0.0], [0.0, 1.0]], np.float32))
    np.save(version / "prior.npy", np.array([0.0, 1.0], np.float32))                  # item 1 is popular
    np.save(version / "activity.npy", np.array([1, 1000]))                            # user 0 has one edge
    (version / "meta.json").write_text(json.dumps({"prior": {"type": "item", "weight": 0.3, "cold_weight": 1.5}}))
    scores = ranking_scores(version, "user", "item")(torch.tensor([0, 1]))
    assert scores[0].tolist() == pytest.approx([1.0, 1.5]) and scores[1].tolist() == pytest.approx([1.0, 0.3012])
    # a version exported before the per-user weights: one weight for every user
    (version / "meta.json").write_text(json.dumps({"prior": {"type": "item", "weight": 0.3}}))
    assert ranking_scores(version, "user", "item")(torch.tensor([0]))[0].tolist() == pytest.approx([1.0, 0.3])
