"""LERG: the quantised compositional table, the rewiring, the device bundle and its reference
scorer, on a small graph with two communities (even users take items 0-29, odd ones 30-59)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from graphs.exceptions import ConfigError
from trainers.evaluation.splits import Interactions
from trainers.lerg.bundle import BundleError, bundle_sizes, pack, read_bundle, unpack, write_bundle
from trainers.lerg.codebook import CodebookConfig, fake_quant, graph_assignment
from trainers.lerg.device import DeviceScorer
from trainers.lerg.model import LERGConfig, bipartite_norm, fit_lerg, lerg_config
from trainers.lerg.rewire import RewireConfig, select_retained

U, N = 60, 60


def _two_communities(seed: int = 0, per_user: int = 12) -> Interactions:
    rng = np.random.default_rng(seed)
    user = np.repeat(np.arange(U), per_user)
    item = rng.integers(0, 30, len(user)) + 30 * (user % 2)
    return Interactions(user, item, np.arange(len(user)), U, N)


def _cfg(bits=8, retention=0.7, epochs=15) -> LERGConfig:
    return LERGConfig(table=CodebookConfig(codebook=16, bits=bits, train_weights=False, init_std=0.03),
                      rewire=RewireConfig(retention=retention, placeholders=4), epochs=epochs, finetune_epochs=5,
                      batch_size=128, max_steps_per_epoch=8)


@pytest.fixture(scope="module")
def trained():
    return fit_lerg(_two_communities(), seed=0, cfg=_cfg())


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_fake_quant_rounds_to_bits_levels_and_passes_gradients(bits):
    x = torch.randn(5, 16, requires_grad=True)
    q = fake_quant(x, bits)
    step = x.detach().abs().amax(1, keepdim=True) / (2 ** (bits - 1) - 1)
    levels = (q.detach() / step)
    assert torch.allclose(levels, levels.round(), atol=1e-3)      # on the integer grid
    assert (q.detach() - x.detach()).abs().max() <= step.max() / 2 + 1e-6
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))                 # straight through


@pytest.mark.parametrize("bits", [4, 8, 16, None])
def test_packed_codebook_round_trips(bits):
    x = np.random.default_rng(1).normal(size=(7, 9)).astype(np.float32)
    q, scale = pack(x, bits)
    back = unpack(q, scale, bits, 9)
    assert back.shape == x.shape
    tol = 0 if bits is None else np.abs(x).max(1, keepdims=True) / (2 ** (bits - 1) - 1) / 2 + 1e-6
    assert np.all(np.abs(back - x) <= tol)
    if bits == 4:
        assert q.dtype == np.uint8 and q.shape == (7, 5)            # two values a byte


def test_graph_assignment_puts_each_community_on_its_own_anchors():
    inter = _two_communities()
    index, weight = graph_assignment(bipartite_norm(inter)[:U, U:],
                                     CodebookConfig(codebook=8, per_entity=2, spectral_dim=2), seed=0)
    assert index.shape == (U + N, 2) and np.all(index[:, 0] != index[:, 1])
    assert np.allclose(weight.sum(1), 1.0) and np.allclose(weight[:, 0], 0.9)
    community = np.concatenate([np.arange(U) % 2, np.arange(N) >= 30])
    anchors = [set(index[community == c, 0]) for c in (0, 1)]
    assert not anchors[0] & anchors[1]                               # no anchor shared across communities


def test_selection_meets_retention_and_mac_budget():
    rng = np.random.default_rng(0)
    score, sends = rng.random(1000), rng.integers(1, 50, 1000)
    keep = select_retained(score, sends, RewireConfig(retention=0.7, mac_budget=0.5))
    assert keep.sum() == 700 and sends[keep].sum() <= 0.5 * sends.sum()
    plain = select_retained(score, sends, RewireConfig(retention=0.7, mac_budget=1.0))
    assert set(np.flatnonzero(plain)) == set(np.argsort(-score)[:700])   # no budget: the top 70% by contribution
    with pytest.raises(ConfigError, match="retention"):
        RewireConfig(retention=0)


def test_trained_model_separates_communities_and_rewiring_cuts_macs(trained):
    score = trained.score_fn()(torch.arange(U))                      # [U, N]
    own = np.where(np.arange(U)[:, None] % 2 == 0, np.arange(N) < 30, np.arange(N) >= 30)
    assert score[torch.from_numpy(own)].mean() > score[torch.from_numpy(~own)].mean() + 0.05
    assert trained.retained.sum() == int(np.ceil(0.7 * (U + N)))
    assert trained.macs() <= 0.7 * trained.full_macs + 1e-9
    assert np.all(trained.placeholder_of[~trained.retained] >= 0)


def test_bundle_round_trips_and_device_scores_match_the_server(trained, tmp_path):
    path = write_bundle(trained, tmp_path / "device.npz")
    bundle = read_bundle(path)
    assert [p.name for p in tmp_path.iterdir()] == ["device.npz"]     # renamed into place
    device = DeviceScorer(bundle)
    server = trained.final().numpy()
    assert np.allclose(np.concatenate([device.users, device.items]), server, atol=1e-5)
    sizes = bundle_sizes(bundle.arrays)
    assert sizes["table_bytes"] < 0.25 * sizes["float_bytes"]       # 16 int8 codes + 2 uint8 ids a row
    # user 0 (even community) whose device saw it take odd-community items: fine-tuning moves it there
    before = device.items @ device.users[0]
    after = device.items @ device.finetune(0, np.arange(30, 60, 3), steps=50)
    assert (after[30:] - before[30:]).mean() > (after[:30] - before[:30]).mean() + 0.1
    top = device.recommend(None, [31, 35, 40], k=10)                # a new user of the odd community
    assert len(top) == 10 and not {31, 35, 40} & set(top.tolist()) and np.mean(top >= 30) >= 0.8


def test_quantised_scores_agree_with_float_scores():
    inter = _two_communities()
    full = fit_lerg(inter, 0, _cfg(bits=None, retention=1.0)).score_fn()(torch.arange(U))
    int8 = fit_lerg(inter, 0, _cfg(bits=8, retention=1.0)).score_fn()(torch.arange(U))
    # the same seed and data: int8 training lands within a few percent of float scores
    assert (int8 - full).abs().max() < 0.1 * full.abs().max()
    top_full, top_int8 = full.topk(10).indices, int8.topk(10).indices
    overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(top_full, top_int8)])
    assert overlap > 0.7


def test_corrupted_or_foreign_bundles_fail_clearly(trained, tmp_path):
    path = write_bundle(trained, tmp_path / "b.npz")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(BundleError, match="broken.npz: not a readable LERG bundle"):
        read_bundle(broken)
    arrays = dict(np.load(path, allow_pickle=False))
    arrays["index"] = arrays["index"][:-1]
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(BundleError, match="short.npz: index has"):
        read_bundle(tmp_path / "short.npz")
    arrays = dict(np.load(path, allow_pickle=False))
    arrays["graph_indices"] = arrays["graph_indices"][:-3]
    np.savez(tmp_path / "graph.npz", **arrays)
    with pytest.raises(BundleError, match="graph.npz: the rewired graph is inconsistent"):
        DeviceScorer.load(tmp_path / "graph.npz")
    with pytest.raises(BundleError, match="no such bundle"):
        read_bundle(tmp_path / "missing.npz")
    with pytest.raises(BundleError, match="local item ids"):
        DeviceScorer(read_bundle(path)).finetune(0, [N + 5])


def test_model_names():
    assert lerg_config("lerg-int4").table.bits == 4
    assert lerg_config("lerg-int16-r0.5").rewire.retention == 0.5
    with pytest.raises(ConfigError, match="bad LERG model 'lerg-x3'"):
        lerg_config("lerg-x3")
    with pytest.raises(ConfigError, match="bad LERG model 'lerg-int5'"):
        lerg_config("lerg-int5")
    from trainers.evaluation.evaluate import run_eval
    with pytest.raises(ConfigError, match="not a LERG model name: 'lergx'"):
        run_eval("/nonexistent-graph", models=["pop", "lergx"])


def test_cli_trains_a_run_and_exports_its_device_bundle(tmp_path):
    from click.testing import CliRunner

    from cluster.cli import main
    from tests.trainers.test_gfm_foundation import _shop

    _shop(tmp_path / "shop")
    runner = CliRunner()
    big = runner.invoke(main, ["lerg", "train", str(tmp_path / "shop"), str(tmp_path / "big")])
    assert big.exit_code == 1 and "codebook (256) must be smaller than the number of entities (47" in big.output
    done = runner.invoke(main, ["lerg", "train", str(tmp_path / "shop"), str(tmp_path / "run"), "--codebook", "8",
                                "--epochs", "3", "--retention", "0.5"])
    assert done.exit_code == 0, done.output
    assert "kept 24 of 47 entities" in done.output
    out = runner.invoke(main, ["export", str(tmp_path / "run"), "--device", str(tmp_path / "dev.npz")])
    assert out.exit_code == 0, out.output
    assert "of the float32 table" in out.output
    device = DeviceScorer.load(tmp_path / "dev.npz")
    assert device.items.shape == (7, 64) and device.users.shape == (40, 64)
    refused = runner.invoke(main, ["export", str(tmp_path / "shop"), "--device", str(tmp_path / "x.npz")])
    assert refused.exit_code == 1 and "holds no training run" in refused.output


def test_pq_scoring_ranks_like_propagation_without_holding_the_rows(tmp_path):
    rng = np.random.default_rng(3)
    users, items = 200, 400
    user = np.repeat(np.arange(users), 15)
    item = (rng.integers(0, items // 2, len(user)) + (items // 2) * (user % 2)) % items
    state = fit_lerg(Interactions(user, item, np.arange(len(user)), users, items), 0,
                     replace(_cfg(), table=replace(_cfg().table, codebook=32)))
    path = write_bundle(state, tmp_path / "pq.npz", pq_subvectors=16)
    sizes = bundle_sizes(read_bundle(path).arrays)
    assert sizes["scoring_bytes"] == items * 16 + 16 * 256 * 4 * 2     # codes + float16 centroids
    exact, pq = DeviceScorer.load(path, propagate=True), DeviceScorer.load(path)
    assert not pq.propagate and pq.users is None
    vec = exact.users[0]
    assert np.corrcoef(exact.item_scores(vec), pq.item_scores(vec))[0, 1] > 0.95
    top_exact = set(np.argsort(-exact.item_scores(vec))[:20])
    assert len(top_exact & set(np.argsort(-pq.item_scores(vec))[:20])) >= 12
    # a bundle user's row rebuilt from its items' PQ rows points where the propagated one does
    approx = pq.known_user(0, item[user == 0])
    assert approx @ exact.users[0] / np.linalg.norm(approx) / np.linalg.norm(exact.users[0]) > 0.9
    local = np.arange(items // 2, items // 2 + 10)                       # an odd-community user's device
    assert np.mean(pq.recommend(None, local, k=20) >= items // 2) >= 0.8
    with pytest.raises(BundleError, match="has no PQ codes"):
        DeviceScorer.load(write_bundle(state, tmp_path / "plain.npz"), propagate=False)
    with pytest.raises(ConfigError, match="PQ scoring needs at least 256 items"):
        write_bundle(fit_lerg(_two_communities(), 0, _cfg(epochs=1)), tmp_path / "small.npz", pq_subvectors=16)


def test_eval_model_reports_its_size_and_macs():
    from trainers.evaluation.evaluate import fit_lerg_scores

    rng = np.random.default_rng(4)
    user = np.repeat(np.arange(300), 10)
    train = Interactions(user, rng.integers(0, 200, len(user)), np.arange(len(user)), 300, 200)
    score, figures = fit_lerg_scores(train, 0, "lerg-int4-r0.7")
    assert score(torch.arange(3)).shape == (3, 200)
    # 500 entities: 256 codes of 32 bytes (int4) dominate: well below the 128,000-byte float table
    assert 0.05 < figures["size_ratio"] < 0.12 and 0.5 < figures["macs_ratio"] <= 0.7


def test_a_few_rows_decode_as_the_whole_table(trained, tmp_path):
    bundle = read_bundle(write_bundle(trained, tmp_path / "rows.npz"))
    ids = np.array([0, 5, U + 3, U + N - 1, int(np.flatnonzero(~trained.retained)[0])])
    np.testing.assert_array_equal(bundle.layer0(ids), bundle.layer0()[ids])


def test_a_pq_device_never_reads_the_graph(tmp_path):
    rng = np.random.default_rng(5)
    user = np.repeat(np.arange(300), 10)
    state = fit_lerg(Interactions(user, rng.integers(0, 300, len(user)), np.arange(len(user)), 300, 300), 0,
                     replace(_cfg(), table=replace(_cfg().table, codebook=32)))
    scorer = DeviceScorer.load(write_bundle(state, tmp_path / "pq.npz", pq_subvectors=8))
    scorer.recommend(3, [1, 2, 3])
    loaded = set(scorer.bundle.arrays._cache)
    assert "pq_codes" in loaded and not loaded & {"graph_indices", "graph_indptr"}
