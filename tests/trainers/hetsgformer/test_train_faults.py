"""A Ray Train worker killed mid-epoch (SIGKILL to its process): the run restarts from its
last checkpoint and ends where an uninterrupted run ends, and its validation NDCG@10 is
within the seed-to-seed noise of uninterrupted runs."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from graphs.synthetic import generate_synthetic
from trainers.evaluation.split_graph import write_split_graph
from trainers.evaluation.splits import load_interactions, random_split
from trainers.hetsgformer.config import HetSGFormerConfig
from trainers.hetsgformer.train import TrainConfig, train

pytestmark = pytest.mark.slow          # minutes on 2 cores: `pytest -m "not slow and not cluster"` skips it

CFG = TrainConfig(workers=2, epochs=3, batch_size=128, fanouts=(4, 2), steps_per_epoch=6, random_negatives=32,
                  model=HetSGFormerConfig(dim=16, v_max=20_000, num_heads=2), target="user__clicks__item",
                  valid_users=300)


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    generate_synthetic(root / "full", 20_000, seed=3)
    split = random_split(load_interactions(root / "full", "user__clicks__item"), seed=0)
    path = write_split_graph(root / "full", root / "g", split.train, etype="user__clicks__item")
    pq.write_table(pa.table({"src": split.valid.user, "dst": split.valid.item}),      # held out of the graph
                   root / "valid.parquet")
    return path


def test_killed_worker_resumes_from_the_checkpoint_and_ends_the_same(graph, tmp_path, ray_local):
    cfg = dataclasses.replace(CFG, valid=str(graph.parent / "valid.parquet"))
    t = time.perf_counter()
    clean = train(graph, tmp_path / "clean", cfg)
    clean_s = time.perf_counter() - t
    other_seed = train(graph, tmp_path / "seed1", dataclasses.replace(cfg, seed=1))

    run, out, epochs = tmp_path / "killed", {}, []
    t = time.perf_counter()
    worker = threading.Thread(target=lambda: out.setdefault("result", train(graph, run, cfg, progress=epochs.append)))
    worker.start()
    deadline = time.monotonic() + 300
    while not epochs:                                                    # epoch 0 is reported and checkpointed
        assert time.monotonic() < deadline and worker.is_alive(), "no epoch was reported"
        time.sleep(0.05)
    pids = epochs[0]["worker_pids"]                                     # this run's workers, by rank: no other
    assert len(pids) == CFG.workers and os.getpid() not in pids
    victim = psutil.Process(pids[-1])
    os.kill(victim.pid, signal.SIGKILL)                                  # mid-epoch 1
    victim.wait(timeout=30)                                              # it is dead: the group must restart
    worker.join(timeout=600)
    killed_s = time.perf_counter() - t
    result = out["result"]

    assert result.metrics["epoch"] == CFG.epochs - 1
    history = json.loads((run / "metrics.json").read_text())["epochs"]
    assert [row["epoch"] for row in history] == [0, 1, 2]               # epoch 1 rerun once, not twice
    # the same draws per (seed, epoch, rank): the resumed run ends where the clean one does
    assert result.metrics["loss"] == pytest.approx(clean.metrics["loss"], rel=1e-4)
    ndcg = {name: r.metrics["valid_ndcg@10"] for name, r in (("clean", clean), ("seed 1", other_seed),
                                                               ("killed", result))}
    assert ndcg["clean"] > 0 and ndcg["seed 1"] > 0
    noise = abs(ndcg["seed 1"] - ndcg["clean"])                           # seed-to-seed
    assert abs(ndcg["killed"] - ndcg["clean"]) <= max(noise, 1e-6), ndcg
    print(f"clean {clean_s:.1f} s, killed and resumed {killed_s:.1f} s: {killed_s - clean_s:.1f} s lost; "
          f"valid NDCG@10 {ndcg}")
