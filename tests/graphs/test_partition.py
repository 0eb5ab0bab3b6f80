"""The partitioner against a brute-force reference on small random graphs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import random_graph

from graphs.exceptions import GraphFormatError
from graphs.partition import PartitionConfig, partition_graph
from graphs.shards import ShardStore, first_owned, owned_counts

COUNTS = {"user": 53, "item": 31, "tag": 7, "lonely": 4}
EDGES = {("user", "clicks", "item", True, True): 500, ("item", "has", "tag", False, False): 70,
         ("user", "follows", "user", True, False): 120, ("tag", "unused", "lonely", False, False): 0}


@pytest.fixture(scope="module", params=[(0, 1), (1, 3), (2, 4)], ids=["P1", "P3", "P4"])
def partitioned(request, tmp_path_factory, ray_local):
    seed, parts = request.param
    root = tmp_path_factory.mktemp(f"part{parts}")
    schema, data = random_graph(root / "g", seed, COUNTS, EDGES)
    # tiny buckets and batches force several row ranges and spill files per shard
    cfg = PartitionConfig(num_parts=parts, bucket_edges=40, batch_rows=97)
    meta = partition_graph(root / "g", root / "p", cfg)
    return schema, data, meta, ShardStore(root / "p"), parts


def _reference(schema, data):
    """{ekey (reverses included): (src, dst, ts|None, weight|None)} by brute force."""
    ref = {}
    for e in schema.edge_types:
        c = data[e.key]
        ref[e.key] = (c["src"], c["dst"], c.get("ts"), c.get("weight"))
        ref[e.reverse().key] = (c["dst"], c["src"], c.get("ts"), c.get("weight"))
    return ref


def test_every_edge_once_forward_and_reversed(partitioned):
    schema, data, meta, store, _ = partitioned
    for ekey, (src, dst, ts, weight) in _reference(schema, data).items():
        etype = store.edge_types[ekey]
        nb = store.neighbors(ekey, np.arange(COUNTS[etype.src]))
        assert nb.ptr[-1] == len(src), ekey
        for v in range(COUNTS[etype.src]):
            lo, hi = nb.ptr[v], nb.ptr[v + 1]
            got = sorted(zip(nb.ids[lo:hi].tolist(),
                             nb.ts[lo:hi].tolist() if ts is not None else [0] * (hi - lo),
                             nb.weight[lo:hi].tolist() if weight is not None else [0] * (hi - lo)))
            m = src == v
            want = sorted(zip(dst[m].tolist(), ts[m].tolist() if ts is not None else [0] * m.sum(),
                              weight[m].tolist() if weight is not None else [0] * m.sum()))
            assert got == want, (ekey, v)


def test_owner_rule_respected_in_every_shard(partitioned):
    schema, data, meta, store, parts = partitioned
    ref = _reference(schema, data)
    for ekey, (src, dst, _, _) in ref.items():
        etype = store.edge_types[ekey]
        offset = schema.offsets[etype.src]
        rows = owned_counts(offset, COUNTS[etype.src], parts)
        for p in range(parts):
            csr = store.csr(p, ekey)
            assert len(csr["indptr"]) == rows[p] + 1
            for r in range(rows[p]):
                g = first_owned(offset, parts)[p] + r * parts
                assert g % parts == p
                got = np.sort(csr["indices"][csr["indptr"][r]:csr["indptr"][r + 1]])
                np.testing.assert_array_equal(got, np.sort(dst[src == g - offset]))


def test_meta_counts_and_degree_stats(partitioned):
    schema, data, meta, store, parts = partitioned
    assert meta["num_parts"] == parts and meta["owner_rule"] == "global_id % num_parts"
    assert meta["num_edges"] == 2 * sum(EDGES.values())
    assert sum(s["nodes"]["user"] for s in meta["shards"]) == COUNTS["user"]
    for ekey, (src, _, _, _) in _reference(schema, data).items():
        stats = meta["degree_stats"][ekey]
        assert stats["edges"] == len(src)
        assert stats["max_degree"] == (np.bincount(src).max() if len(src) else 0)


def test_refuses_to_overwrite_and_leaves_nothing_on_failure(tmp_path, ray_local):
    random_graph(tmp_path / "g", 0, {"a": 5, "b": 5}, {("a", "to", "b", False, False): 20})
    partition_graph(tmp_path / "g", tmp_path / "p", PartitionConfig(num_parts=2))
    with pytest.raises(FileExistsError, match="already exists"):
        partition_graph(tmp_path / "g", tmp_path / "p", PartitionConfig(num_parts=2))
    # a graph whose schema.json promises more edges than its files hold
    doc = json.loads((tmp_path / "g" / "schema.json").read_text())
    doc["edge_types"][0]["count"] = 21
    (tmp_path / "g" / "schema.json").write_text(json.dumps(doc))
    with pytest.raises(GraphFormatError, match=r"20 rows .* count=21"):
        partition_graph(tmp_path / "g", tmp_path / "q", PartitionConfig(num_parts=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g", "p"]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="num_parts must be an int >= 1, got 0"):
        PartitionConfig(num_parts=0)


def test_hub_rows_larger_than_a_bucket(tmp_path, ray_local):
    """A power-law hub (one row far above bucket_edges) and crowded ranges stay exact."""
    from graphs.schema import EdgeType, GraphSchema, NodeType
    from graphs.store import GraphWriter

    rng = np.random.default_rng(7)
    dst = np.concatenate([np.zeros(200, np.int64), rng.integers(1, 300, 400), np.full(30, 5)])
    src = rng.integers(0, 90, len(dst))
    ts = rng.integers(0, 1000, len(dst))
    schema = GraphSchema((NodeType("user", 0), NodeType("item", 0)),
                         (EdgeType("user", "clicks", "item", ts=True),))
    with GraphWriter(tmp_path / "g", schema) as w:
        w.write_nodes("user", {"id": np.arange(90), "raw_id": [str(i) for i in range(90)]})
        w.write_nodes("item", {"id": np.arange(300), "raw_id": [str(i) for i in range(300)]})
        for lo in range(0, len(dst), 100):  # several batches, so every range has several slices
            w.write_edges("user__clicks__item", {"src": src[lo:lo + 100], "dst": dst[lo:lo + 100],
                                                 "ts": ts[lo:lo + 100]})
    meta = partition_graph(tmp_path / "g", tmp_path / "p",
                           PartitionConfig(num_parts=2, bucket_edges=16, batch_rows=64))
    store = ShardStore(tmp_path / "p")
    assert meta["degree_stats"]["item__rev_clicks__user"]["max_degree"] == 200
    for ekey, (a, b, n) in {"user__clicks__item": (src, dst, 90),
                            "item__rev_clicks__user": (dst, src, 300)}.items():
        nb = store.neighbors(ekey, np.arange(n))
        for v in range(n):
            lo, hi = nb.ptr[v], nb.ptr[v + 1]
            got = sorted(zip(nb.ids[lo:hi].tolist(), nb.ts[lo:hi].tolist()))
            assert got == sorted(zip(b[a == v].tolist(), ts[a == v].tolist())), (ekey, v)
    assert not list((tmp_path / "p").rglob("*.bin"))  # every spill file was consumed
