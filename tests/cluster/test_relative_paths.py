"""Entry points take relative paths from a working directory that Ray's processes do not
share: the session's Ray was started in another directory, so a relative path that
reached a Train worker, a Ray Data task or an actor unresolved would point elsewhere."""

from __future__ import annotations

import pytest

import json
import math
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

from cluster.cli import main
from cluster.pipeline import PipelineConfig
from graphs.partition import PartitionConfig, partition_graph
from graphs.synthetic import generate_synthetic
from serve.config import ServeConfig
from trainers.evaluation.evaluate import run_eval
from trainers.hetsgformer.config import HetSGFormerConfig
from trainers.hetsgformer.export import serving_run
from trainers.hetsgformer.train import TrainConfig
from trainers.ille.pool import UpdatePool
from trainers.ranking.train import RankerConfig, train_ranker

pytestmark = pytest.mark.slow          # minutes on 2 cores: `pytest -m "not slow and not cluster"` skips it

SMALL = TrainConfig(workers=2, epochs=1, batch_size=128, fanouts=(4,), steps_per_epoch=3, random_negatives=32,
                    model=HetSGFormerConfig(dim=16, v_max=20_000, num_heads=2))
ETYPE = "user__clicks__item"


def test_configs_make_their_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert TrainConfig(valid="v.parquet").valid == str(tmp_path / "v.parquet")
    assert ServeConfig(run_dir="run", token_file="t").run_dir == str(tmp_path / "run")
    assert ServeConfig(run_dir="run", token_file="t").token_file == str(tmp_path / "t")
    assert PipelineConfig(root="root").root == str(tmp_path / "root")
    assert RankerConfig(embeddings="run").embeddings == str(tmp_path / "run")
    assert PipelineConfig(root="root", storage="s3://bucket/x").storage == "s3://bucket/x"
    assert TrainConfig().valid is None


def test_entry_points_from_another_working_directory(tmp_path, monkeypatch, ray_local):
    assert Path.cwd() != tmp_path
    monkeypatch.chdir(tmp_path)
    generate_synthetic("g", 20_000, seed=1)

    # evaluation: the split graph, the validation pairs and the run all under a relative work dir
    results = run_eval("g", ["hetsgformer", "pop"], etype=ETYPE, train_cfg=SMALL, work_dir="w")
    assert results["hetsgformer"]["ndcg@10"]["mean"] >= 0
    epochs = json.loads(Path("w/hetsgformer-random-0/run/metrics.json").read_text())["epochs"]
    assert math.isfinite(epochs[0]["valid_ndcg@10"])      # the workers read the validation pairs
    best = torch.load("w/hetsgformer-random-0/run/best/state.pt", weights_only=True)
    assert (best["epoch"], best["valid_ndcg@10"]) == (0, epochs[0]["valid_ndcg@10"])   # the validated epoch

    partition_graph("g", "g.parts", PartitionConfig(num_parts=4))
    version = serving_run("w/hetsgformer-random-0/run", "g.parts", "served")
    assert version == tmp_path / "served" / "embeddings" / "v0001"
    assert json.loads(Path("served/config.json").read_text())["graph"] == str(tmp_path / "g")
    assert json.loads((version / "meta.json").read_text())["checkpoint"] == str(tmp_path / "served" / "best")

    result = CliRunner().invoke(main, ["export", "served"])
    assert result.exit_code == 0, result.output
    assert "v0002" in result.output

    pool = UpdatePool("served", actors=1)
    try:
        user = pool.embeddings().count("user")
        ack = pool.submit([{"op": "node", "ntype": "user", "id": user, "attrs": {}},
                           {"op": "edge", "etype": ETYPE, "src": user, "dst": 3, "ts": 5}])
        assert ack.accepted == 2 and not ack.errors
        pool.apply()
        assert np.abs(pool.embeddings().rows("user", [user])).sum() > 0
    finally:
        pool.close()

    meta = train_ranker("g", "served/ranker", RankerConfig(etype=ETYPE, workers=1, epochs=1, steps_per_epoch=2,
                                                           eval_samples=200, embeddings="served"))
    assert Path("served/ranker/model.pt").is_file() and meta["graph"] == str(tmp_path / "g")
