"""DCCL: MetaPatch on DIN, the chapter's protocol, the device fleet on Ray and resumable rounds."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import random_graph

from graphs.exceptions import ConfigError
from trainers.dccl.config import DCCLConfig, build_model
from trainers.dccl.data import DCCLData, leave_last_out, ranking_metrics, score_candidates
from trainers.dccl.fleet import DeviceConfig, local_samples, personalise
from trainers.dccl.patch import PatchConfig, PatchedRanker, junction_widths
from trainers.dccl.rounds import DCCLDir, read_fleet, run_rounds
from trainers.evaluation.splits import Interactions, temporal_cut, temporal_parts
from trainers.ranking.dsgl import hops_to_tensors
from trainers.ranking.dsgl_data import SequenceGraphs
from trainers.ranking.rankers import DIN

TINY = DCCLConfig(dim=8, hidden=16, base_epochs=1, distill_epochs=1, patch_epochs=1, batch_size=256, workers=1,
                  eval_negatives=20, device=DeviceConfig(steps=3, users_per_task=16))


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """60 users x 80 items, 3,000 timestamped interactions."""
    path = tmp_path_factory.mktemp("dccl") / "g"
    random_graph(path, 3, {"user": 60, "item": 80}, {("user", "buys", "item", True, False): 3000})
    return path


def _patched(num_users=6, num_items=9, k=2):
    torch.manual_seed(0)
    din = DIN(num_users, num_items, dim=4, hidden=8, dropout=0.0)
    codes = torch.tensor([[u % 3] for u in range(num_users)])
    return PatchedRanker(din, junction_widths(din), num_users, codes, [3], PatchConfig(k=k, init_std=0.5)).eval()


def _batch(users, num_items=9, length=3):
    inter = Interactions(np.arange(30) % 6, np.arange(30) % num_items, np.arange(30), 6, num_items)
    graphs = SequenceGraphs(inter, length=length, depth=1)
    items = np.tile(np.arange(num_items), len(users))
    users = np.repeat(users, num_items)
    hops = hops_to_tensors(graphs.user_side(users, np.full(len(users), 100)))
    return torch.as_tensor(users), torch.as_tensor(items), hops, []


def test_a_zero_patch_is_the_cloud_model_and_a_patch_changes_only_its_users_scores():
    model = _patched()
    batch = _batch(np.array([1, 4]))
    with torch.no_grad():
        plain = model.ranker(*batch)
        assert torch.allclose(model(*batch), plain)                       # no patches yet: U(0, profile) = 0
        model.set_patches(torch.tensor([1]), torch.randn(1, model.patch.size))
        after = model(*batch)
    rows_1, rows_4 = batch[0] == 1, batch[0] == 4
    assert (after[rows_1] - plain[rows_1]).abs().max() > 1e-3              # user 1's scores moved
    torch.testing.assert_close(after[rows_4], plain[rows_4])               # user 4's did not


def test_the_encoder_starts_as_the_identity_and_cold_users_get_a_profile_patch():
    model = _patched()
    theta, users = torch.randn(3, model.patch.size), torch.tensor([0, 1, 2])
    torch.testing.assert_close(model.encoder(theta, users), theta)
    with torch.no_grad():
        for p in model.encoder.mlp[-1].parameters():
            p.normal_()
    cold = model.vectors(torch.tensor([0, 3, 2, 99]))        # 0 and 3 share a profile; 99: unknown, null
    torch.testing.assert_close(cold[0], cold[1])
    assert not torch.allclose(cold[0], cold[2]) and not torch.allclose(cold[0], cold[3])


def test_bad_patches_are_refused_naming_the_problem():
    model = _patched()
    with pytest.raises(ConfigError, match="shape"):
        model.set_patches(torch.tensor([1]), torch.zeros(1, model.patch.size + 1))
    with pytest.raises(ConfigError, match="unknown user"):
        model.set_patches(torch.tensor([6]), torch.zeros(1, model.patch.size))
    with pytest.raises(ConfigError, match="user 2 is not finite"):
        model.set_patches(torch.tensor([1, 2]), torch.tensor([[0.0] * 6, [float("nan")] * 6]))


def test_a_device_fits_its_users_taste_and_leaves_the_model_alone():
    """User 1's local samples say items 0-2 are liked and 6-8 are not; after personalising,
    its vector ranks them that way more strongly than the cloud model did."""
    model = _patched()
    with torch.no_grad():                                   # a model whose items differ (DIN starts near 0)
        for emb in (model.ranker.user_emb, model.ranker.item_emb):
            emb.weight.normal_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    users, items, hops, _ = _batch(np.array([1] * 4))
    keep = (items <= 2) | (items >= 6)
    local = {"items": items[keep], "hist": hops[0]["ids"][keep], "mask": hops[0]["mask"][keep],
             "labels": (items[keep] <= 2).float()}
    for p in model.parameters():
        p.requires_grad_(False)
    theta = personalise(model, 1, local, torch.zeros(model.patch.size), DeviceConfig(steps=60, lr=0.1))
    batch = _batch(np.array([1]))
    with torch.no_grad():
        plain, mine = model(*batch), model(*batch, theta=theta.expand(len(batch[0]), -1))
    gap = lambda s: (s[:3].mean() - s[6:].mean()).item()            # noqa: E731
    assert gap(mine) > gap(plain) + 0.5
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_leave_last_out_holds_out_each_users_latest_two():
    inter = Interactions(np.array([0, 0, 0, 0, 1, 1, 2, 2, 2]), np.arange(9), np.array([5, 1, 9, 3, 1, 2, 7, 7, 8]),
                         3, 9)
    rows = leave_last_out(inter)
    assert rows["test"].tolist() == [2, 8] and rows["valid"].tolist() == [0, 7]        # user 1 has only 2
    assert sorted(rows["train"].tolist()) == [1, 3, 4, 5, 6]


def test_the_temporal_protocol_tests_warm_users_after_one_cut():
    rng = np.random.default_rng(0)
    inter = Interactions(rng.integers(0, 40, 500), rng.integers(0, 30, 500), rng.integers(0, 1000, 500), 40, 30)
    parts, cut = temporal_parts(inter), temporal_cut(inter, 0.8)
    warm = np.isin(inter.user, inter.user[inter.ts < cut])
    kept = np.flatnonzero((inter.ts < cut) | warm)                          # cold users' later rows left out
    assert sum(len(parts[p]) for p in ("train", "valid", "test")) == len(kept)
    assert np.array_equal(np.sort(np.concatenate([parts[p].ts for p in ("train", "valid", "test")])),
                          np.sort(inter.ts[kept]))
    assert parts["train"].ts.max() < parts["valid"].ts.min() <= parts["valid"].ts.max() < parts["test"].ts.min()
    assert np.isin(parts["test"].user, np.concatenate([parts["train"].user, parts["valid"].user])).all()


def test_metrics_of_known_ranks():
    scores = np.array([[9.0, 1, 2, 3], [1.0, 2, 3, 0], [2.0, 2, 0, 0]])    # ranks 0, 2, 0.5 (a tie)
    out = ranking_metrics(scores, np.array([0, 1, 2]), np.array([0, 0, 1]), k=2)
    assert out["hr@2"] == pytest.approx(2 / 3)
    assert out["ndcg@2"] == pytest.approx((1 + 0 + 1) / 3)
    assert out["auc"] == pytest.approx((1 + 1 / 3 + (1 - 0.5 / 3)) / 3)
    assert [g["users"] for g in out["groups"]] == [2, 1]


def test_candidates_are_never_items_the_user_met(graph):
    data = DCCLData(graph, seed=0)
    cand = data.candidates("test", 20)
    seen = set(zip(data.inter.user.tolist(), data.inter.item.tolist()))
    assert cand.items.shape == (len(data.parts["test"]), 21)
    assert all((u, i) not in seen for u, row in zip(cand.users, cand.items[:, 1:]) for i in row)
    assert all(len(set(row)) == 21 for row in cand.items)
    assert (data.group.min(), data.group.max()) == (0, 19)


def test_rounds_run_resume_and_refuse_other_settings(graph, tmp_path, ray_local):
    out = tmp_path / "dccl"
    metas = run_rounds(graph, out, TINY, rounds=1, log=lambda s: None)
    assert [m["round"] for m in metas] == [0, 1]
    fleet = metas[1]["fleet"]
    assert fleet["users"] == 60 and fleet["users_per_s"] > 0 and fleet["patch_bytes"] == 4 * 3 * TINY.patch.k
    model = build_model(DCCLData(graph, seed=0), TINY)
    model.load_state_dict(torch.load(out / "round_001" / "model.pt", weights_only=True))
    assert model.has_patch[:60].all() and model.table[:60].abs().sum() > 0           # every device's patch
    # a round cut short after its fleet resumes at the cloud stage; the fleet is not re-run
    stamp = os.stat(out / "round_001" / "fleet.npz").st_mtime_ns
    (out / "round_001" / "meta.json").unlink()
    metas = run_rounds(graph, out, TINY, rounds=2, log=lambda s: None)
    assert [m["round"] for m in metas] == [0, 1, 2] and DCCLDir(out).done() == [0, 1, 2]
    assert os.stat(out / "round_001" / "fleet.npz").st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="other settings \\(distill_weight\\)"):
        run_rounds(graph, out, replace(TINY, distill_weight=0.9), rounds=2)
    # a corrupted fleet file is a clear error naming it
    (out / "round_002" / "fleet.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="round_002/fleet.npz: not a readable fleet file"):
        read_fleet(out / "round_002" / "fleet.npz", model)


def test_patched_scores_through_the_protocol(graph):
    data = DCCLData(graph, seed=0)
    model = build_model(data, TINY)
    cand = data.candidates("valid", 20)
    base = score_candidates(model, data, cand)
    local = local_samples(data, data.train_samples(2, 0))
    assert (np.diff(local["users"]) >= 0).all() and local["hist"].shape[1] == TINY.length
    model.set_patches(torch.as_tensor(cand.users[:1]), torch.ones(1, model.patch.size))
    moved = score_candidates(model, data, cand)
    assert not np.allclose(moved[0], base[0]) and np.allclose(moved[1:], base[1:], atol=1e-6)


def test_the_cli_refuses_a_folder_without_a_run(tmp_path):
    from cluster.cli import main

    result = CliRunner().invoke(main, ["dccl", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "holds no training run" in result.output
