"""ILLE maths: reconstruction weights, neighbour rings, joint solve, degenerate cases."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_graph

from graphs.delta import DeltaGraph
from graphs.partition import PartitionConfig, partition_graph
from graphs.samplers import node_key, select_neighbors, split_key
from graphs.shards import ShardStore
from trainers.ille.weights import DEGREE_FALLBACK, ISOLATED, LLE, SINGLE, ILLEConfig, lle_weights, solve_joint


def test_convex_combination_gives_back_its_weights():
    rng = np.random.default_rng(0)
    nb = rng.normal(size=(1, 3, 6))                     # 3 neighbours in 6 dims: not collinear
    a = np.array([0.2, 0.3, 0.5])
    x = (a[:, None] * nb[0]).sum(0)[None]
    w, status = lle_weights(x, nb, np.ones((1, 3), bool), reg=1e-9)
    assert status[0] == LLE
    np.testing.assert_allclose(w[0], a, atol=1e-6)
    # Invariant to rotation, scale and translation of the input space.
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    w2, _ = lle_weights(3 * x @ q + 1, 3 * nb @ q + 1, np.ones((1, 3), bool), reg=1e-9)
    np.testing.assert_allclose(w2, w, atol=1e-6)


def test_weights_follow_the_neighbours_more_as_the_regulariser_shrinks():
    """A neighbour that explains x gets the largest weight; with r = 1e-2 it dominates, with
    the default r (chosen on validation) the weights stay nearer uniform but keep the order."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 16))
    nb = x[:, None, :] + rng.normal(size=(1, 8, 16)) * np.array([0.1] + [1.0] * 7)[None, :, None]
    sharp, status = lle_weights(x, nb, np.ones((1, 8), bool), reg=1e-2)
    assert status[0] == LLE and sharp[0].sum() == pytest.approx(1)
    assert sharp[0, 0] > 3 * sharp[0, 1:].max(), sharp[0]
    default, _ = lle_weights(x, nb, np.ones((1, 8), bool), reg=ILLEConfig().reg)
    assert default[0].argmax() == 0 and default[0, 0] > 1.2 / 8, default[0]
    assert np.abs(default[0] - 1 / 8).max() < np.abs(sharp[0] - 1 / 8).max()


def test_degenerate_neighbourhoods_have_defined_answers():
    x = np.zeros((4, 2))
    nb = np.zeros((4, 3, 2))
    nb[1, 0] = [1, 0]
    nb[2] = [[1, 1], [1, 1], [0, 2]]                  # duplicates: G singular without reg
    mask = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], bool)   # row 3: nb == x
    w, status = lle_weights(x, nb, mask, reg=1e-3, degree=np.array([[0, 0, 0]] * 3 + [[0, 3, 0]]))
    assert list(status) == [ISOLATED, SINGLE, LLE, DEGREE_FALLBACK]
    assert np.isfinite(w).all()
    np.testing.assert_allclose(w[0], 0)
    np.testing.assert_allclose(w[1], [1, 0, 0])
    np.testing.assert_allclose(w[2, :2].sum() + w[2, 2], 1)
    assert w[2, 0] == pytest.approx(w[2, 1])            # the two copies share their weight
    np.testing.assert_allclose(w[3], [2 / 3, 1 / 3, 0])  # 1/sqrt(1+deg), normalised


def test_joint_solve_matches_dense_least_squares_and_flags_unanchored():
    rng = np.random.default_rng(1)
    yk = rng.normal(size=(5, 4))
    # u0 <- 0.5 k0 + 0.5 u1; u1 <- 0.3 k1 + 0.7 u0; u2 <- u3, u3 <- u2 (no anchor)
    rows, cols, w = np.array([0, 1, 2, 3]), np.array([1, 0, 3, 2]), np.array([0.5, 0.7, 1.0, 1.0])
    b = np.zeros((4, 4))
    b[0], b[1] = 0.5 * yk[0], 0.3 * yk[1]
    Y, anchored = solve_joint(rows, cols, w, b, np.array([1, 1, 0, 0], bool))
    assert list(anchored) == [True, True, False, False]
    A = np.array([[1, -0.5], [-0.7, 1]])
    np.testing.assert_allclose(Y[:2], np.linalg.solve(A, b[:2]), atol=1e-5)
    np.testing.assert_allclose(Y[2:], 0)


@pytest.fixture(scope="module")
def delta(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("ille")
    random_graph(root / "g", 3, {"user": 50, "item": 40},
                 {("user", "rates", "item", True, False): 400})
    partition_graph(root / "g", root / "p", PartitionConfig(num_parts=2))
    return DeltaGraph(ShardStore(root / "p"))


def test_rings_rank_one_hop_first_then_shared_neighbours(delta):
    types = ["user", "item"]
    g = DeltaGraph(delta.store)
    (u,) = g.add_nodes("user", 1)
    g.add_edges("user__rates__item", [u, u], [3, 7], ts=[5, 9])
    g.add_edges("item__rev_rates__user", [3, 7], [u, u], ts=[5, 9])
    sets = select_neighbors(g, types, node_key(0, [u]), k=8)
    t, ids = split_key(sets.keys)
    assert sets.degree1[0] == 2 and list(sets.hop[:2]) == [1, 1]
    assert list(zip(t[:2], ids[:2])) == [(1, 7), (1, 3)]       # by recency: ts 9 first
    assert len(ids) == 8 and (sets.hop[2:] == 2).all() and (t[2:] == 0).all()
    raters = set(g.neighbors("item__rev_rates__user", [3]).ids) | set(g.neighbors("item__rev_rates__user", [7]).ids)
    assert set(ids[2:]) <= raters - {u}
    both = set(g.neighbors("item__rev_rates__user", [3]).ids) & set(g.neighbors("item__rev_rates__user", [7]).ids)
    if both:                                                    # users sharing both items rank first
        assert ids[2] in both
    # Removing an edge drops that neighbour; adaptive k follows the degree.
    g.remove_edges("user__rates__item", [u], [7])
    sets = select_neighbors(g, types, node_key(0, [u]), ILLEConfig(adaptive_k=True, k_min=3, k_max=5).k_for)
    assert split_key(sets.keys)[1][0] == 3 and len(sets.keys) == 5   # ceil(4 log2 3) = 7 -> k_max 5


def test_neighbour_type_rules():
    types = ["user", "movie", "genre", "age_group", "entity"]
    counts = {"user": 943, "movie": 1682, "genre": 19, "age_group": 7, "entity": 20_000}
    user_adj, movie_adj = {"movie", "age_group"}, {"user", "genre", "entity", "movie"}
    target = ("user", "movie")
    assert ILLEConfig().allowed("user", types, counts, user_adj, target) == ["movie"]    # not 2-hop users, not age
    assert ILLEConfig().allowed("movie", types, counts, movie_adj, target) == ["user"]   # its users only
    assert ILLEConfig().allowed("entity", types, counts, {"movie", "entity"}, target) == ["movie", "entity"]
    auto = ILLEConfig(neighbour_types="auto")
    assert auto.allowed("user", types, counts, user_adj) == ["movie"]
    assert auto.allowed("movie", types, counts, movie_adj) == ["user", "movie", "entity"]
    assert ILLEConfig(neighbour_types="adjacent").allowed("user", types, counts, user_adj) == ["movie", "age_group"]
    assert ILLEConfig(neighbour_types="all").allowed("user", types, counts, user_adj) == types
    assert ILLEConfig(neighbour_types={"user": ("user",)}).allowed("user", types, counts, user_adj) == ["user"]
    with pytest.raises(Exception, match="neighbour_types must be"):
        ILLEConfig(neighbour_types="nearest")
