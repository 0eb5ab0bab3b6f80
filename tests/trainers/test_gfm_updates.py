"""GFM's live updates (``TowerPool``) on a real local Ray: a user's new interactions move
its vector through the user tower, a new user and a new item are placed, nothing is applied
twice after a restart, and the run refuses what it is not."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphs.exceptions import ConfigError, RunDirError
from graphs.text_features import TextConfig, encode_text
from tests.trainers.test_gfm_foundation import _shop
from trainers.gfm.adapt import adapt, export_towers
from trainers.gfm.foundation import FoundationConfig, run_foundation
from trainers.gfm.two_tower import AdaptConfig
from trainers.gfm.updates import TowerPool
from trainers.ille.embedding_view import EmbeddingView
from trainers.ille.pool import UpdatePool, open_pool
from trainers.run_dir import RunDir

SCIFI, COOKING = [0, 1, 2], [3, 4, 5]        # the shop's items; even users buy sci-fi, odd ones cooking


@pytest.fixture(scope="module")
def gfm_run(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("gfm-updates")
    _shop(root / "shop")
    encode_text(root / "shop", cfg=TextConfig(workers=1))
    run_foundation(root / "shop", root / "run", cfg=FoundationConfig(steps=80, dim=16, hidden=32))
    adapt(root / "run", AdaptConfig(epochs=6, batch_size=16, random_negatives=4, dim=16, hidden=32, history=3))
    export_towers(root / "run")
    return root / "run"


def _edge(user: int, item: int, ts: int) -> dict:
    return {"op": "edge", "etype": "user__buys__item", "src": user, "dst": item, "ts": ts}


def _taste(view: EmbeddingView, user: int) -> float:
    """How much more the user's vector scores sci-fi than cooking items."""
    scores = view.rows("item", np.arange(6)) @ view.rows("user", np.array([user]))[0]
    return float(scores[SCIFI].mean() - scores[COOKING].mean())


def test_a_gfm_run_is_updated_by_its_towers(gfm_run):
    run = RunDir(gfm_run)
    assert run.model == "gfm" and run.target == "user__buys__item"
    pool = open_pool(gfm_run)
    assert isinstance(pool, TowerPool)
    try:
        before = _taste(pool.embeddings(), 0)
        assert before > 0                                                    # user 0 bought sci-fi
        # user 0 turns to cooking; a new user buys sci-fi; a new item is bought by sci-fi users
        ack = pool.submit([_edge(0, i, 1000 + n) for n, i in enumerate(COOKING * 2)])
        assert ack.accepted == 6 and not ack.errors
        ack = pool.submit([{"op": "node", "ntype": "user", "id": 40, "raw_id": "u40"},
                           {"op": "node", "ntype": "item", "id": 7, "raw_id": "i7"},
                           _edge(40, 0, 2000), _edge(40, 1, 2001), _edge(2, 7, 2002), _edge(4, 7, 2003)])
        assert ack.accepted == 6 and pool.lag() == 12
        stats = pool.apply()
        assert [s.events for s in stats] == [6, 6] and pool.lag() == 0 and pool.pending() == []
        assert stats[0].status == {"user_tower": 1, "users_mean": 0} and stats[0].moved > 0
        assert stats[1].status == {"user_tower": 3, "users_mean": 1} and stats[1].new_nodes == 2
        view = pool.embeddings()
        assert _taste(view, 0) < before                                     # moved toward cooking
        assert _taste(view, 40) > 0                                         # placed among sci-fi buyers
        new_item = view.rows("item", np.array([7]))[0]
        np.testing.assert_allclose(np.linalg.norm(new_item), 1.0, atol=1e-5)
        users = view.rows("user", np.arange(40))
        assert (users[0::2] @ new_item).mean() > (users[1::2] @ new_item).mean()
        row0 = view.rows("user", np.array([0]))[0].copy()
    finally:
        pool.close()

    again = TowerPool(gfm_run)                                              # a restart: nothing re-applied
    try:
        assert again.pending() == [] and again.apply() == []
        assert again.hist[0][-3:] == COOKING and again.item_users[7] == [2, 4]
        again.submit([_edge(0, 5, 3000)])
        (stats,) = again.apply()
        assert stats.status == {"user_tower": 1, "users_mean": 0}
        row = again.embeddings().rows("user", np.array([0]))[0]
        assert again.hist[0] == [4, 5, 5] and not np.allclose(row, row0)     # the state was rebuilt first
    finally:
        again.close()


def test_a_gfm_run_has_no_ille_and_keeps_to_its_folder(gfm_run, tmp_path, trained_run):
    with pytest.raises(RunDirError, match="is a gfm run, without shards"):
        UpdatePool(gfm_run, actors=1)
    with pytest.raises(ConfigError, match="not a GFM one"):
        TowerPool(trained_run)
    folder = tmp_path / "het"
    (folder / "foundation").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"graph": "g", "parts": "p", "target": "t", "train": {}}))
    (folder / "foundation" / "meta.json").write_text((gfm_run / "foundation" / "meta.json").read_text())
    with pytest.raises(ConfigError, match="holds a hetsgformer run; give GFM a folder of its own"):
        adapt(folder)
