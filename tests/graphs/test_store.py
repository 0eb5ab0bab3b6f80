"""GraphWriter / GraphDir: exact round trips, atomic replacement, and schema errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import random_graph

from graphs.exceptions import GraphFormatError
from graphs.schema import EdgeType, FeatureSpec, GraphSchema, NodeType
from graphs.store import GraphDir, GraphWriter

REPO = Path(__file__).resolve().parents[2]

FEATURES = (
    FeatureSpec("age", "dense"),
    FeatureSpec("emb", "dense", dim=3),
    FeatureSpec("gender", "categorical", cardinality=3),
    FeatureSpec("tags", "token_list", cardinality=50),
    FeatureSpec("bio", "text"),
)
SCHEMA = GraphSchema(
    (NodeType("user", 0, FEATURES), NodeType("item", 0)),
    (EdgeType("user", "rates", "item", ts=True, weight=True), EdgeType("item", "similar", "item"),
     EdgeType("item", "unused", "user")),
    name="tiny",
)
RATES, SIMILAR, UNUSED = "user__rates__item", "item__similar__item", "item__unused__user"


def hidden_siblings(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.tmp-*"))


def user_batch(ids: list[int], rng: np.random.Generator) -> dict:
    n = len(ids)
    gender = [None if i % 3 == 0 else int(rng.integers(0, 3)) for i in ids]
    return {
        "id": np.array(ids, dtype=np.int64),
        "raw_id": [f"u{i}" for i in ids],
        "age": rng.random(n).astype(np.float32),
        "emb": rng.random((n, 3)).astype(np.float32).tolist(),
        "gender": pa.array(gender, pa.int64()),
        "tags": [rng.integers(0, 50, int(rng.integers(0, 4))).tolist() for _ in ids],
        "bio": [None if i % 4 == 1 else f"bio of {i} \u00e9" for i in ids],
    }


@pytest.fixture
def written(tmp_path):
    """A graph written in several batches; returns (path, what was written, close() result)."""
    rng = np.random.default_rng(7)
    # ids are written out of order across batches: read_nodes must sort them back
    user_batches = [user_batch(ids, rng) for ids in ([4, 0, 2], [1], [6, 5, 3])]
    rates = [{"src": rng.integers(0, 7, m), "dst": rng.integers(0, 5, m),
              "ts": rng.integers(0, 2**40, m), "weight": rng.random(m).astype(np.float32)}
             for m in (10, 1, 25)]
    similar = [{"src": rng.integers(0, 5, m), "dst": rng.integers(0, 5, m)} for m in (3, 4)]
    out = tmp_path / "g"
    with GraphWriter(out, SCHEMA) as w:
        w.write_nodes("user", user_batches[0])
        w.write_edges(RATES, rates[0])
        w.write_nodes("item", {"id": np.arange(5), "raw_id": [f"i{i}" for i in range(5)]})
        w.write_nodes("user", user_batches[1])
        w.write_edges(SIMILAR, similar[0])
        w.write_edges(RATES, rates[1])
        w.write_nodes("user", user_batches[2])
        w.write_edges(RATES, rates[2])
        w.write_edges(SIMILAR, similar[1])
    return out, user_batches, rates, similar, w


def test_round_trip_counts_and_schema_json(written):
    out, _, _, _, _ = written
    g = GraphDir(out, validate="full")
    assert g.schema.node_type("user").count == 7
    assert g.schema.node_type("item").count == 5
    assert g.schema.edge_type(RATES).count == 36
    assert g.schema.edge_type(SIMILAR).count == 7
    assert g.schema.edge_type(UNUSED).count == 0
    assert g.schema.offsets == {"user": 0, "item": 7}
    assert g.schema.node_type("user").features == FEATURES
    doc = json.loads((out / "schema.json").read_text())
    assert doc == {
        "format": "hetrec-graph", "version": 1, "name": "tiny",
        "node_types": [
            {"name": "user", "count": 7, "features": [
                {"name": "age", "kind": "dense", "dim": 1},
                {"name": "emb", "kind": "dense", "dim": 3},
                {"name": "gender", "kind": "categorical", "cardinality": 3},
                {"name": "tags", "kind": "token_list", "cardinality": 50},
                {"name": "bio", "kind": "text"},
            ]},
            {"name": "item", "count": 5, "features": []},
        ],
        "edge_types": [
            {"src": "user", "rel": "rates", "dst": "item", "count": 36, "ts": True, "weight": True},
            {"src": "item", "rel": "similar", "dst": "item", "count": 7, "ts": False, "weight": False},
            {"src": "item", "rel": "unused", "dst": "user", "count": 0, "ts": False, "weight": False},
        ],
    }
    assert sorted(p.name for p in out.iterdir()) == ["edges", "nodes", "schema.json"]
    assert sorted(p.name for p in (out / "edges").iterdir()) == sorted([RATES, SIMILAR])
    assert hidden_siblings(out) == []
    assert list(out.glob("**/.*")) == []


def test_close_returns_schema_with_counts(tmp_path):
    w = GraphWriter(tmp_path / "g", SCHEMA)
    w.write_nodes("item", {"id": np.arange(3), "raw_id": list("abc")})
    w.write_edges(SIMILAR, {"src": [0, 1], "dst": [2, 2]})
    final = w.close()
    assert final == GraphDir(tmp_path / "g", validate="full").schema
    assert [n.count for n in final.node_types] == [0, 3]
    assert [e.count for e in final.edge_types] == [0, 2, 0]


def test_round_trip_nodes_exact(written):
    out, user_batches, _, _, _ = written
    g = GraphDir(out, validate="full")
    users = g.read_nodes("user")
    assert users.schema == NodeType("user", 7, FEATURES).arrow_schema()
    rows = sorted((row for b in user_batches for row in zip(*[
        b["id"].tolist(), b["raw_id"], b["age"].tolist(), b["emb"], b["gender"].to_pylist(),
        b["tags"], b["bio"]])), key=lambda r: r[0])
    assert users.column("id").to_pylist() == list(range(7))
    assert users.column("raw_id").to_pylist() == [r[1] for r in rows]
    # float32 in, float32 out: compare bit-exactly
    np.testing.assert_array_equal(users.column("age").to_numpy(),
                                  np.array([r[2] for r in rows], dtype=np.float32))
    assert users.column("emb").type == pa.list_(pa.float32(), 3)
    np.testing.assert_array_equal(np.array(users.column("emb").to_pylist(), dtype=np.float32),
                                  np.array([r[3] for r in rows], dtype=np.float32))
    assert users.column("gender").to_pylist() == [r[4] for r in rows]
    assert users.column("gender").null_count == 3  # ids 0, 3, 6
    assert users.column("tags").to_pylist() == [r[5] for r in rows]
    assert users.column("bio").to_pylist() == [r[6] for r in rows]
    assert users.column("bio").to_pylist()[1] is None
    items = g.read_nodes("item")
    assert items.column("id").to_pylist() == list(range(5))
    assert items.column("raw_id").to_pylist() == [f"i{i}" for i in range(5)]
    assert g.read_nodes("user", columns=["id", "gender"]).column_names == ["id", "gender"]


def test_round_trip_edges_exact(written):
    out, _, rates, similar, _ = written
    g = GraphDir(out, validate="full")
    got = g.read_edges(RATES)
    assert list(got) == ["src", "dst", "ts", "weight"]
    for col, dtype in (("src", np.int64), ("dst", np.int64), ("ts", np.int64), ("weight", np.float32)):
        assert got[col].dtype == dtype
        np.testing.assert_array_equal(got[col], np.concatenate([b[col] for b in rates]))
    got = g.read_edges(SIMILAR)
    assert list(got) == ["src", "dst"]
    np.testing.assert_array_equal(got["src"], np.concatenate([b["src"] for b in similar]))
    np.testing.assert_array_equal(got["dst"], np.concatenate([b["dst"] for b in similar]))
    empty = g.read_edges(UNUSED)
    assert list(empty) == ["src", "dst"] and empty["src"].shape == (0,) and empty["src"].dtype == np.int64
    batches = list(g.iter_edges(RATES, batch_rows=8))
    assert [len(b["src"]) for b in batches] == [8, 8, 8, 8, 4]
    np.testing.assert_array_equal(np.concatenate([b["ts"] for b in batches]),
                                  np.concatenate([b["ts"] for b in rates]))


def test_random_graph_helper_round_trips(tmp_path):
    counts = {"a": 9, "b": 4}
    edges = {("a", "to", "b", True, False): 40, ("b", "back", "a", False, True): 0}
    schema, data = random_graph(tmp_path / "g", 3, counts, edges)
    g = GraphDir(tmp_path / "g", validate="full")
    assert g.schema == schema
    for col in ("src", "dst", "ts"):
        np.testing.assert_array_equal(g.read_edges("a__to__b")[col], data["a__to__b"][col])


# --- atomicity ---------------------------------------------------------------------------

def test_exception_inside_writer_leaves_nothing(tmp_path):
    out = tmp_path / "g"
    with pytest.raises(RuntimeError, match="boom"):
        with GraphWriter(out, SCHEMA) as w:
            w.write_nodes("item", {"id": np.arange(5), "raw_id": list("abcde")})
            w.write_edges(SIMILAR, {"src": [0, 1], "dst": [2, 3]})
            assert hidden_siblings(out)  # really writing somewhere before the failure
            raise RuntimeError("boom")
    assert not out.exists()
    assert hidden_siblings(out) == []
    assert list(tmp_path.iterdir()) == []


def test_format_error_inside_writer_leaves_nothing(tmp_path):
    out = tmp_path / "g"
    with pytest.raises(GraphFormatError):
        with GraphWriter(out, SCHEMA) as w:
            w.write_nodes("item", {"id": np.arange(5), "raw_id": list("abcde")})
            w.write_edges(SIMILAR, {"src": ["x"], "dst": [0]})
    assert list(tmp_path.iterdir()) == []


def test_existing_output_without_overwrite(written):
    out = written[0]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(FileExistsError, match=re.escape(f"{out} already exists")):
        GraphWriter(out, SCHEMA)
    assert hidden_siblings(out) == []
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_overwrite_replaces_old_content(written):
    out = written[0]
    small = GraphSchema((NodeType("item", 0),), (EdgeType("item", "similar", "item"),))
    with GraphWriter(out, small, overwrite=True) as w:
        w.write_nodes("item", {"id": [0, 1], "raw_id": ["x", "y"]})
        w.write_edges(SIMILAR, {"src": [1], "dst": [0]})
    g = GraphDir(out, validate="full")
    assert [n.name for n in g.schema.node_types] == ["item"]
    assert not (out / "nodes" / "user").exists()
    assert not (out / "edges" / RATES).exists()
    assert g.read_nodes("item").column("raw_id").to_pylist() == ["x", "y"]
    assert g.read_edges(SIMILAR)["src"].tolist() == [1]
    assert hidden_siblings(out) == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["g"]


KILLED_WRITER = """
import os, sys
import numpy as np
from graphs.schema import EdgeType, GraphSchema, NodeType
from graphs.store import GraphWriter
schema = GraphSchema((NodeType("item", 0),), (EdgeType("item", "similar", "item"),))
w = GraphWriter(sys.argv[1], schema, overwrite=True)
w.write_nodes("item", {"id": np.arange(3), "raw_id": ["p", "q", "r"]})
for _ in range(3):
    w.write_edges("item__similar__item", {"src": np.zeros(1000, np.int64), "dst": np.ones(1000, np.int64)})
print("wrote batches", flush=True)
os._exit(1)
"""


def run_killed_writer(out: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_WRITER), str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "wrote batches" in proc.stdout


def test_killed_writer_keeps_previous_version(written):
    out, user_batches, rates, similar, _ = written
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    run_killed_writer(out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    g = GraphDir(out, validate="full")
    assert g.schema.edge_type(SIMILAR).count == 7
    np.testing.assert_array_equal(g.read_edges(RATES)["ts"], np.concatenate([b["ts"] for b in rates]))
    assert g.read_nodes("user").column("raw_id").to_pylist() == [f"u{i}" for i in range(7)]
    # the dead writer's partial output stays in its hidden sibling, never in the graph
    leftovers = hidden_siblings(out)
    assert len(leftovers) == 1
    assert (leftovers[0] / "nodes" / "item" / "part-00000.parquet").exists()
    assert not (leftovers[0] / "schema.json").exists()


def test_killed_writer_leaves_no_final_folder(tmp_path):
    out = tmp_path / "new"
    run_killed_writer(out)
    assert not out.exists()
    assert len(hidden_siblings(out)) == 1
    with pytest.raises(GraphFormatError, match=re.escape(f"{out}: not a directory")):
        GraphDir(out)


# --- writer type errors ----------------------------------------------------------------

@pytest.fixture
def writer(tmp_path):
    w = GraphWriter(tmp_path / "g", SCHEMA)
    yield w
    w.abort()


def test_uncastable_column_names_edge_type(writer):
    with pytest.raises(GraphFormatError, match=r"^edges 'user__rates__item': cannot store columns as .*src"):
        writer.write_edges(RATES, {"src": ["a", "b"], "dst": [0, 1], "ts": [1, 2], "weight": [0.5, 1.0]})


def test_uncastable_node_feature_names_node_type(writer):
    with pytest.raises(GraphFormatError, match=r"^nodes 'item': cannot store columns"):
        writer.write_nodes("item", {"id": ["zero"], "raw_id": ["x"]})


def test_null_in_edge_column_names_edge_type(writer):
    # regression: pyarrow raised a bare ValueError that did not say which edge type
    with pytest.raises(GraphFormatError, match=r"^edges 'item__similar__item': cannot store columns.*null"):
        writer.write_edges(SIMILAR, {"src": pa.array([0, None], pa.int64()), "dst": [1, 1]})


def test_missing_columns_listed(writer):
    with pytest.raises(GraphFormatError, match=re.escape(
            "edges 'user__rates__item': missing columns ['ts', 'weight']; "
            "expected ['src', 'dst', 'ts', 'weight']")):
        writer.write_edges(RATES, {"src": [0], "dst": [0]})
    with pytest.raises(GraphFormatError, match=re.escape("nodes 'user': missing columns ['raw_id', 'bio']")):
        writer.write_nodes("user", {k: v for k, v in user_batch([0], np.random.default_rng(0)).items()
                                    if k not in ("raw_id", "bio")})


def test_unknown_types_in_writer(writer):
    with pytest.raises(GraphFormatError, match=r"unknown edge type 'user__likes__item'"):
        writer.write_edges("user__likes__item", {"src": [0], "dst": [0]})
    with pytest.raises(GraphFormatError, match=r"unknown node type 'movie'"):
        writer.write_nodes("movie", {"id": [0], "raw_id": ["m"]})
