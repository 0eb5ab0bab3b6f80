"""Fan-out and k-hop BFS samplers on a real partitioned graph."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_graph

from graphs.partition import PartitionConfig, partition_graph
from graphs.samplers import edge_quotas, iter_seed_edges, node_key, relation_quotas, sample_fanout, select_neighbors, split_key
from graphs.schema import EdgeType, GraphSchema, NodeType
from graphs.shards import ShardStore
from graphs.store import GraphWriter


@pytest.fixture(scope="module")
def random_store(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("sampler")
    schema, data = random_graph(root / "g", 5, {"user": 40, "item": 25},
                                {("user", "clicks", "item", True, False): 400})
    partition_graph(root / "g", root / "p", PartitionConfig(num_parts=3))
    return ShardStore(root / "p"), data["user__clicks__item"]


def test_fanout_samples_real_edges_and_respects_fanout(random_store):
    store, edges = random_store
    real = set(zip(edges["src"].tolist(), edges["dst"].tolist()))
    seeds = np.array([3, 0, 17, 39])
    sub = sample_fanout(store, {"user": seeds}, [4, 3], np.random.default_rng(0))
    np.testing.assert_array_equal(sub.nodes["user"][:4], seeds)  # seeds first, in order
    e = sub.edges["user__clicks__item"]
    users, items = sub.nodes["user"][e[0]], sub.nodes["item"][e[1]]
    assert set(zip(users.tolist(), items.tolist())) <= real
    deg = np.bincount(edges["src"], minlength=40)
    for s in seeds:  # a hop-1 node keeps min(degree, fanout) distinct neighbours
        picked = items[users == s]
        assert len(picked) == min(deg[s], 4)
    rev = sub.edges["item__rev_clicks__user"]  # hop 2 walks back from the sampled items
    assert rev.shape[1] > 0 and len(sub.edge_ts["user__clicks__item"]) == e.shape[1]
    back = set(zip(sub.nodes["user"][rev[1]].tolist(), sub.nodes["item"][rev[0]].tolist()))
    assert back <= real


@pytest.mark.parametrize("per", ["relation", "node", "edge"])
def test_fanout_without_rng_gives_each_node_one_neighbourhood(random_store, per):
    store, edges = random_store
    deg = np.bincount(edges["src"], minlength=40)

    def picked(seeds):
        sub = sample_fanout(store, {"user": seeds}, [3], None, per=per)
        e = sub.edges["user__clicks__item"]
        users, items = sub.nodes["user"][e[0]], sub.nodes["item"][e[1]]
        return {int(s): sorted(items[users == s].tolist()) for s in seeds}

    alone = {s: picked(np.array([s]))[s] for s in range(40)}
    assert picked(np.arange(40)) == alone == picked(np.arange(40)[::-1].copy())   # whatever the batch
    assert all(len(alone[s]) == min(int(deg[s]), 3) for s in range(40))
    hub = int(deg.argmax())
    row = store.neighbors("user__clicks__item", np.array([hub])).ids          # evenly spaced over the row
    assert alone[hub] == sorted(row[[j * len(row) // 3 for j in range(3)]].tolist())


def test_fanout_rejects_repeated_seeds(random_store):
    store, _ = random_store
    with pytest.raises(ValueError, match="seeds of type 'user' repeat ids"):
        sample_fanout(store, {"user": np.array([3, 3])}, [2], np.random.default_rng(0))


def test_fanout_is_uniform(random_store):
    store, edges = random_store
    hub = int(np.bincount(edges["src"]).argmax())
    nbrs = np.sort(edges["dst"][edges["src"] == hub])
    rng = np.random.default_rng(1)
    counts = np.zeros(25)
    for _ in range(400):
        sub = sample_fanout(store, {"user": np.array([hub])}, [2], rng)
        counts += np.bincount(sub.nodes["item"], minlength=25)
    # every neighbour is drawn, none far more than its share (multi-edges count more)
    share = np.bincount(nbrs, minlength=25) / len(nbrs) * 800
    assert (counts[share > 0] > 0).all() and (counts[share == 0] == 0).all()
    assert np.abs(counts - share).max() < 0.5 * share.max() + 20


def test_relation_quotas_water_fill():
    deg = np.array([[1, 50, 0, 3], [40, 50, 0, 3], [2, 0, 0, 3]])   # [R=3, N=4]
    q = relation_quotas(deg, 10, np.random.default_rng(0))
    assert (q <= deg).all()
    np.testing.assert_array_equal(q.sum(0), np.minimum(10, deg.sum(0)))
    np.testing.assert_array_equal(q[:, 0], [1, 7, 2])      # small relations keep every edge
    assert sorted(q[:, 1]) == [0, 5, 5] and (q[:, 2] == 0).all() and (q[:, 3] == 3).all()
    # the draw left over after the level goes to each relation above it equally often
    extra = np.stack([relation_quotas(np.array([[9], [9], [9]]), 10, np.random.default_rng(s))[:, 0]
                      for s in range(300)])
    assert (extra.sum(1) == 10).all() and np.abs((extra == 4).mean(0) - 1 / 3).max() < 0.1


def test_edge_quotas_follow_the_degrees():
    deg = np.array([[1, 50, 0, 3], [40, 50, 0, 3], [2, 0, 0, 3]])   # [R=3, N=4]
    for rng in (np.random.default_rng(0), None):
        q = edge_quotas(deg, 10, rng)
        assert (q <= deg).all()
        np.testing.assert_array_equal(q.sum(0), np.minimum(10, deg.sum(0)))
        assert (q[:, 2] == 0).all() and (q[:, 3] == 3).all()
    np.testing.assert_array_equal(edge_quotas(deg, 10, None)[:, :2], [[1, 5], [9, 5], [0, 0]])  # evenly spaced
    # drawn: relation r's expected share of node 0's 10 draws is 10 * deg[r] / 43
    mean = np.mean([edge_quotas(deg, 10, np.random.default_rng(s))[:, 0] for s in range(400)], axis=0)
    np.testing.assert_allclose(mean, 10 * deg[:, 0] / 43, atol=0.1)


@pytest.fixture(scope="module")
def two_relation_store(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("budget")
    _, data = random_graph(root / "g", 7, {"user": 30, "item": 20, "city": 3},
                           {("user", "clicks", "item", False, False): 600,
                            ("user", "lives_in", "city", False, False): 30})
    partition_graph(root / "g", root / "p", PartitionConfig(num_parts=2))
    return ShardStore(root / "p"), data


def test_fanout_per_node_shares_one_budget(two_relation_store):
    store, data = two_relation_store
    seeds = np.arange(30)
    per_rel = sample_fanout(store, {"user": seeds}, [6], np.random.default_rng(0))
    per_node = sample_fanout(store, {"user": seeds}, [6], np.random.default_rng(0), per="node")
    degree = {k: np.bincount(data[k]["src"], minlength=30) for k in data}
    got = {k: np.bincount(per_node.edges[k][0], minlength=30) for k in data}
    total = got["user__clicks__item"] + got["user__lives_in__city"]
    np.testing.assert_array_equal(total, np.minimum(6, degree["user__clicks__item"] + degree["user__lives_in__city"]))
    # a user's one city survives the budget; clicks fill the rest
    np.testing.assert_array_equal(got["user__lives_in__city"], np.minimum(degree["user__lives_in__city"], 3))
    assert per_node.edges["user__clicks__item"].shape[1] < per_rel.edges["user__clicks__item"].shape[1] + \
        per_rel.edges["user__lives_in__city"].shape[1]
    real = set(zip(data["user__clicks__item"]["src"].tolist(), data["user__clicks__item"]["dst"].tolist()))
    e = per_node.edges["user__clicks__item"]
    assert set(zip(per_node.nodes["user"][e[0]].tolist(), per_node.nodes["item"][e[1]].tolist())) <= real
    with pytest.raises(ValueError, match="per must be one of"):
        sample_fanout(store, {"user": seeds}, [6], np.random.default_rng(0), per="graph")


@pytest.fixture(scope="module")
def hand_store(tmp_path_factory, ray_local):
    """u0 clicked i0 (w=1, t=5), i1 (w=3, t=1), i2 (w=3, t=9); u1, u2 clicked i0; u2 clicked i1."""
    root = tmp_path_factory.mktemp("hand")
    schema = GraphSchema((NodeType("user", 0), NodeType("item", 0)),
                         (EdgeType("user", "clicks", "item", ts=True, weight=True),))
    with GraphWriter(root / "g", schema) as w:
        w.write_nodes("user", {"id": np.arange(4), "raw_id": ["a", "b", "c", "d"]})
        w.write_nodes("item", {"id": np.arange(3), "raw_id": ["x", "y", "z"]})
        w.write_edges("user__clicks__item", {"src": [0, 0, 0, 1, 2, 2], "dst": [0, 1, 2, 0, 0, 1],
                                             "ts": [5, 1, 9, 2, 3, 4], "weight": [1, 3, 3, 1, 1, 1]})
    partition_graph(root / "g", root / "p", PartitionConfig(num_parts=2))
    return ShardStore(root / "p")


def _rings(store, user, k, usable=None):
    sets = select_neighbors(store, ["user", "item"], node_key(0, np.atleast_1d(user)), k=k, usable=usable)
    t, ids = split_key(sets.keys)
    return [("user", "item")[i] for i in t], ids.tolist(), sets.hop.tolist()


def test_k_hop_prefers_weight_then_recency(hand_store):
    types, ids, hops = _rings(hand_store, 0, k=2)
    assert list(zip(types, ids, hops)) == [("item", 2, 1), ("item", 1, 1)]


def test_k_hop_fills_from_second_hop_by_path_count(hand_store):
    types, ids, hops = _rings(hand_store, 0, k=5)
    assert hops == [1, 1, 1, 2, 2]
    # u2 shares two items with u0 (two paths), u1 one; u0 itself never appears
    assert types[3:] == ["user", "user"] and ids[3:] == [2, 1]


def test_k_hop_batches_skip_unusable_nodes_and_handle_isolated(hand_store):
    no_i2 = lambda keys: keys != node_key(1, 2)  # noqa: E731
    types, ids, hops = _rings(hand_store, 0, k=3, usable=no_i2)
    assert ("item", 2) not in set(zip(types, ids))
    assert len(ids) == 3 and hops == [1, 1, 2]
    sets = select_neighbors(hand_store, ["user", "item"], node_key(0, [0, 3, 1]), k=8)
    assert list(np.diff(sets.ptr)) == [5, 0, 3] and sets.degree1.tolist() == [3, 0, 1]  # user d: no edges
    with pytest.raises(ValueError, match="k must be >= 1"):
        _rings(hand_store, 0, k=0)


def test_k_hop_walks_through_unusable_nodes_only_when_asked(hand_store):
    users_only = lambda keys: split_key(keys)[0] == 0  # noqa: E731
    assert _rings(hand_store, 0, k=8, usable=users_only) == ([], [], [])   # items neither kept nor walked
    sets = select_neighbors(hand_store, ["user", "item"], node_key(0, [0]), k=8, usable=users_only, walk_all=True)
    t, ids = split_key(sets.keys)
    # users reached through u0's items, by path count: u2 (i0, i1) before u1 (i0); no 1-hop neighbour
    assert t.tolist() == [0, 0] and ids.tolist() == [2, 1] and sets.hop.tolist() == [2, 2]
    assert sets.degree1.tolist() == [0]


def test_seed_edges_partition_the_edges_across_workers(random_store):
    store, edges = random_store
    rng = np.random.default_rng(3)
    seen = []
    for parts in ([0, 2], [1]):  # two "workers" owning disjoint shards
        got = list(iter_seed_edges(store, "user__clicks__item", parts, 64, rng))
        assert all(len(b["src"]) <= 64 for b in got)
        src = np.concatenate([b["src"] for b in got])
        assert np.isin((src + store.schema.offsets["user"]) % 3, parts).all()  # only owned sources
        seen.append(np.stack([src, np.concatenate([b["dst"] for b in got]),
                              np.concatenate([b["ts"] for b in got])], axis=1))
    both = np.concatenate(seen)
    want = np.stack([edges["src"], edges["dst"], edges["ts"]], axis=1)
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, want.tolist()))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        next(iter_seed_edges(store, "user__clicks__item", [0], 0, rng))
