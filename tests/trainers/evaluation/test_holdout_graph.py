"""Cold-start graphs: held-out nodes renumbered last, their edges turned into events."""

from __future__ import annotations

import numpy as np
from conftest import random_graph

from graphs.store import GraphDir
from trainers.evaluation.holdout_graph import node_events, renumber, write_renumbered_graph


def test_renumbered_graph_keeps_warm_nodes_and_events_recreate_the_rest(tmp_path):
    _, data = random_graph(tmp_path / "g", 5, {"user": 6, "item": 5, "tag": 3},
                           {("user", "rates", "item", True, False): 30, ("item", "has", "tag", False, False): 8})
    cold = {"user": np.array([4, 1]), "item": np.array([2])}
    remap = renumber({"user": 6, "item": 5, "tag": 3}, cold)
    assert list(remap["user"]) == [0, 5, 1, 2, 4, 3] and list(remap["item"]) == [0, 1, 4, 2, 3]
    rates = data["user__rates__item"]
    warm = ~np.isin(rates["src"], cold["user"]) & ~np.isin(rates["dst"], cold["item"])
    target = {"src": remap["user"][rates["src"][warm]], "dst": remap["item"][rates["dst"][warm]],
              "ts": rates["ts"][warm]}
    write_renumbered_graph(tmp_path / "g", tmp_path / "base", remap, {"user": 4, "item": 4, "tag": 3},
                           "user__rates__item", target)
    base = GraphDir(tmp_path / "base")                     # validates ids against the counts
    assert [n.count for n in base.schema.node_types] == [4, 4, 3]
    assert base.read_nodes("user")["raw_id"].to_pylist() == ["user0", "user2", "user3", "user5"]
    has = data["item__has__tag"]
    assert base.schema.edge_type("item__has__tag").count == int((has["src"] != 2).sum())
    nodes, edges = node_events(tmp_path / "g", remap, cold, exclude=("user__rates__item",))
    assert [(e["ntype"], e["id"]) for e in nodes] == [("user", 4), ("user", 5), ("item", 4)]
    assert sorted((e["src"], e["dst"]) for e in edges) == sorted((4, int(t)) for t in has["dst"][has["src"] == 2])
