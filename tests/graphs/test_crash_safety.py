"""A writer killed (SIGKILL, mid-write) leaves the previous version readable and intact:
a graph directory, a partitioned graph, an embeddings version. The writers work in a
hidden temp sibling and swap it in atomically only when done (``graphs.store.replace_dir``)."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_run

from graphs.movielens import build_movielens
from graphs.partition import PartitionConfig, partition_graph
from graphs.shards import ShardStore
from graphs.store import GraphDir, exchange
from trainers.hetsgformer.export import export_embeddings
from trainers.ille.embedding_view import EmbeddingView

ROOT = Path(__file__).resolve().parents[2]


def digest(folder: Path) -> dict[str, str]:
    """Every visible file under ``folder`` -> its sha256 (hidden temp siblings excluded)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def kill_mid_write(code: str, parent: Path, pattern: str, timeout_s: float = 180) -> None:
    """Run ``code`` in a new Python process; SIGKILL it as soon as ``parent.glob(pattern)``
    matches (its temp output has started to fill)."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if any(parent.glob(pattern)):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, \
            f"the writer was not killed mid-write (exit {proc.returncode}): {proc.stderr.read().decode()[-2000:]}"
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["pkill", "-9", "-s", str(proc.pid)], check=False)   # its Ray processes, if any


def test_exchange_swaps_two_folders(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    (tmp_path / "a" / "f").write_text("A"), (tmp_path / "b" / "f").write_text("B")
    assert exchange(tmp_path / "a", tmp_path / "b")      # this machine's filesystem supports it
    assert (tmp_path / "a" / "f").read_text() == "B" and (tmp_path / "b" / "f").read_text() == "A"


def test_killed_graph_rebuild_leaves_the_old_graph(tmp_path):
    out = tmp_path / "graph"
    build_movielens(out)
    before = digest(out)
    kill_mid_write(f"""
        from pathlib import Path
        from graphs.movielens import build_movielens
        build_movielens(Path({str(out)!r}), overwrite=True)
        """, tmp_path, ".graph.tmp-*/edges/*/*.parquet")
    assert digest(out) == before
    assert GraphDir(out, validate="full").schema.num_edges == 196_410


@pytest.mark.slow
def test_killed_partition_leaves_the_old_shards(ml100k, tmp_path, ray_local):
    parts = tmp_path / "parts"
    partition_graph(ml100k, parts, PartitionConfig(num_parts=2))
    before = digest(parts)
    kill_mid_write(f"""
        import ray
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        from graphs.partition import PartitionConfig, partition_graph
        partition_graph({str(ml100k)!r}, {str(parts)!r}, PartitionConfig(num_parts=2), overwrite=True)
        """, tmp_path, ".parts.tmp-*/*/*/indices.npy")
    assert digest(parts) == before
    store = ShardStore(parts)
    assert sum(store.counts.values()) == GraphDir(ml100k, validate="none").schema.num_nodes


@pytest.mark.slow
def test_killed_export_leaves_the_last_version_current(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    first = run / "embeddings" / "v0001"
    view = EmbeddingView(run)
    rows = {t: view.rows(t, np.arange(min(c, 50))) for t, c in view.base_counts.items()}
    kill_mid_write(f"""
        import ray
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        from trainers.hetsgformer.export import export_embeddings
        export_embeddings({str(run)!r}, actors=1)
        """, run / "embeddings", ".v0002.tmp-*/*.npy")
    assert (run / "embeddings" / "LATEST").read_text() == first.name == "v0001"
    again = EmbeddingView(run)
    for t, r in rows.items():
        np.testing.assert_array_equal(again.rows(t, np.arange(len(r))), r)
    assert export_embeddings(run, actors=1).name == "v0002"      # the next export is not blocked


@pytest.fixture
def no_swap(monkeypatch):
    """Filesystems without the atomic swap take the two-rename path."""
    import graphs.store

    monkeypatch.setattr(graphs.store, "exchange", lambda a, b: False)


def test_replace_without_the_swap_still_replaces(tmp_path, no_swap):
    from graphs.store import replace_dir

    (tmp_path / "final").mkdir(), (tmp_path / "new").mkdir()
    (tmp_path / "final" / "f").write_text("old"), (tmp_path / "new" / "f").write_text("new")
    replace_dir(tmp_path / "new", tmp_path / "final", overwrite=True)
    assert (tmp_path / "final" / "f").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["final"]
