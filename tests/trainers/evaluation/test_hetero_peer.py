"""Heterogeneous peers (R-GCN, HGT) on a small graph with planted clusters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import HeteroData
from torch_geometric.nn import HGTConv
from torch_geometric.utils import scatter

from graphs.exceptions import GraphFormatError
from graphs.schema import EdgeType, GraphSchema, NodeType
from graphs.store import GraphWriter
from trainers.evaluation.baselines import BPRConfig, fit_popularity
from trainers.evaluation.hetero_peer import (
    HETERO_PEERS,
    FastHGTConv,
    PeerModelConfig,
    RGCNLayer,
    build_hetero_data,
    fit_hetero_peer,
    relation_groups,
)
from trainers.evaluation.metrics import evaluate_scores
from trainers.evaluation.splits import load_interactions, random_split

USERS, ITEMS, CLUSTERS = 120, 150, 6


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny graphs: a second thread only adds sync cost (~20x slower when another job holds a core)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """User u likes the items of cluster ``u % 6``; items and users also link to a cluster tag.

    Every item is about as popular as any other, so popularity is near random.
    """
    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(USERS):
        own = np.flatnonzero(np.arange(ITEMS) % CLUSTERS == u % CLUSTERS)
        picked = np.concatenate([rng.choice(own, 15, replace=False), rng.choice(ITEMS, 3, replace=False)])
        picked = np.unique(picked)  # distinct pairs, so train and test share none
        users += [u] * len(picked)
        items += list(picked)
    schema = GraphSchema((NodeType("user", 0), NodeType("item", 0), NodeType("tag", 0)),
                         (EdgeType("user", "rates", "item", ts=True), EdgeType("item", "has", "tag"),
                          EdgeType("user", "follows", "tag")))
    out = tmp_path_factory.mktemp("planted") / "graph"
    with GraphWriter(out, schema) as w:
        for name, n in (("user", USERS), ("item", ITEMS), ("tag", CLUSTERS)):
            w.write_nodes(name, {"id": np.arange(n), "raw_id": [f"{name}{i}" for i in range(n)]})
        w.write_edges("user__rates__item", {"src": np.array(users), "dst": np.array(items),
                                            "ts": np.arange(len(users))})
        w.write_edges("item__has__tag", {"src": np.arange(ITEMS), "dst": np.arange(ITEMS) % CLUSTERS})
        w.write_edges("user__follows__tag", {"src": np.arange(USERS), "dst": np.arange(USERS) % CLUSTERS})
    return out


@pytest.fixture(scope="module")
def split(planted):
    return random_split(load_interactions(planted, "user__rates__item"), seed=0)


def test_graph_holds_train_interactions_only(planted, split):
    data = build_hetero_data(planted, split.train, "user__rates__item")
    index = data["user", "rates", "item"].edge_index  # [2, E]
    assert index.shape == (2, len(split.train))
    seen = set(zip(index[0].tolist(), index[1].tolist()))
    assert seen == set(zip(split.train.user.tolist(), split.train.item.tolist()))
    assert not seen & set(zip(split.test.user.tolist(), split.test.item.tolist()))
    assert not seen & set(zip(split.valid.user.tolist(), split.valid.item.tolist()))
    assert torch.equal(data["item", "rev_rates", "user"].edge_index, index.flip(0))
    assert data["item", "has", "tag"].edge_index.shape == (2, ITEMS)
    assert len(data.edge_types) == 6 and data["tag"].num_nodes == CLUSTERS


def test_bad_arguments_are_named(planted, split):
    with pytest.raises(GraphFormatError, match="user__watches__item"):
        fit_hetero_peer(split.train, 0, planted, etype="user__watches__item")
    with pytest.raises(ValueError, match="kind must be one of"):
        fit_hetero_peer(split.train, 0, planted, etype="user__rates__item", kind="gat")
    with pytest.raises(ValueError, match="item__has__tag joins 150 x 6"):
        build_hetero_data(planted, split.train, "item__has__tag")
    with pytest.raises(ValueError, match="dropout"):
        PeerModelConfig(dropout=1.0)


def _two_type_graph(seed: int) -> HeteroData:
    """a (5 nodes) -> b (9 nodes) by two relations, plus reverses: both stacking layouts."""
    g = torch.Generator().manual_seed(seed)
    data = HeteroData()
    data["a"].num_nodes, data["b"].num_nodes = 5, 9
    for rel, e in (("r1", 20), ("r2", 7)):
        index = torch.stack([torch.randint(0, 5, (e,), generator=g), torch.randint(0, 9, (e,), generator=g)])
        data["a", rel, "b"].edge_index = index
        data["b", f"rev_{rel}", "a"].edge_index = index.flip(0)
    return data


def test_rgcn_layer_matches_per_relation_mean():
    torch.manual_seed(0)
    data = _two_type_graph(0)
    layer = RGCNLayer(["a", "b"], {("a", "b"): 2, ("b", "a"): 2}, 4)
    x = {"a": torch.randn(5, 4), "b": torch.randn(9, 4)}
    got = layer(x, relation_groups(data))
    for dst in ("a", "b"):
        want = layer.root[dst](x[dst])
        relations = [(s, r) for s, r, d in data.edge_types if d == dst]
        for j, (src, rel) in enumerate(relations):
            index = data[src, rel, dst].edge_index
            mean = scatter(x[src][index[0]], index[1], dim_size=x[dst].size(0), reduce="mean")  # [N_dst, D]
            want = want + mean @ layer.rel[f"{src}__{dst}"][j]
        torch.testing.assert_close(got[dst], want)


def test_fast_hgt_matches_hgt_conv():
    torch.manual_seed(0)
    data = _two_type_graph(1)
    stock = HGTConv(8, 8, data.metadata(), heads=2)
    fast = FastHGTConv(8, 8, data.metadata(), heads=2)
    fast.load_state_dict(stock.state_dict())
    x = {"a": torch.randn(5, 8, requires_grad=True), "b": torch.randn(9, 8)}
    want, got = stock(x, data.edge_index_dict), fast(x, data.edge_index_dict)
    for t in ("a", "b"):
        torch.testing.assert_close(got[t], want[t])
    (g_want,) = torch.autograd.grad(want["b"].sum(), x["a"])
    (g_got,) = torch.autograd.grad(got["b"].sum(), x["a"])
    torch.testing.assert_close(g_got, g_want)


@pytest.mark.parametrize("kind", ["rgcn", "hgt"])
def test_peer_beats_popularity(planted, split, kind):
    masked = [split.train, split.valid]
    pop = evaluate_scores(fit_popularity(split.train), split.test, masked)["ndcg@10"]
    score = HETERO_PEERS[kind](split.train, 0, planted, etype="user__rates__item",
                               config=BPRConfig(dim=32, epochs=40, batch_size=1024, lr=1e-2))
    got = evaluate_scores(score, split.test, masked)["ndcg@10"]
    print(f"{kind}: ndcg@10 {got:.3f}, popularity {pop:.3f}")
    assert got > pop + 0.15
