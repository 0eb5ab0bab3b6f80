"""DeltaGraph: the shard store plus added nodes and added/removed half-edges."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_graph

from graphs.delta import DeltaGraph
from graphs.exceptions import GraphFormatError
from graphs.partition import PartitionConfig, partition_graph
from graphs.shards import ShardStore


@pytest.fixture(scope="module")
def store(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("delta")
    random_graph(root / "g", 11, {"user": 30, "item": 20}, {("user", "rates", "item", True, True): 200})
    partition_graph(root / "g", root / "p", PartitionConfig(num_parts=3))
    return ShardStore(root / "p")


def test_added_and_removed_edges_show_in_neighbors_and_degree(store):
    g = DeltaGraph(store)
    ekey = "user__rates__item"
    base = store.neighbors(ekey, [4])
    (u,) = g.add_nodes("user", 1)
    assert u == 30 and g.counts["user"] == 31 and store.counts["user"] == 30
    g.add_edges(ekey, [4, 4, u], [7, 9, 9], ts=[1, 2, 3], weight=[0.5, 0.5, 2.0])
    nb = g.neighbors(ekey, [4, u, 5])
    assert list(nb.ids[nb.ptr[0]:nb.ptr[1]]) == list(base.ids) + [7, 9]          # base first, then added
    assert list(nb.ids[nb.ptr[1]:nb.ptr[2]]) == [9] and nb.ts[nb.ptr[1]] == 3 and nb.weight[nb.ptr[1]] == 2.0
    gone = int(base.ids[0])
    g.remove_edges(ekey, [4], [gone])
    nb = g.neighbors(ekey, [4])
    assert gone not in set(nb.ids) and len(nb.ids) == len(base.ids) + 2 - int((base.ids == gone).sum())
    np.testing.assert_array_equal(g.degree(ekey, [4, u, 5]), np.diff(g.neighbors(ekey, [4, u, 5]).ptr))
    assert g.changed("user", np.array([4, u, 5])).tolist() == [3, 1, 0]
    g.add_edges(ekey, [4], [gone])                                # re-adding undoes the removal
    assert gone in set(g.neighbors(ekey, [4]).ids)


def test_bad_ids_and_types_are_named(store):
    g = DeltaGraph(store)
    with pytest.raises(GraphFormatError, match="dst id 20 out of range for type 'item' \\(20 nodes\\)"):
        g.add_edges("user__rates__item", [1], [20])
    with pytest.raises(GraphFormatError, match="unknown edge type 'user__buys__item'"):
        g.neighbors("user__buys__item", [1])
    with pytest.raises(GraphFormatError, match="unknown node type 'shop'"):
        g.add_nodes("shop", 2)
