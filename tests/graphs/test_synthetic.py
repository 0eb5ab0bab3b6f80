"""graphs.synthetic: exact counts, validity, determinism, power-law degrees, chunking."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from graphs.store import GraphDir
from graphs.synthetic import TS_END, TS_START, SyntheticConfig, generate_synthetic, zipf_ranks

E = 20_000


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> GraphDir:
    out = tmp_path_factory.mktemp("syn") / "g"
    generate_synthetic(out, E, seed=7)
    return GraphDir(out, validate="full")


def _edges(gdir: GraphDir) -> dict[str, dict[str, np.ndarray]]:
    return {e.key: gdir.read_edges(e.key) for e in gdir.schema.edge_types}


def test_counts_are_exact(graph: GraphDir) -> None:
    schema = graph.schema
    assert len(schema.node_types) >= 3 and len(schema.edge_types) >= 4
    assert schema.num_edges == E
    rows = {key: len(cols["src"]) for key, cols in _edges(graph).items()}
    assert rows == {e.key: e.count for e in schema.edge_types}
    assert sum(rows.values()) == E
    assert all(count > 0 for count in rows.values())
    expected = SyntheticConfig(E).node_counts()
    assert {n.name: n.count for n in schema.node_types} == expected
    for n in schema.node_types:
        table = graph.read_nodes(n.name)
        assert table.num_rows == n.count
        assert table.column("id").to_pylist() == list(range(n.count))


@pytest.mark.parametrize("num_edges", [1, 7, 999, np.int64(12_345)])
def test_counts_exact_at_odd_sizes(tmp_path, num_edges: int) -> None:
    schema = generate_synthetic(tmp_path / "g", num_edges, chunk_edges=100)
    assert schema.num_edges == num_edges
    gdir = GraphDir(tmp_path / "g", validate="full")
    assert sum(len(gdir.read_edges(e.key)["src"]) for e in gdir.schema.edge_types) == num_edges


def test_power_law_clicks(graph: GraphDir) -> None:
    clicks = graph.read_edges("user__clicks__item")
    n_items = graph.schema.node_type("item").count
    degree = np.bincount(clicks["dst"], minlength=n_items)
    top = np.argsort(degree)[::-1][: max(1, n_items // 100)]
    share = degree[top].sum() / degree.sum()
    assert share > 0.10, f"top 1% of items hold only {share:.1%} of clicks"
    # The hubs are scrambled over the id range, not the lowest ids.
    assert np.median(top) > n_items * 0.1
    # A long tail: the median item gets far fewer clicks than the mean.
    assert np.median(degree) < 0.5 * degree.mean()


def test_no_self_loops_in_same_type_relations(graph: GraphDir) -> None:
    for e in graph.schema.edge_types:
        if e.src == e.dst:
            cols = graph.read_edges(e.key)
            assert not np.any(cols["src"] == cols["dst"]), e.key


def test_timestamps_and_weights(graph: GraphDir) -> None:
    clicks = graph.read_edges("user__clicks__item")
    assert clicks["ts"].dtype == np.int64 and clicks["weight"].dtype == np.float32
    assert clicks["ts"].min() >= TS_START and clicks["ts"].max() < TS_END
    # Spread over the window, more recent activity than old.
    assert clicks["ts"].max() - clicks["ts"].min() > 0.9 * (TS_END - TS_START)
    assert np.median(clicks["ts"]) > (TS_START + TS_END) / 2
    assert np.all(np.isfinite(clicks["weight"])) and clicks["weight"].min() >= 0.5


def test_node_features(graph: GraphDir) -> None:
    users = graph.read_nodes("user")
    assert users.column("raw_id")[3].as_py() == "u3"
    age = users.column("age")
    assert 0.02 < age.null_count / len(age) < 0.10
    assert set(age.drop_null().to_pylist()) <= set(range(8))
    items = graph.read_nodes("item")
    tags = items.column("tags")
    assert 0.02 < tags.null_count / len(tags) < 0.10
    lengths = [len(t) for t in tags.drop_null().to_pylist()]
    assert min(lengths) == 0 and max(lengths) == 5
    flat = np.concatenate([np.asarray(t, dtype=np.int64) for t in tags.drop_null().to_pylist() if t])
    assert flat.min() >= 0 and flat.max() < 1000
    assert items.column("price").null_count > 0


def test_user_activity_tracks_click_degree(graph: GraphDir) -> None:
    users = graph.read_nodes("user").to_pandas()
    degree = np.bincount(graph.read_edges("user__clicks__item")["src"], minlength=len(users))
    known = users["activity"].notna().to_numpy()
    corr = np.corrcoef(users["activity"].to_numpy()[known], np.log1p(degree[known]))[0, 1]
    assert corr > 0.3


def test_deterministic_by_seed(tmp_path) -> None:
    a = generate_synthetic(tmp_path / "a", 5_000, seed=3, chunk_edges=1_000)
    generate_synthetic(tmp_path / "b", 5_000, seed=3, chunk_edges=1_000)
    generate_synthetic(tmp_path / "c", 5_000, seed=4, chunk_edges=1_000)
    ga, gb, gc = (GraphDir(tmp_path / x, validate="none") for x in "abc")
    for e in a.edge_types:
        ea, eb, ec = ga.read_edges(e.key), gb.read_edges(e.key), gc.read_edges(e.key)
        for col in ea:
            assert ea[col].tobytes() == eb[col].tobytes(), (e.key, col)
        assert not np.array_equal(ea["dst"], ec["dst"]), e.key
    for n in a.node_types:
        assert ga.read_nodes(n.name).equals(gb.read_nodes(n.name))


def test_small_chunks_give_a_valid_graph(tmp_path) -> None:
    schema = generate_synthetic(tmp_path / "g", 10_000, seed=1, chunk_edges=1_000)
    gdir = GraphDir(tmp_path / "g", validate="full")
    assert schema.num_edges == gdir.schema.num_edges == 10_000
    assert {e.key: e.count for e in gdir.schema.edge_types} == SyntheticConfig(10_000).edge_counts()
    clicks = gdir.edge_files("user__clicks__item")
    assert sum(pq.ParquetFile(f).num_row_groups for f in clicks) == 7  # one per 1000-edge chunk
    user_rows = sum(pq.ParquetFile(f).num_row_groups for f in gdir.node_files("user"))
    assert user_rows == 1  # 500 users, one chunk


def test_progress_bar(tmp_path, capsys) -> None:
    generate_synthetic(tmp_path / "g", 2_000, progress=True)
    assert "2.00k/2.00k" in capsys.readouterr().err


def test_refuses_to_overwrite_and_leaves_no_temp(tmp_path) -> None:
    generate_synthetic(tmp_path / "g", 1_000)
    with pytest.raises(FileExistsError, match="already exists"):
        generate_synthetic(tmp_path / "g", 1_000)
    schema = generate_synthetic(tmp_path / "g", 2_000, overwrite=True)
    assert GraphDir(tmp_path / "g").schema.num_edges == schema.num_edges == 2_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_edges": 0}, "num_edges must be in .*got 0"),
        ({"num_edges": -5}, "num_edges .* got -5"),
        ({"num_edges": 2.5}, "num_edges must be an int, got 2.5"),
        ({"num_edges": True}, "num_edges must be an int"),
        ({"num_edges": 10**12}, "num_edges .* got 1000000000000"),
        ({"num_edges": 100, "chunk_edges": 0}, "chunk_edges must be >= 1, got 0"),
        ({"num_edges": 100, "seed": -1}, "seed must be >= 0, got -1"),
    ],
)
def test_bad_parameters(tmp_path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_synthetic(tmp_path / "g", **kwargs)
    assert not any(tmp_path.iterdir())


def test_zipf_ranks_in_range_and_skewed() -> None:
    rng = np.random.default_rng(0)
    for skew in (0.0, 0.5, 1.0, 1.5):
        r = zipf_ranks(rng, 50, skew, 20_000)
        assert r.dtype == np.int64 and r.min() >= 0 and r.max() < 50
    uniform = np.bincount(zipf_ranks(rng, 10, 0.0, 100_000), minlength=10) / 100_000
    assert np.allclose(uniform, 0.1, atol=0.01)
    counts = np.bincount(zipf_ranks(rng, 100, 1.2, 200_000), minlength=100)
    assert counts[0] > 5 * counts[20] > 0
    assert np.array_equal(zipf_ranks(rng, 1, 1.0, 10), np.zeros(10, dtype=np.int64))
