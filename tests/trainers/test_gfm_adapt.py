"""GFM's two-tower adaptation layer on a real local Ray: trained on Ray Train over the
foundation embeddings, exported like `hetrec export`, and a new item with only a title
placed with the users of its kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cluster.cli import main
from graphs.exceptions import ConfigError, NotFoundError
from graphs.text_features import TextConfig, encode_text
from tests.trainers.test_gfm_foundation import _shop
from trainers.evaluation.splits import Interactions
from trainers.gfm.adapt import adapt, export_towers
from trainers.gfm.foundation import FoundationConfig, run_foundation
from trainers.gfm.two_tower import AdaptConfig, histories, last_items, sample_others

SMALL = dict(epochs=6, batch_size=16, random_negatives=4, dim=16, hidden=32, history=3)


@pytest.fixture(scope="module")
def shop_run(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("gfm-adapt")
    _shop(root / "shop")
    encode_text(root / "shop", cfg=TextConfig(workers=1))
    run_foundation(root / "shop", root / "run", cfg=FoundationConfig(steps=80, dim=16, hidden=32))
    return root


def test_histories_are_the_items_just_before_in_time():
    inter = Interactions(np.array([1, 0, 1, 1, 0]), np.array([10, 20, 11, 12, 21]), np.array([3, 5, 1, 2, 9]),
                         2, 30)
    order, before = histories(inter, 2)
    assert inter.user[order].tolist() == [0, 0, 1, 1, 1]
    assert inter.item[order].tolist() == [20, 21, 11, 12, 10]                 # user 1 by time: 11, 12, 10
    assert before.tolist() == [[-1, -1], [-1, 20], [-1, -1], [-1, 11], [11, 12]]
    assert last_items(inter, 2).tolist() == [[20, 21], [12, 10]]


def test_a_pairs_history_is_drawn_from_the_users_other_items():
    item = np.array([10, 11, 12, 20, 30, 31])                                 # users 0 (3 rows), 1 (1), 2 (2)
    first, count = np.array([0, 0, 0, 3, 4, 4]), np.array([3, 3, 3, 1, 2, 2])
    drawn = sample_others(item, first, count, np.arange(6), 50, np.random.default_rng(0))
    assert set(drawn[0]) == {11, 12} and set(drawn[1]) == {10, 12} and set(drawn[2]) == {10, 11}
    assert (drawn[3] == -1).all()                                             # nobody else to read
    assert set(drawn[4]) == {31} and set(drawn[5]) == {30}


def test_the_towers_learn_who_buys_what_and_place_a_new_item_by_its_title(shop_run):
    run = shop_run / "run"
    result = adapt(run, AdaptConfig(**SMALL))
    assert result.metrics["epoch"] == SMALL["epochs"] - 1
    history = json.loads((run / "adapt" / "config.json").read_text())
    assert history["etype"] == "user__buys__item"
    version = export_towers(run)
    assert (run / "embeddings" / "LATEST").read_text().strip() == version.name
    users, items = np.load(version / "user.npy"), np.load(version / "item.npy")
    assert users.shape == (40, 16) and items.shape == (7, 16)
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1.0, atol=1e-5)
    scores = users @ items.T
    scifi, cooking = np.arange(0, 40, 2), np.arange(1, 40, 2)                  # even users buy 0-2, odd 3-5
    assert scores[scifi, :3].mean() > scores[scifi, 3:6].mean() + 0.05
    assert scores[cooking, 3:6].mean() > scores[cooking, :3].mean() + 0.05
    assert scores[scifi, 6].mean() > scores[cooking, 6].mean()                 # robots among the stars
    meta = json.loads((version / "meta.json").read_text())
    assert meta["model"] == "gfm-two-tower" and meta["counts"] == {"user": 40, "item": 7}


def test_adapt_needs_a_foundation_and_a_valid_config(tmp_path, shop_run):
    with pytest.raises(NotFoundError, match="hetrec gfm foundation"):
        adapt(tmp_path / "nothing")
    with pytest.raises(NotFoundError, match="hetrec gfm adapt"):
        export_towers(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="recent must be in"):
        AdaptConfig(recent=0)
    result = CliRunner().invoke(main, ["gfm", "adapt", str(shop_run / "run"), "--history", "0"])
    assert result.exit_code == 1 and "history must be an int >= 1, got 0" in result.output


def test_the_cli_trains_and_exports(shop_run):
    result = CliRunner().invoke(main, ["gfm", "adapt", str(shop_run / "run"), "--epochs", "2", "--dim", "8"])
    assert result.exit_code == 0, result.output
    assert "epoch 2/2" in result.output
    latest = (shop_run / "run" / "embeddings" / "LATEST").read_text().strip()
    assert np.load(shop_run / "run" / "embeddings" / latest / "item.npy").shape == (7, 8)
