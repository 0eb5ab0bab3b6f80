"""The run root's durable copy through pyarrow's filesystems (file:// here, s3:// on a cloud),
and the pipeline publishing to it and restoring from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cluster import storage
from cluster.pipeline import PipelineConfig, run_pipeline


def tree(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "root"
    (root / "graph" / "edges").mkdir(parents=True)
    (root / "graph" / "schema.json").write_text('{"x": 1}')
    np.save(root / "graph" / "edges" / "a.npy", np.arange(1000))
    return root


def test_publish_then_restore_round_trip(folder, tmp_path):
    uri = f"file://{tmp_path / 'store'}"
    out = storage.publish(folder, uri, "graph")
    assert out["files"] == 2 and out["bytes"] == sum(len(b) for b in tree(folder / "graph").values())
    manifest = json.loads((tmp_path / "store" / "graph.manifest.json").read_text())
    assert set(manifest["files"]) == {"schema.json", "edges/a.npy"}

    assert storage.restore(folder, uri, "graph") is False            # present locally: untouched
    original = tree(folder / "graph")
    shutil.rmtree(folder / "graph")
    assert storage.restore(folder, uri, "graph") is True
    assert tree(folder / "graph") == original


def test_restore_ignores_unfinished_copies_and_rejects_damaged_ones(folder, tmp_path):
    uri = f"file://{tmp_path / 'store'}"
    storage.publish(folder, uri, "graph")
    shutil.rmtree(folder / "graph")
    (tmp_path / "store" / "graph" / "edges" / "a.npy").unlink()     # damaged after publishing
    with pytest.raises(OSError, match=r"graph: files differ from its manifest .*edges/a.npy"):
        storage.restore(folder, uri, "graph")
    assert not (folder / "graph").exists() and not list(folder.glob(".*graph*"))   # nothing half-written

    (tmp_path / "store" / "graph.manifest.json").unlink()            # as if the copy never finished
    assert storage.restore(folder, uri, "graph") is False and not (folder / "graph").exists()


def test_publish_names_what_is_missing_and_bad_uris(folder):
    with pytest.raises(FileNotFoundError, match="cannot publish .*root/parts"):
        storage.publish(folder, "file:///tmp/unused", "parts")
    with pytest.raises(ValueError, match="storage URI 'nosuch://bucket/x'"):
        storage.publish(folder, "nosuch://bucket/x", "graph")


def test_pipeline_publishes_outputs_and_restores_inputs(ray_local, tmp_path):
    uri = f"file://{tmp_path / 'store'}"
    cfg = PipelineConfig(root=str(tmp_path / "ml"), storage=uri, text=True)
    first = run_pipeline(cfg, ["data", "partition"])
    published = {p["name"]: p["files"] for s in first["stages"].values() for p in s["published"]}
    assert set(published) == {"graph", "parts"} and published["parts"] > 10
    edges = first["stages"]["data"]["edges"]
    assert first["stages"]["data"]["text_features"] == ["movie.title_emb"]

    shutil.rmtree(tmp_path / "ml" / "graph")                         # a fresh scratch disk
    shutil.rmtree(tmp_path / "ml" / "parts")
    again = run_pipeline(cfg, ["partition"])
    assert again["stages"]["partition"]["restored"] == ["graph"]
    restored = json.loads((tmp_path / "ml" / "graph" / "schema.json").read_text())
    movie = next(n for n in restored["node_types"] if n["name"] == "movie")
    assert {"name": "title_emb", "kind": "dense", "dim": 384} in movie["features"]      # published with the text
    meta = json.loads((tmp_path / "ml" / "parts" / "meta.json").read_text())
    assert meta["num_edges"] == 2 * edges                            # every edge, both directions

    gfm = run_pipeline(cfg, ["gfm"])["stages"]["gfm"]                 # foundation + one epoch of the towers
    version = Path(gfm["embeddings"])
    assert np.load(version / "user.npy").shape == (943, 64) and np.load(version / "movie.npy").shape == (1682, 64)
    assert [p["name"] for p in gfm["published"]] == ["gfm"] and gfm["restored"] == []
