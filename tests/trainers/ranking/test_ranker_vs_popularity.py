"""A trained ranker against the popularity baseline computed on the same samples.

On MovieLens a count of the item's past interactions is a strong ranker (AUC about 0.8),
so an absolute floor cannot tell a ranker that learned users' tastes from one that learned
popularity. Here the users' tastes are the only signal: four communities, each user rates
the items of its own community, every item equally often, so popularity sits near chance
and a ranker has to read the user's history to score."""

from __future__ import annotations

import numpy as np
import pytest

from graphs.schema import EdgeType, GraphSchema, NodeType
from graphs.store import GraphWriter
from trainers.ranking.train import RankerConfig, train_ranker

pytestmark = pytest.mark.slow          # about 40 s on 2 cores


def write_communities(out, users: int = 300, items: int = 120, per_user: int = 24, communities: int = 4,
                      seed: int = 0) -> None:
    """User u rates ``per_user`` items of community ``u % communities`` at random times."""
    rng = np.random.default_rng(seed)
    schema = GraphSchema((NodeType("user", 0), NodeType("item", 0)), (EdgeType("user", "rates", "item", ts=True),))
    dst = np.concatenate([rng.choice(np.arange(u % communities, items, communities), per_user, replace=False)
                          for u in range(users)])
    with GraphWriter(out, schema) as w:
        w.write_nodes("user", {"id": np.arange(users), "raw_id": [f"u{i}" for i in range(users)]})
        w.write_nodes("item", {"id": np.arange(items), "raw_id": [f"i{i}" for i in range(items)]})
        w.write_edges("user__rates__item", {"src": np.repeat(np.arange(users), per_user), "dst": dst,
                                            "ts": rng.integers(0, 10_000_000, users * per_user)})


def test_din_beats_popularity_where_only_taste_matters(tmp_path, ray_local):
    write_communities(tmp_path / "graph")
    meta = train_ranker(tmp_path / "graph", tmp_path / "ranker",
                        RankerConfig(model="din", workers=2, epochs=2, lr=1e-2, batch_size=256, eval_samples=4000))
    final = meta["final"]
    assert final["test_samples"] > 1000 and final["cold_samples"] == 0        # no user is new after the cut
    assert abs(final["test_pop_auc"] - 0.5) < 0.1, final                       # popularity: near chance here
    assert final["test_auc"] > final["test_pop_auc"] + 0.25, final
    assert final["test_popneg_auc"] > final["test_popneg_pop_auc"] + 0.25, final
