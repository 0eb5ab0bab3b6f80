"""The faiss retrieval index: exact results, index choice by size, live upserts, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from serve.index import IndexConfig, ItemIndex, index_spec


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_matches_brute_force_and_skips_history():
    rng = np.random.default_rng(0)
    items, queries = rng.normal(size=(500, 16)), rng.normal(size=(4, 16))
    index = ItemIndex(items)
    assert index.spec == "Flat"
    truth = np.argsort(-(_unit(queries) @ _unit(items).T), axis=1)
    ids, scores = index.search(queries, 10)
    np.testing.assert_array_equal(ids, truth[:, :10])
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    history = [set(truth[b, :3].tolist()) for b in range(4)]
    ids, _ = index.search(queries, 10, exclude=history)
    np.testing.assert_array_equal(ids, truth[:, 3:13])


def test_upserts_are_searchable_at_once_and_survive_compaction():
    rng = np.random.default_rng(1)
    items = rng.normal(size=(200, 8))
    index = ItemIndex(items, cfg=IndexConfig(compact_at=3), version="v0001")
    target = rng.normal(size=(1, 8))
    index.upsert([200], target, version="v0001+1")             # a new item
    assert index.search(target, 1)[0][0, 0] == 200 and index.version == "v0001+1" and len(index) == 201
    index.upsert([7], -target)                                 # item 7 moved away from the query
    ids, _ = index.search(target, 201)
    assert ids[0, -1] == 7 and len(set(ids[0].tolist())) == 201       # last now, and listed once
    index.upsert([8], target * 2)                              # third upsert: compacts
    assert index.side.ntotal == 0 and not index.stale and len(index) == 201
    assert set(index.search(target, 2)[0][0].tolist()) == {200, 8}


@pytest.mark.parametrize("count,spec", [(300, "IVF69,Flat"), (600, "HNSW32")])
def test_approximate_indexes_by_size_keep_recall(count, spec):
    cfg = IndexConfig(exact_max=100, ivf_max=500, nprobe=32)
    assert index_spec(count, cfg) == spec
    rng = np.random.default_rng(2)
    items, queries = rng.normal(size=(count, 16)), rng.normal(size=(20, 16))
    index = ItemIndex(items, cfg=cfg)
    truth = np.argsort(-(_unit(queries) @ _unit(items).T), axis=1)[:, :10]
    ids, _ = index.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), truth.tolist())])
    assert recall >= 0.9, recall
    index.upsert([count], queries[:1])
    index.compact()
    assert index.search(queries[:1], 1)[0][0, 0] == count


def test_bad_input_is_named():
    index = ItemIndex(np.eye(4))
    with pytest.raises(ValueError, match=r"queries: expected shape \[N, 4\], got \[2, 3\]"):
        index.search(np.zeros((2, 3)), 1)
    with pytest.raises(ValueError, match="k must be an int >= 1, got 0"):
        index.search(np.ones((1, 4)), 0)
    with pytest.raises(ValueError, match="queries: contains NaN"):
        index.search(np.full((1, 4), np.nan), 1)
    with pytest.raises(ValueError, match="expected 4 distinct ids"):
        ItemIndex(np.eye(4), ids=[0, 0, 1, 2])
    ids, scores = index.search(np.ones((1, 4)), 6)               # more than there are
    assert ids[0, 4:].tolist() == [-1, -1] and np.isinf(scores[0, 4:]).all()


def test_index_follows_the_embedding_view_deltas(tmp_path):
    import json

    from trainers.ille.embedding_view import EmbeddingView

    rng = np.random.default_rng(3)
    base = tmp_path / "embeddings" / "v0001"
    base.mkdir(parents=True)
    np.save(base / "item.npy", rng.normal(size=(50, 8)).astype(np.float32))
    (base / "meta.json").write_text(json.dumps({"version": 1, "dim": 8, "counts": {"item": 50}}))
    (tmp_path / "embeddings" / "LATEST").write_text("v0001")
    view = EmbeddingView(tmp_path)
    index = ItemIndex.from_view(view, "item")
    assert len(index) == 50 and index.version == "v0001"
    deltas = tmp_path / "updates" / "v0001" / "deltas"
    deltas.mkdir(parents=True)
    new = rng.normal(size=(2, 8)).astype(np.float32)
    np.savez(deltas / f"{7:012d}.npz", **{"item.ids": np.array([50, 3]), "item.rows": new})
    assert index.follow(view, "item") == 2 and index.follow(view, "item") == 0
    assert len(index) == 51 and index.version == "v0001+1"
    assert index.search(new[:1], 1)[0][0, 0] == 50 and index.search(new[1:], 1)[0][0, 0] == 3


@pytest.mark.parametrize("count,spec", [(300, "IVF69,Flat"), (600, "HNSW32")])
def test_a_shared_index_is_built_once_per_version_and_read_by_the_others(tmp_path, count, spec):
    """``from_view(shared=True)``: the first replica builds the version's approximate index
    and writes it into ``<version>/index/``; the next one reads it (the same answers, no
    build); a file cut short is rebuilt; update deltas go on top of it."""
    import json
    import time

    from trainers.ille.embedding_view import EmbeddingView

    cfg = IndexConfig(exact_max=100, ivf_max=500)
    rng = np.random.default_rng(3)
    items, queries = rng.normal(size=(count, 16)).astype(np.float32), rng.normal(size=(5, 16))
    version = tmp_path / "embeddings" / "v0001"
    version.mkdir(parents=True)
    np.save(version / "item.npy", items)
    (version / "meta.json").write_text(json.dumps({"version": 1, "dim": 16, "counts": {"item": count}}))
    (tmp_path / "embeddings" / "LATEST").write_text("v0001")
    first = ItemIndex.from_view(EmbeddingView(tmp_path), "item", cfg, shared=True)
    (kept,) = (version / "index").glob("*.faiss")
    assert first.spec == spec and kept.name == f"item-{spec}-t40.faiss"
    stamp = kept.stat().st_mtime_ns
    time.sleep(0.01)
    second = ItemIndex.from_view(EmbeddingView(tmp_path), "item", cfg, shared=True)
    assert kept.stat().st_mtime_ns == stamp                           # read, not built again
    np.testing.assert_array_equal(second.search(queries, 10)[0], first.search(queries, 10)[0])
    kept.write_bytes(kept.read_bytes()[:1000])                        # cut short: rebuilt
    third = ItemIndex.from_view(EmbeddingView(tmp_path), "item", cfg, shared=True)
    np.testing.assert_array_equal(third.search(queries, 10)[0], first.search(queries, 10)[0])
    assert kept.stat().st_size > 1000
    deltas = tmp_path / "updates" / "v0001" / "deltas"
    deltas.mkdir(parents=True)
    np.savez(deltas / f"{0:012d}.npz", **{"item.ids": np.array([count]), "item.rows": queries[:1].astype(np.float32)})
    updated = ItemIndex.from_view(EmbeddingView(tmp_path), "item", cfg, shared=True)
    assert updated.search(queries[:1], 1)[0][0, 0] == count and updated.version == "v0001+1"
    updated.compact()                                                 # reads the loaded index's rows back
    assert updated.search(queries[:1], 1)[0][0, 0] == count and len(updated) == count + 1
