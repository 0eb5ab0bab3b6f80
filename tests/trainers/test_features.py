"""Real MovieLens attributes through FeatureStore, and HetSGFormer on a real sampled batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graphs.partition import PartitionConfig, partition_graph
from graphs.samplers import sample_fanout
from graphs.shards import ShardStore
from graphs.store import GraphDir
from trainers.features import FeatureStore
from trainers.hetsgformer.config import HetSGFormerConfig
from trainers.hetsgformer.model import HetSGFormer, link_loss
from trainers.hetsgformer.train import Optimizers


@pytest.fixture(scope="module")
def movielens(ml100k, tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("ml")
    partition_graph(ml100k, root / "p", PartitionConfig(num_parts=2))
    gdir = GraphDir(ml100k)
    return gdir, ShardStore(root / "p"), FeatureStore(gdir)


def test_feature_store_matches_the_node_tables(movielens):
    gdir, _, features = movielens
    movies = gdir.read_nodes("movie").to_pydict()
    ids = np.arange(len(movies["id"]))
    year, present = features.gather("movie", ids)["release_year"]
    want = np.array([-1 if v is None else v for v in movies["release_year"]])
    np.testing.assert_array_equal(year.numpy()[present.numpy()], want[want >= 0])
    assert (~present.numpy()).sum() == (want < 0).sum() >= 1  # movie 267 has no year
    gender, present = features.gather("user", np.array([0, 1, 2]))["gender"]
    assert present.all() and set(gender.tolist()) <= {0, 1}
    assert "title" not in features.gather("movie", ids[:2])  # text is left to a text tower


def test_model_trains_on_a_real_sampled_batch(movielens):
    gdir, store, features = movielens
    torch.manual_seed(0)
    model = HetSGFormer(store.schema, HetSGFormerConfig(dim=32, v_max=50_000))
    opt = Optimizers(model, lr=1e-2)  # SparseAdam for the sparse ID table, Adam for the rest
    rates = gdir.read_edges("user__rates__movie")
    pick = np.random.default_rng(0).choice(len(rates["src"]), 64, replace=False)
    users, u_row = np.unique(rates["src"][pick], return_inverse=True)
    items, i_row = np.unique(rates["dst"][pick], return_inverse=True)
    losses = []
    for _ in range(5):
        sub = sample_fanout(store, {"user": users, "movie": items}, [5, 3], np.random.default_rng(1))
        emb = model(sub, features.batch(sub.nodes))
        u = emb["user"][torch.from_numpy(u_row)]  # seeds come first: row = position in users
        i = emb["movie"][torch.from_numpy(i_row)]
        loss = link_loss(u, i, pos_item_ids=torch.from_numpy(items[i_row]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert emb["user"].shape[1] == 32 and set(emb) >= {"user", "movie", "genre", "entity"}
    enc = model.iel.encoders[model.iel.type_index["user"]]
    assert enc["gender"].emb.weight.grad.abs().sum() > 0  # real attributes reach the loss
    assert losses[-1] < losses[0]
