"""``hetrec serve --dccl``: the ranker applies each user's MetaPatch, looked up by user id,
in process and behind the Serve app on loopback."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import copy_run, http_call
from ray import serve

from serve import deployments
from serve.app import start
from serve.config import ServeConfig
from serve.haproxy import free_port
from trainers.dccl.config import DCCLConfig
from trainers.dccl.fleet import DeviceConfig
from trainers.dccl.rounds import run_rounds

pytestmark = pytest.mark.slow          # about 2 minutes on 2 cores


@pytest.fixture(scope="module")
def dccl_run(served_run, ml100k, tmp_path_factory):
    """The served run with one short DCCL round on MovieLens-100K in ``<run>/dccl``."""
    run = copy_run(served_run[0], tmp_path_factory.mktemp("dccl-served") / "run")
    cfg = DCCLConfig(base_epochs=1, distill_epochs=1, patch_epochs=1, workers=1,
                     device=DeviceConfig(steps=2, users_per_task=256))
    run_rounds(ml100k, run / "dccl", cfg, rounds=1, log=lambda s: None)
    return run


def test_the_ranker_applies_each_users_patch_and_only_theirs(dccl_run):
    ranker = deployments.Ranker(ServeConfig(run_dir=str(dccl_run), dccl=True))
    assert ranker.model.has_patch[:943].all()                           # every user's device sent one
    items = list(range(0, 400, 8))
    before = ranker.score([(1, items), (2, items)])
    unpatched = copy.deepcopy(ranker.model)
    unpatched.table.zero_()                                             # a zero patch: the cloud model
    assert not np.allclose(before[0], _scores(unpatched, ranker, 1, items), atol=1e-4)
    with torch.no_grad():
        ranker.model.set_patches(torch.tensor([1]), ranker.model.table[1:2] + 0.5)
    after = ranker.score([(1, items), (2, items)])
    assert not np.allclose(after[0], before[0], atol=1e-4)              # user 1's patch moved its scores
    np.testing.assert_allclose(after[1], before[1], atol=1e-6)          # user 2's did not move


def _scores(model, ranker, user: int, items: list[int]) -> list[float]:
    """``model`` scoring ``items`` for ``user`` with the served ranker's sequences."""
    ranker.model, served = model, ranker.model
    try:
        return ranker.score([(user, items)])[0]
    finally:
        ranker.model = served


def test_the_app_serves_patched_rankings(dccl_run, served_run):
    port = free_port()
    start(ServeConfig(run_dir=str(dccl_run), dccl=True, token_file=str(served_run[1]), ingress_cpus=0.1,
                      retriever_cpus=0.1, ranker_cpus=0.25, updater_cpus=0.1), port=port)
    try:
        url = f"http://127.0.0.1:{port}"
        status, body = http_call(f"{url}/recommend?user_id=1&k=10")
        assert status == 200 and body["fallback"] is False, body
        assert len({it["item_id"] for it in body["items"]}) == 10
        status, health = http_call(f"{url}/healthz")
        assert status == 200, health
    finally:
        serve.shutdown()
