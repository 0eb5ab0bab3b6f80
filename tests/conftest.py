"""Shared fixtures: one real local Ray for the whole session, tiny graphs built on disk."""

from __future__ import annotations

import numpy as np
import pytest
import ray

from graphs.schema import EdgeType, GraphSchema, NodeType
from graphs.store import GraphWriter


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray (2 CPUs), started once and shut down at the end, with Serve's HTTP
    ingress as ``hetrec serve`` has it by default (HAProxy, on free ports)."""
    if not ray.is_initialized():
        from serve.haproxy import enable_haproxy

        enable_haproxy(stats_port=None, metrics_port=None)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ml100k(tmp_path_factory):
    """The real MovieLens-100K graph directory (from the recbole wheel), built once per session."""
    from graphs.movielens import build_movielens

    out = tmp_path_factory.mktemp("ml100k") / "graph"
    build_movielens(out)
    return out


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, ray_local):
    """A small trained and exported HetSGFormer run on a synthetic graph (20,000 edges, one
    epoch of 3 steps, dim 16), built once per session. Treat it as read-only: a test that
    writes into a run (updates, another export) works on :func:`copy_run`."""
    from graphs.synthetic import generate_synthetic
    from trainers.hetsgformer.config import HetSGFormerConfig
    from trainers.hetsgformer.export import export_embeddings
    from trainers.hetsgformer.train import TrainConfig, train

    root = tmp_path_factory.mktemp("trained")
    generate_synthetic(root / "g", 20_000, seed=1)
    train(root / "g", root / "run", TrainConfig(workers=1, epochs=1, batch_size=128, fanouts=(4,), steps_per_epoch=3,
                                                random_negatives=32,
                                                model=HetSGFormerConfig(dim=16, v_max=20_000, num_heads=2)))
    export_embeddings(root / "run", actors=1)
    return root / "run"


@pytest.fixture(scope="session")
def served_run(ml100k, tmp_path_factory, ray_local):
    """What ``hetrec serve`` serves: a short HetSGFormer run on MovieLens-100K, exported, with
    a short DSGL ranker, and a bearer-token file; ``(run, token_file, token)``, built once.
    The Serve tests' service writes events into it: another service works on a copy."""
    from serve.auth import write_token_file
    from trainers.hetsgformer.export import export_embeddings
    from trainers.hetsgformer.train import TrainConfig, train
    from trainers.ranking.train import RankerConfig, train_ranker

    root = tmp_path_factory.mktemp("served")
    train(ml100k, root / "run", TrainConfig(workers=1, epochs=1, steps_per_epoch=20))
    export_embeddings(root / "run", actors=1)
    train_ranker(ml100k, root / "run" / "ranker", RankerConfig(workers=1, epochs=1, steps_per_epoch=10,
                                                               eval_samples=1000))
    return root / "run", root / "serve.token", write_token_file(root / "serve.token")


def http_call(url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    """GET ``url`` (POST ``body`` as JSON) with an optional bearer token: ``(status, JSON)``;
    status 0 when nothing answered (refused, reset, timed out)."""
    import json
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except OSError as e:
        return 0, {"error": repr(e)}


def copy_run(run, dest):
    """A copy of ``run`` without its updates, sharing its (read-only) graph and shards."""
    import shutil

    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("updates"))
    return dest


def random_graph(path, seed: int, counts: dict[str, int], edges: dict[tuple, int]):
    """Write a random graph; ``edges`` maps ``(src, rel, dst, ts, weight) -> count``.

    Returns ``(schema, {ekey: {"src", "dst", "ts"?, "weight"?}})`` with the raw arrays.
    """
    rng = np.random.default_rng(seed)
    schema = GraphSchema(tuple(NodeType(n, 0) for n in counts),
                         tuple(EdgeType(s, r, d, ts=t, weight=w) for (s, r, d, t, w) in edges))
    data = {}
    with GraphWriter(path, schema) as w:
        for n, c in counts.items():
            w.write_nodes(n, {"id": np.arange(c), "raw_id": [f"{n}{i}" for i in range(c)]})
        for (s, r, d, t, wt), m in edges.items():
            key = f"{s}__{r}__{d}"
            cols = {"src": rng.integers(0, counts[s], m), "dst": rng.integers(0, counts[d], m)}
            if t:
                cols["ts"] = rng.integers(0, 10**9, m)
            if wt:
                cols["weight"] = rng.random(m).astype(np.float32)
            data[key] = cols
            if m:
                w.write_edges(key, cols)
    return schema.with_counts(counts, {f"{s}__{r}__{d}": m for (s, r, d, _, _), m in edges.items()}), data
