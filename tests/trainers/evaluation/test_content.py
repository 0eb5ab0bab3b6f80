"""The text-profile baseline on a small shop graph encoded by the real sentence model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphs.exceptions import ConfigError
from graphs.schema import EdgeType, FeatureSpec, GraphSchema, NodeType
from graphs.store import GraphWriter
from graphs.text_features import TextConfig, encode_text
from trainers.evaluation.content import fit_text_profile
from trainers.evaluation.evaluate import run_eval
from trainers.evaluation.splits import load_interactions

TITLES = ["Space battle in orbit", "Starship crew explores a distant galaxy", "Italian pasta recipes",
          "Baking bread at home", "Alien invasion of Mars", "Vegetarian cooking for beginners"]


def _shop(path):
    schema = GraphSchema((NodeType("user", 0), NodeType("item", 0, (FeatureSpec("title", "text"),))),
                         (EdgeType("user", "buys", "item", ts=True),), name="shop")
    with GraphWriter(path, schema) as w:
        w.write_nodes("user", {"id": np.arange(2), "raw_id": ["astro", "chef"]})
        w.write_nodes("item", {"id": np.arange(6), "raw_id": [f"i{i}" for i in range(6)], "title": TITLES})
        w.write_edges("user__buys__item", {"src": np.array([0, 0, 1, 1]), "dst": np.array([0, 1, 2, 3]),
                                           "ts": np.arange(4)})


def test_a_user_is_scored_by_the_text_of_what_they_bought(tmp_path, ray_local):
    graph = tmp_path / "shop"
    _shop(graph)
    with pytest.raises(ConfigError, match="hetrec data text"):
        fit_text_profile(load_interactions(graph, "user__buys__item"), 0, graph, "user__buys__item")
    encode_text(graph, cfg=TextConfig(workers=1))
    train = load_interactions(graph, "user__buys__item")
    scores = fit_text_profile(train, 0, graph, "user__buys__item")(torch.tensor([0, 1]))     # [2, 6]
    assert scores.shape == (2, 6)
    assert scores[0, 4] > scores[0, 5] and scores[1, 5] > scores[1, 4]    # unseen items: by their text
    assert run_eval(graph, models=["text"], protocol="random")["text"]    # runs in the harness
