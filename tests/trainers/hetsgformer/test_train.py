"""HetSGFormer on Ray Train: 2 real workers, checkpoints every epoch, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from graphs.exceptions import ConfigError
from graphs.shards import ShardStore
from graphs.synthetic import generate_synthetic
from trainers.hetsgformer.config import HetSGFormerConfig
from trainers.hetsgformer.export import export_embeddings
from trainers.hetsgformer.train import TrainConfig, train
from trainers.hetsgformer.validation import COLD_PRIOR, DEFAULT_PRIOR, PRIOR_GRID

pytestmark = pytest.mark.slow          # minutes on 2 cores: `pytest -m "not slow and not cluster"` skips it

SMALL = dict(workers=2, batch_size=128, fanouts=(4, 2), steps_per_epoch=3, random_negatives=32,
             model=HetSGFormerConfig(dim=16, v_max=20_000, num_heads=2))


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "g"
    generate_synthetic(path, 20_000, seed=1)
    return path


def test_two_workers_checkpoint_resume_and_export(graph, tmp_path, ray_local):
    run = tmp_path / "run"
    first = train(graph, run, TrainConfig(epochs=1, **SMALL))
    assert first.checkpoint is not None and first.metrics["epoch"] == 0
    assert first.metrics["edges_per_s"] > 0 and first.metrics["loss"] > 0
    config = json.loads((run / "config.json").read_text())
    assert config["target"] == "user__clicks__item" and (run / "parts" / "meta.json").is_file()

    with pytest.raises(FileExistsError, match="already holds a run"):
        train(graph, run, TrainConfig(epochs=2, **SMALL))
    before = json.loads((run / "metrics.json").read_text())["epochs"]
    second = train(graph, run, TrainConfig(epochs=2, **SMALL), resume=True)
    assert second.metrics["epoch"] == 1
    history = json.loads((run / "metrics.json").read_text())["epochs"]
    # epoch 0 is carried over from the checkpointed run (same measured throughput), not rerun
    assert [row["epoch"] for row in history] == [0, 1] and history[0] == before[0]
    assert (run / "metrics.png").is_file() and len((run / "metrics.csv").read_text().splitlines()) == 3

    # an uninterrupted 2-epoch run takes exactly the steps the resumed one took
    straight = train(graph, tmp_path / "straight", TrainConfig(epochs=2, **SMALL), resume=False)
    assert straight.metrics["first_loss"] == pytest.approx(history[1]["first_loss"], rel=1e-5)
    assert straight.metrics["loss"] == pytest.approx(history[1]["loss"], rel=1e-5)

    first_export = export_embeddings(run)
    meta = json.loads((first_export / "meta.json").read_text())
    assert meta["version"] == 1 and (run / "embeddings" / "LATEST").read_text() == "v0001"
    counts = ShardStore(run / "parts").counts
    for ntype, count in counts.items():
        emb = np.load(first_export / f"{ntype}.npy")
        assert emb.shape == (count, 16) and emb.dtype == np.float32 and np.isfinite(emb).all()
        assert (np.abs(emb).sum(axis=1) > 0).all()  # every row was written
    # a run without validation ranks with the default popularity prior over its own counts
    assert meta["prior"] == {"type": "item", "weight": DEFAULT_PRIOR, "cold_weight": COLD_PRIOR}
    store = ShardStore(run / "parts")
    degree = store.degree("item__rev_clicks__user", np.arange(counts["item"]))
    np.testing.assert_allclose(np.load(first_export / "prior.npy"), np.log1p(degree), rtol=1e-6)
    items = np.load(first_export / "item.npy")
    assert np.linalg.matrix_rank(items[:200]) > 8  # nodes get different embeddings
    second_export = export_embeddings(run)
    assert second_export.name == "v0002"
    np.testing.assert_allclose(np.load(second_export / "item.npy"), items, atol=1e-5)  # deterministic


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="TrainConfig.workers must be >= 1, got 0"):
        TrainConfig(workers=0)
    with pytest.raises(ValueError, match="fanouts"):
        TrainConfig(fanouts=())


def test_lr_schedule_decays_by_cosine_to_lr_decay():
    from trainers.hetsgformer.train import lr_factor
    cfg = TrainConfig(lr_decay=0.1)
    got = [lr_factor(cfg, s, 11) for s in range(11)]
    assert got[0] == 1.0 and abs(got[-1] - 0.1) < 1e-12 and abs(got[5] - 0.55) < 1e-12
    assert all(a > b for a, b in zip(got, got[1:]))
    assert {lr_factor(TrainConfig(lr_decay=1.0), s, 11) for s in range(11)} == {1.0}
    with pytest.raises(ConfigError, match="lr_decay must be in \\(0, 1\\], got 0"):
        TrainConfig(lr_decay=0)


def test_export_embeds_the_best_validation_epoch(graph, tmp_path, ray_local):
    from trainers.evaluation.splits import load_interactions
    from trainers.hetsgformer.validation import write_pairs
    from trainers.run_dir import RunDir

    inter = load_interactions(graph, "user__clicks__item")
    pairs = write_pairs(tmp_path / "valid.parquet", inter.subset(np.arange(0, len(inter.user), 7)))
    run = tmp_path / "run"
    train(graph, run, TrainConfig(epochs=3, valid=str(pairs), **SMALL))
    valid = [e["valid_ndcg@10"] for e in json.loads((run / "metrics.json").read_text())["epochs"]]
    best = torch.load(run / "best" / "state.pt", weights_only=True)
    assert best["epoch"] == int(np.argmax(valid)) and best["valid_ndcg@10"] == max(valid)
    assert RunDir(run).export_checkpoint() == run / "best"
    version = export_embeddings(run)
    meta = json.loads((version / "meta.json").read_text())
    assert meta["checkpoint"] == str(run / "best")
    prior = [e["valid_prior"] for e in json.loads((run / "metrics.json").read_text())["epochs"]]
    assert meta["prior"]["weight"] == best["prior"] == prior[best["epoch"]] and best["prior"] in PRIOR_GRID
