"""DSGL model: shapes, gradient flow, padding that cannot leak in, ablation switches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainers.evaluation.splits import Interactions
from trainers.ranking.dsgl import DSGL, DSGLConfig, hops_to_tensors
from trainers.ranking.dsgl_data import SequenceGraphs


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    inter = Interactions(rng.integers(0, 30, 600), rng.integers(0, 40, 600), rng.integers(0, 1000, 600), 30, 40)
    graphs = SequenceGraphs(inter, length=5, depth=2)
    users, items, t = rng.integers(0, 30, 16), rng.integers(0, 40, 16), rng.integers(500, 1000, 16)
    u_hops, i_hops = graphs.batch(users, items, t)
    return torch.as_tensor(users), torch.as_tensor(items), hops_to_tensors(u_hops), hops_to_tensors(i_hops)


def test_shapes_and_gradients_reach_every_part(batch):
    torch.manual_seed(0)
    fields = torch.randint(-1, 3, (30, 2))
    model = DSGL(30, 40, DSGLConfig(dim=16, heads=2, dropout=0.0), user_fields=fields, user_cards=[3, 3])
    logits = model(*batch)
    assert logits.shape == (16,) and torch.isfinite(logits).all()
    DSGL.loss(logits, torch.ones(16)).backward()
    for name, p in model.named_parameters():
        if name.startswith("item_field"):
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_padding_does_not_change_the_score(batch):
    torch.manual_seed(0)
    model = DSGL(30, 40, DSGLConfig(dim=16, dropout=0.0)).eval()
    users, items, u_hops, i_hops = batch
    before = model(users, items, u_hops, i_hops)
    noisy = [{**h, "ids": torch.where(h["mask"], h["ids"], torch.randint_like(h["ids"], 0, 30)),
              "gap": torch.where(h["mask"], h["gap"], 7)} for h in u_hops]
    torch.testing.assert_close(model(users, items, noisy, i_hops), before)
    moved = [{**h, "ids": torch.where(h["mask"], (h["ids"] + 1) % 40, h["ids"])} for h in u_hops[:1]] + u_hops[1:]
    assert not torch.allclose(model(users, items, moved, i_hops), before)   # real steps matter


def test_ablations_change_the_model():
    base = sum(p.numel() for p in DSGL(5, 5, DSGLConfig(dim=8)).parameters())
    assert sum(p.numel() for p in DSGL(5, 5, DSGLConfig(dim=8, time=False)).parameters()) < base
    assert sum(p.numel() for p in DSGL(5, 5, DSGLConfig(dim=8, second_order=False)).parameters()) < base
    with pytest.raises(ValueError, match="heads \\(3\\) must divide dim \\(8\\)"):
        DSGLConfig(dim=8, heads=3)


def _two_users_five_pairs(seed: int, depth: int):
    """A random 20-user x 30-item DSGL of ``depth`` and its pairwise logits for users 3 and 7
    against five items: ``(graphs, model, users, items, t, u_hops, i_hops, pairwise)``."""
    rng = np.random.default_rng(seed)
    inter = Interactions(rng.integers(0, 20, 400), rng.integers(0, 30, 400), rng.integers(0, 1000, 400), 20, 30)
    graphs = SequenceGraphs(inter, length=4, depth=depth)
    torch.manual_seed(0)
    model = DSGL(20, 30, DSGLConfig(dim=8, heads=2, depth=depth, dropout=0.0)).eval()
    users, items, t = np.array([3, 3, 3, 7, 7]), np.array([1, 2, 5, 1, 9]), np.full(5, 800)
    u_hops, i_hops = graphs.batch(users, items, t)
    pairwise = model(torch.as_tensor(users), torch.as_tensor(items), hops_to_tensors(u_hops), hops_to_tensors(i_hops))
    return graphs, model, users, items, t, u_hops, i_hops, pairwise


def test_one_user_many_candidates_equals_pairwise():
    graphs, model, users, items, t, u_hops, i_hops, pairwise = _two_users_five_pairs(seed=1, depth=3)
    one_u, _ = graphs.batch(np.array([3, 7]), np.array([0, 0]), np.full(2, 800))
    shared = model(torch.tensor([3, 7]), torch.as_tensor(items), hops_to_tensors(one_u), hops_to_tensors(i_hops),
                   pair=torch.tensor([0, 0, 0, 1, 1]))
    torch.testing.assert_close(shared, pairwise)
    i_t = hops_to_tensors(i_hops)
    cached = model(torch.tensor([3, 7]), torch.as_tensor(items), hops_to_tensors(one_u), i_t,
                   pair=torch.tensor([0, 0, 0, 1, 1]), item_memory=model.root_memory(False, i_t[0]))
    torch.testing.assert_close(cached, pairwise)                 # a cached item memory is exact
    # a user created after training (id 25 >= 20) reads the unknown row instead of failing
    unknown = model(torch.tensor([25, 7]), torch.as_tensor(items), hops_to_tensors(one_u), hops_to_tensors(i_hops),
                    pair=torch.tensor([0, 0, 0, 1, 1]))
    assert torch.isfinite(unknown).all() and not torch.allclose(unknown[:3], shared[:3])


def test_cached_item_memory_needs_only_the_mask_at_depth_2():
    """What the server passes: per item, its cached memory and mask, no sequence ids."""
    _, model, users, items, _, u_hops, i_hops, pairwise = _two_users_five_pairs(seed=2, depth=2)
    i_t = hops_to_tensors(i_hops)
    assert len(i_t) == 1
    mask_only = model(torch.as_tensor(users), torch.as_tensor(items), hops_to_tensors(u_hops), [{"mask": i_t[0]["mask"]}],
                      item_memory=model.root_memory(False, i_t[0]))
    torch.testing.assert_close(mask_only, pairwise)
    with pytest.raises(KeyError):                                  # without the memory the ids are needed
        model(torch.as_tensor(users), torch.as_tensor(items), hops_to_tensors(u_hops), [{"mask": i_t[0]["mask"]}])


def test_shared_sequences_attend_as_torch_multihead_attention_on_the_copies():
    """Serving's attention (keys and values projected once per sequence, then indexed by
    ``rows``, or broadcast when there is one) equals ``nn.MultiheadAttention`` (the
    training path) over a copy of the sequence per query, an empty sequence included."""
    from trainers.ranking.dsgl import _Aggregate

    torch.manual_seed(0)
    agg = _Aggregate(DSGLConfig(dim=16, heads=4, dropout=0.0))
    R, L, M = 3, 7, 11
    h, mask = torch.randn(R, L, 16), torch.rand(R, L) > 0.3
    mask[2] = False                                                     # an empty sequence
    rows = torch.tensor([0, 1, 2, 0, 0, 1, 2, 2, 1, 0, 1])
    center, parent = torch.randn(M, 16), torch.randn(M, 16)
    with torch.no_grad():
        copies = agg.train().attend(center, parent, h[rows], mask[rows])
        shared = agg.eval().attend(center, parent, h, mask, rows=rows)
        own = agg.attend(center, parent, h[rows], mask[rows])              # rows None: one sequence each
        one = agg.attend(center, parent, h[:1], mask[:1], rows=torch.zeros(M, dtype=torch.long))
        one_copies = agg.train().attend(center, parent, h[[0] * M], mask[[0] * M])
    torch.testing.assert_close(shared, copies, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(own, copies, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(one, one_copies, rtol=1e-5, atol=1e-6)
    assert torch.equal(shared[rows == 2], center[rows == 2])            # empty: the centre unchanged
    assert not torch.allclose(shared[rows == 0], center[rows == 0])
