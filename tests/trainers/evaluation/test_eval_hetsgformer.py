"""HetSGFormer through the evaluation harness on real MovieLens-100K: a short real training
(2 Ray Train workers) must beat popularity on held-out NDCG@10."""

from __future__ import annotations

import pytest

import csv
import json
import math

import numpy as np

from trainers.evaluation.evaluate import run_eval
from trainers.evaluation.splits import load_interactions
from trainers.hetsgformer.train import TrainConfig

pytestmark = pytest.mark.slow          # minutes on 2 cores: `pytest -m "not slow and not cluster"` skips it


def test_short_training_beats_popularity(ml100k, tmp_path, ray_local):
    cfg = TrainConfig(workers=2, epochs=2, steps_per_epoch=80)
    results = run_eval(ml100k, ["hetsgformer", "pop"], protocol="random", seeds=[0], train_cfg=cfg,
                       work_dir=tmp_path)
    het, pop = results["hetsgformer"]["ndcg@10"]["mean"], results["pop"]["ndcg@10"]["mean"]
    assert het > 1.1 * pop, (het, pop)

    work = tmp_path / "hetsgformer-random-0"
    with open(work / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    valid = [float(r["valid_ndcg@10"]) for r in rows]
    assert all(math.isfinite(v) and v > 0 for v in valid)
    # the model trained on the train part only: the split graph holds exactly that many rates edges
    schema = json.loads((work / "graph" / "schema.json").read_text())
    rates = next(e for e in schema["edge_types"] if e["rel"] == "rates")
    assert rates["count"] < len(load_interactions(ml100k)) * 0.85
    users = np.load(work / "run" / "embeddings" / "v0001" / "user.npy")
    assert users.shape == (943, cfg.model.dim) and np.isfinite(users).all()
