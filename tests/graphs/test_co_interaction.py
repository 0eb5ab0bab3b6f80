"""GFM's item-item co-interaction graph, built by a Ray Data job on a real local Ray."""

from __future__ import annotations

import numpy as np
import pytest

from graphs.co_interaction import CoInteractionConfig, build_co_interaction_graph
from graphs.exceptions import ConfigError, OutputExistsError
from graphs.schema import EdgeType, FeatureSpec, GraphSchema, NodeType
from graphs.store import GraphDir, GraphWriter


def _shop(path, late=False):
    """user 0 buys items 0, 1, 2 in that order; user 1 buys 0 then 1 (written out of time
    order); user 2 buys item 3 twice; with ``late``, user 3 buys 2, 0, 1 in time order,
    written as 0, 1, 2."""
    schema = GraphSchema((NodeType("user", 0), NodeType("item", 0, (FeatureSpec("title", "text"),))),
                         (EdgeType("user", "buys", "item", ts=True),), name="shop")
    with GraphWriter(path, schema) as w:
        w.write_nodes("user", {"id": np.arange(4), "raw_id": ["u0", "u1", "u2", "u3"]})
        w.write_nodes("item", {"id": np.arange(4), "raw_id": list("abcd"), "title": ["A", "B", "C", "D"]})
        extra = ([3, 3, 3], [0, 1, 2], [9, 10, 8]) if late else ([], [], [])
        w.write_edges("user__buys__item", {"src": np.array([0, 0, 0, 1, 1, 2, 2, *extra[0]]),
                                           "dst": np.array([0, 1, 2, 1, 0, 3, 3, *extra[1]]),
                                           "ts": np.array([1, 2, 3, 5, 4, 6, 7, *extra[2]])})


def _links(path):
    e = GraphDir(path, validate="full").read_edges("item__co_interacts__item")
    return {(int(a), int(b)): float(w) for a, b, w in zip(e["src"], e["dst"], e["weight"])}


def test_links_count_pairs_within_the_window_and_keep_the_heaviest(tmp_path, ray_local):
    graph = tmp_path / "shop"
    _shop(graph)
    build_co_interaction_graph(graph, tmp_path / "w1", CoInteractionConfig(window=1, top_k=5))
    assert _links(tmp_path / "w1") == {(0, 1): 2.0, (1, 0): 2.0, (1, 2): 1.0, (2, 1): 1.0}   # no (3, 3)
    schema = build_co_interaction_graph(graph, tmp_path / "w2", CoInteractionConfig(window=2, top_k=1))
    assert _links(tmp_path / "w2") == {(0, 1): 2.0, (1, 0): 2.0, (2, 0): 1.0}    # 2's tie: the smaller id
    assert schema.node_type("item").count == 4 and schema.node_types == (schema.node_type("item"),)
    assert GraphDir(tmp_path / "w2").read_nodes("item").column("title").to_pylist() == ["A", "B", "C", "D"]


def test_pairs_follow_time_not_the_written_order(tmp_path, ray_local):
    graph = tmp_path / "shop"
    _shop(graph, late=True)                  # user 3 in time order: 2, 0, 1 -> pairs (2, 0), (0, 1)
    build_co_interaction_graph(graph, tmp_path / "w1", CoInteractionConfig(window=1, top_k=5))
    assert _links(tmp_path / "w1") == {(0, 1): 3.0, (1, 0): 3.0, (1, 2): 1.0, (2, 1): 1.0, (0, 2): 1.0, (2, 0): 1.0}
    build_co_interaction_graph(graph, tmp_path / "min2", CoInteractionConfig(window=1, top_k=5, min_weight=2.0))
    assert _links(tmp_path / "min2") == {(0, 1): 3.0, (1, 0): 3.0}


def test_bad_settings_are_named(tmp_path, ray_local):
    with pytest.raises(ConfigError, match="window must be an int >= 1, got 0"):
        CoInteractionConfig(window=0)
    graph = tmp_path / "shop"
    _shop(graph)
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputExistsError, match="already exists"):
        build_co_interaction_graph(graph, tmp_path / "taken")
