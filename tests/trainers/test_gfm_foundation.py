"""GFM's foundation layer end to end on a real local Ray: text -> co-interaction graph ->
GraphSAGE link prediction -> item embeddings, including an item with only a title."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cluster.cli import main
from graphs.exceptions import ConfigError
from graphs.schema import EdgeType, FeatureSpec, GraphSchema, NodeType
from graphs.store import GraphWriter
from graphs.text_features import TextConfig, encode_text
from trainers.gfm.foundation import FoundationConfig, run_foundation

TITLES = ["Space battle in orbit", "Starship crew explores a distant galaxy", "Alien invasion of Mars",
          "Italian pasta recipes", "Baking bread at home", "Vegetarian cooking for beginners",
          "Robots fight a war among the stars"]                 # the last one: a new item, no interactions


def _shop(path):
    """Users 0-5 each buy two or three sci-fi items (0-2) or cooking items (3-5), in turn."""
    rng = np.random.default_rng(0)
    src, dst = [], []
    for u in range(40):
        group = [0, 1, 2] if u % 2 == 0 else [3, 4, 5]
        items = rng.permutation(group)[: 2 + u % 2]
        src += [u] * len(items)
        dst += list(items)
    schema = GraphSchema((NodeType("user", 0), NodeType("item", 0, (FeatureSpec("title", "text"),))),
                         (EdgeType("user", "buys", "item", ts=True),), name="shop")
    with GraphWriter(path, schema) as w:
        w.write_nodes("user", {"id": np.arange(40), "raw_id": [f"u{i}" for i in range(40)]})
        w.write_nodes("item", {"id": np.arange(7), "raw_id": [f"i{i}" for i in range(7)], "title": TITLES})
        w.write_edges("user__buys__item", {"src": np.array(src), "dst": np.array(dst), "ts": np.arange(len(src))})


def test_items_with_and_without_interactions_get_foundation_embeddings(tmp_path, ray_local):
    graph = tmp_path / "shop"
    _shop(graph)
    with pytest.raises(ConfigError, match="hetrec data text"):
        run_foundation(graph, tmp_path / "run")
    encode_text(graph, cfg=TextConfig(workers=1))
    folder = run_foundation(graph, tmp_path / "run", cfg=FoundationConfig(steps=80, dim=16, hidden=32))
    emb = np.load(folder / "item.npy")
    meta = json.loads((folder / "meta.json").read_text())
    assert emb.shape == (7, 16 + 384) and meta["count"] == 7 and meta["dim"] == 16 + 384
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert meta["co_graph"]["edge_types"][0]["count"] == 12             # 0-1-2 and 3-4-5, both ways
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 3] and sim[3, 4] > sim[3, 0]              # co-bought items close
    new = sim[6, :6]
    assert new[:3].mean() > new[3:].mean(), new                         # the title places the new item


def test_the_cli_writes_the_foundation(tmp_path, ray_local):
    graph = tmp_path / "shop"
    _shop(graph)
    encode_text(graph, cfg=TextConfig(workers=1))
    result = CliRunner().invoke(main, ["gfm", "foundation", str(graph), str(tmp_path / "run"), "--steps", "20",
                                       "--dim", "8", "--top-k", "1"])
    assert result.exit_code == 0, result.output
    assert "co-interaction links" in result.output
    assert np.load(tmp_path / "run" / "foundation" / "item.npy").shape == (7, 8 + 384)
    bad = CliRunner().invoke(main, ["gfm", "foundation", str(graph), str(tmp_path / "run"), "--window", "0"])
    assert bad.exit_code == 1 and "window must be an int >= 1, got 0" in bad.output


def test_the_ablation_without_text_needs_no_text_and_cannot_place_a_new_item(tmp_path, ray_local):
    graph = tmp_path / "shop"
    _shop(graph)                                                         # no `hetrec data text`
    folder = run_foundation(graph, tmp_path / "run", cfg=FoundationConfig(steps=80, dim=16, hidden=32, text=False))
    emb = np.load(folder / "item.npy")
    assert emb.shape == (7, 16) and json.loads((folder / "meta.json").read_text())["config"]["text"] is False
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 3] and sim[3, 4] > sim[3, 0]              # co-bought items still close
