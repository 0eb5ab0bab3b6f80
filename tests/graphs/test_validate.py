"""validate_graph on deliberately broken graph directories: every error names file, column, row."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphs.exceptions import GraphFormatError
from graphs.schema import EdgeType, FeatureSpec, GraphSchema, NodeType
from graphs.store import GraphDir, GraphWriter

RATES, SIMILAR = "user__rates__item", "item__similar__item"
SCHEMA = GraphSchema(
    (NodeType("user", 0, (FeatureSpec("gender", "categorical", cardinality=3), FeatureSpec("age", "dense"))),
     NodeType("item", 0)),
    (EdgeType("user", "rates", "item", ts=True, weight=True), EdgeType("item", "similar", "item")),
)
N_USER, N_ITEM, N_RATES = 20, 8, 30
MODES = ["fast", "full"]


@pytest.fixture
def graph(tmp_path) -> Path:
    """A valid graph: 20 users (categorical with nulls), 8 items, 30 rates edges, 6 similar edges."""
    rng = np.random.default_rng(1)
    out = tmp_path / "g"
    with GraphWriter(out, SCHEMA) as w:
        w.write_nodes("user", {"id": np.arange(N_USER), "raw_id": [f"u{i}" for i in range(N_USER)],
                               "gender": pa.array([None if i % 5 == 0 else i % 3 for i in range(N_USER)],
                                                  pa.int64()),
                               "age": rng.random(N_USER).astype(np.float32)})
        w.write_nodes("item", {"id": np.arange(N_ITEM), "raw_id": [f"i{i}" for i in range(N_ITEM)]})
        w.write_edges(RATES, {"src": rng.integers(0, N_USER, N_RATES), "dst": rng.integers(0, N_ITEM, N_RATES),
                              "ts": rng.integers(0, 10**9, N_RATES),
                              "weight": rng.random(N_RATES).astype(np.float32)})
        w.write_edges(SIMILAR, {"src": [0, 1, 2, 3, 4, 5], "dst": [7, 6, 5, 4, 3, 2]})
    GraphDir(out, validate="full")  # the starting point is valid
    return out


def edge_file(g: Path, key: str = RATES) -> Path:
    return g / "edges" / key / "part-00000.parquet"


def node_file(g: Path, ntype: str = "user") -> Path:
    return g / "nodes" / ntype / "part-00000.parquet"


def set_value(path: Path, column: str, row: int, value, type_=None, **write_kw) -> None:
    """Rewrite ``path`` with one value changed; small row groups so the row lies past the first."""
    table = pq.read_table(path)
    i = table.schema.get_field_index(column)
    values = table.column(column).to_pylist()
    values[row] = value
    table = table.set_column(i, pa.field(column, type_ or table.schema.field(column).type),
                             pa.array(values, type_ or table.schema.field(column).type))
    pq.write_table(table, path, row_group_size=write_kw.pop("row_group_size", 7), **write_kw)


def fails(g: Path, *parts: str, mode: str = "fast") -> str:
    """Open ``g`` and expect a GraphFormatError whose message starts with parts[0] and holds the rest, in order."""
    pattern = "^" + ".*".join(re.escape(p) for p in parts)
    with pytest.raises(GraphFormatError, match=pattern) as err:
        GraphDir(g, validate=mode)
    return str(err.value)


def test_valid_graph_passes_every_mode(graph):
    for mode in ("none", "fast", "full"):
        assert GraphDir(graph, validate=mode).schema.edge_type(RATES).count == N_RATES


# --- columns and types -------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_missing_column(graph, mode):
    path = edge_file(graph)
    pq.write_table(pq.read_table(path).drop_columns(["ts"]), path)
    fails(graph, f"{path}: missing column(s) ['ts']; expected ['src', 'dst', 'ts', 'weight']", mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_extra_column(graph, mode):
    path = node_file(graph)
    table = pq.read_table(path)
    pq.write_table(table.append_column("zip", pa.array(["x"] * N_USER)), path)
    fails(graph, f"{path}: unexpected column(s) ['zip']", mode=mode)


@pytest.mark.parametrize("column, type_, arrow_name", [
    ("ts", pa.float64(), "double"), ("src", pa.int32(), "int32"), ("weight", pa.float64(), "double"),
    ("dst", pa.string(), "string"),
])
def test_wrong_dtype(graph, column, type_, arrow_name):
    path = edge_file(graph)
    table = pq.read_table(path)
    i = table.schema.get_field_index(column)
    pq.write_table(table.set_column(i, column, table.column(column).cast(type_)), path)
    expected = "float" if column == "weight" else "int64"
    msg = fails(graph, f"{path}: column {column!r} has type {arrow_name}, expected {expected}")
    assert "NaN" not in msg


def test_wrong_node_feature_dtype(graph):
    path = node_file(graph)
    table = pq.read_table(path)
    i = table.schema.get_field_index("age")
    pq.write_table(table.set_column(i, "age", table.column("age").cast(pa.float64())), path)
    fails(graph, f"{path}: column 'age' has type double, expected float")


@pytest.mark.parametrize("mode", MODES)
def test_float_ts_with_nan_names_row(graph, mode):
    path = edge_file(graph)
    set_value(path, "ts", 17, float("nan"), type_=pa.float64())
    fails(graph, f"{path}: column 'ts' has type double, expected int64; NaN timestamp at row 17", mode=mode)


# --- values --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_negative_timestamp(graph, mode):
    path = edge_file(graph)
    set_value(path, "ts", 23, -5)
    fails(graph, f"{path}: column 'ts', row 23: value = -5, outside [0, inf)", mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_null_in_src(graph, mode):
    path = edge_file(graph)
    set_value(path, "src", 9, None)
    fails(graph, f"{path}: column 'src', row 9: value is null (node type 'user' has 20 nodes)", mode=mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("column, row, value, ntype, count", [
    ("src", 12, 20, "user", N_USER), ("src", 29, -1, "user", N_USER),
    ("dst", 0, 8, "item", N_ITEM), ("dst", 15, 10**12, "item", N_ITEM),
])
def test_edge_id_out_of_range(graph, mode, column, row, value, ntype, count):
    path = edge_file(graph)
    set_value(path, column, row, value)
    fails(graph, f"{path}: column {column!r}, row {row}: value = {value}, outside [0, {count}) "
                 f"(node type {ntype!r} has {count} nodes)", mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_first_bad_row_is_named(graph, mode):
    path = edge_file(graph)
    table = pq.read_table(path)
    dst = table.column("dst").to_numpy().copy()
    dst[[11, 25]] = [100, -3]
    pq.write_table(table.set_column(1, "dst", pa.array(dst)), path, row_group_size=4)
    fails(graph, f"{path}: column 'dst', row 11: value = 100", mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_self_edge_type_dst_out_of_range(graph, mode):
    path = edge_file(graph, SIMILAR)
    set_value(path, "dst", 5, 8, row_group_size=2)
    fails(graph, f"{path}: column 'dst', row 5: value = 8, outside [0, 8) (node type 'item' has 8 nodes)",
          mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_node_id_out_of_range(graph, mode):
    path = node_file(graph, "user")
    set_value(path, "id", 19, 20)
    fails(graph, f"{path}: column 'id', row 19: value = 20, outside [0, 20) (node type 'user' has 20 nodes)",
          mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_categorical_code_out_of_range(graph, mode):
    path = node_file(graph)
    set_value(path, "gender", 8, 3)
    fails(graph, f"{path}: column 'gender', row 8: value = 3, outside [0, 3) (categorical feature, cardinality 3)",
          mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_categorical_nulls_are_allowed(graph, mode):
    path = node_file(graph)
    set_value(path, "gender", 8, None)
    assert GraphDir(graph, validate=mode).read_nodes("user").column("gender").null_count == 5


# --- counts --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_node_rows_differ_from_schema_count(graph, mode):
    path = node_file(graph, "item")
    pq.write_table(pq.read_table(path).slice(0, 7), path)
    fails(graph, f"{graph / 'nodes' / 'item'}: 7 rows in 1 file(s), schema.json says count=8", mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_edge_rows_differ_from_schema_count(graph, mode):
    doc = json.loads((graph / "schema.json").read_text())
    doc["edge_types"][0]["count"] = 31
    (graph / "schema.json").write_text(json.dumps(doc))
    fails(graph, f"{graph / 'edges' / RATES}: 30 rows in 1 file(s), schema.json says count=31", mode=mode)


def test_extra_part_file_counts(graph):
    pq.write_table(pq.read_table(edge_file(graph, SIMILAR)), graph / "edges" / SIMILAR / "part-00001.parquet")
    fails(graph, f"{graph / 'edges' / SIMILAR}: 12 rows in 2 file(s), schema.json says count=6")


def test_missing_part_files(graph):
    edge_file(graph, SIMILAR).unlink()
    fails(graph, f"{graph / 'edges' / SIMILAR}: 0 rows in 0 file(s), schema.json says count=6")


# --- broken files and folders --------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_empty_file(graph, mode):
    path = edge_file(graph)
    path.write_bytes(b"")
    fails(graph, f"{path}: empty file (0 bytes), not a parquet file", mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_truncated_file(graph, mode):
    path = node_file(graph)
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    fails(graph, f"{path}: truncated or corrupt parquet file", mode=mode)


def test_not_parquet(graph):
    path = edge_file(graph, SIMILAR)
    path.write_text("src,dst\n0,1\n" * 20)
    fails(graph, f"{path}: truncated or corrupt parquet file")


@pytest.mark.parametrize("mode", MODES)
def test_folder_for_unknown_edge_type(graph, mode):
    stray = graph / "edges" / "user__likes__item"
    stray.mkdir()
    pq.write_table(pq.read_table(edge_file(graph, SIMILAR)), stray / "part-00000.parquet")
    fails(graph, f"{stray}: folder for unknown edge type 'user__likes__item'; "
                 f"schema.json knows ['{RATES}', '{SIMILAR}']", mode=mode)


def test_folder_for_unknown_node_type(graph):
    (graph / "nodes" / "movie").mkdir()
    fails(graph, f"{graph / 'nodes' / 'movie'}: folder for unknown node type 'movie'")


def test_hidden_folders_are_ignored(graph):
    (graph / "edges" / ".scratch").mkdir()
    GraphDir(graph, validate="full")


def test_schema_edge_type_names_unknown_node_type(graph):
    doc = json.loads((graph / "schema.json").read_text())
    doc["edge_types"][1]["dst"] = "movie"
    (graph / "schema.json").write_text(json.dumps(doc))
    fails(graph, f"{graph / 'schema.json'}: edge type item__similar__movie names unknown node type 'movie'; "
                 "known: ['user', 'item']", mode="none")


# --- statistics-free files -----------------------------------------------------------------

@pytest.mark.parametrize("column, row, value", [("src", 21, 25), ("dst", 3, -2), ("ts", 14, -1)])
def test_fast_mode_scans_files_without_statistics(graph, column, row, value):
    path = edge_file(graph)
    set_value(path, column, row, value, write_statistics=False)
    rg = pq.ParquetFile(path).metadata.row_group(0)
    assert all(rg.column(c).statistics is None for c in range(rg.num_columns))
    fails(graph, f"{path}: column {column!r}, row {row}: value = {value}", mode="fast")


def test_fast_mode_scans_node_file_without_statistics(graph):
    path = node_file(graph)
    set_value(path, "gender", 16, 7, write_statistics=False)
    fails(graph, f"{path}: column 'gender', row 16: value = 7", mode="fast")


def test_statistics_free_valid_file_passes(graph):
    path = edge_file(graph)
    pq.write_table(pq.read_table(path), path, write_statistics=False, row_group_size=4)
    GraphDir(graph, validate="fast")


def test_full_mode_checks_weights(graph):
    path = edge_file(graph)
    set_value(path, "weight", 26, float("nan"))
    GraphDir(graph, validate="fast")  # parquet statistics skip NaN: fast mode cannot see it
    fails(graph, f"{path}: column 'weight', row 26: value nan is not finite", mode="full")


# --- property-based --------------------------------------------------------------------------

@st.composite
def graphs(draw):
    """A valid random graph: ``(schema, node counts, {ekey: [batches of column arrays]})``."""
    counts = {"a": draw(st.integers(1, 30)), "b": draw(st.integers(1, 30))}
    edge_types = [EdgeType("a", "x", "b", ts=draw(st.booleans()), weight=draw(st.booleans())),
                  EdgeType("b", "y", "b", ts=draw(st.booleans()))]
    data = {}
    for e in edge_types:
        batches = []
        for m in draw(st.lists(st.integers(0, 25), max_size=3)):
            cols = {"src": np.array(draw(st.lists(st.integers(0, counts[e.src] - 1), min_size=m, max_size=m)),
                                    dtype=np.int64),
                    "dst": np.array(draw(st.lists(st.integers(0, counts[e.dst] - 1), min_size=m, max_size=m)),
                                    dtype=np.int64)}
            if e.ts:
                cols["ts"] = np.array(draw(st.lists(st.integers(0, 2**62), min_size=m, max_size=m)),
                                      dtype=np.int64)
            if e.weight:
                cols["weight"] = np.array(draw(st.lists(
                    st.floats(-1e6, 1e6, width=32), min_size=m, max_size=m)), dtype=np.float32)
            batches.append(cols)
        data[e.key] = batches
    schema = GraphSchema((NodeType("a", 0), NodeType("b", 0)), tuple(edge_types))
    return schema, counts, data


def write_graph(out: Path, schema: GraphSchema, counts: dict, data: dict) -> None:
    with GraphWriter(out, schema) as w:
        for n, c in counts.items():
            w.write_nodes(n, {"id": np.arange(c), "raw_id": [f"{n}{i}" for i in range(c)]})
        for key, batches in data.items():
            for cols in batches:
                w.write_edges(key, cols)


@settings(max_examples=30, deadline=None)
@given(g=graphs(), mode=st.sampled_from(MODES))
def test_random_valid_graphs_round_trip(g, mode):
    schema, counts, data = g
    with tempfile.TemporaryDirectory() as tmp:
        write_graph(Path(tmp) / "g", schema, counts, data)
        gdir = GraphDir(Path(tmp) / "g", validate=mode)
        assert [n.count for n in gdir.schema.node_types] == [counts["a"], counts["b"]]
        for e in schema.edge_types:
            got = gdir.read_edges(e.key)
            assert list(got) == e.arrow_schema().names
            assert gdir.schema.edge_type(e.key).count == sum(len(b["src"]) for b in data[e.key])
            for col in got:
                want = np.concatenate([b[col] for b in data[e.key]]) if data[e.key] else np.empty(0)
                assert got[col].dtype == (np.float32 if col == "weight" else np.int64)
                np.testing.assert_array_equal(got[col], want)


@settings(max_examples=30, deadline=None)
@given(g=graphs(), pick=st.data(), mode=st.sampled_from(MODES), stats=st.booleans(),
       row_group_size=st.integers(1, 40))
def test_random_out_of_range_id_names_its_row(g, pick, mode, stats, row_group_size):
    schema, counts, data = g
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "g"
        write_graph(out, schema, counts, data)
        targets = [("nodes/a", "id", "a"), ("nodes/b", "id", "b")]
        for e in schema.edge_types:
            if sum(len(b["src"]) for b in data[e.key]):
                targets += [(f"edges/{e.key}", "src", e.src), (f"edges/{e.key}", "dst", e.dst)]
        folder, column, ntype = pick.draw(st.sampled_from(targets))
        count = counts[ntype]
        path = out / folder / "part-00000.parquet"
        table = pq.read_table(path)
        row = pick.draw(st.integers(0, table.num_rows - 1))
        value = pick.draw(st.one_of(st.integers(count, 2**62), st.integers(-(2**62), -1)))
        values = table.column(column).to_numpy().copy()
        values[row] = value
        table = table.set_column(table.schema.get_field_index(column), column, pa.array(values))
        pq.write_table(table, path, row_group_size=row_group_size, write_statistics=stats)
        with pytest.raises(GraphFormatError) as err:
            GraphDir(out, validate=mode)
        assert str(err.value) == (f"{path}: column {column!r}, row {row}: value = {value}, "
                                  f"outside [0, {count}) (node type {ntype!r} has {count} nodes)")
