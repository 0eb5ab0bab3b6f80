"""The graph a model trains on under each protocol holds the training interactions and no
user-item edge of any scored part (the other edge types are kept whole)."""

from __future__ import annotations

import numpy as np
import pytest

from graphs.store import GraphDir
from trainers.evaluation.evaluate import fit_part, make_split
from trainers.evaluation.split_graph import write_split_graph
from trainers.evaluation.splits import concat, load_interactions

ETYPE = "user__rates__movie"


@pytest.mark.parametrize("protocol", ["random", "temporal"])
def test_split_graph_shares_no_edge_with_what_is_scored(ml100k, tmp_path, protocol):
    inter = load_interactions(ml100k, ETYPE)
    split = make_split(inter, protocol, seed=0)
    scored = concat(split.valid, split.test, *([split.cold_test] if split.cold_test is not None else []))
    graph = GraphDir(write_split_graph(ml100k, tmp_path / "g", fit_part(split), ETYPE), validate="full")
    edges = graph.read_edges(ETYPE)
    keys = edges["src"].astype(np.int64) * inter.num_items + edges["dst"]
    fit = fit_part(split)
    assert np.array_equal(np.sort(keys), np.sort(fit.user * inter.num_items + fit.item))
    assert not np.isin(scored.user * inter.num_items + scored.item, keys).any()
    assert len(scored) > 1000 and len(keys) + len(scored) == len(inter)       # every rating in one part
    source = GraphDir(ml100k, validate="none").schema
    assert {e.key: e.count for e in graph.schema.edge_types if e.key != ETYPE} == \
        {e.key: e.count for e in source.edge_types if e.key != ETYPE}
