"""Full-mode validation: duplicate node ids, token ids out of range, non-finite floats, the mode itself."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from graphs.exceptions import GraphFormatError
from graphs.schema import EdgeType, FeatureSpec, GraphSchema, NodeType
from graphs.store import GraphDir, GraphWriter


def _token_graph(path, ids, tags):
    schema = GraphSchema((NodeType("item", 0, (FeatureSpec("tags", "token_list", cardinality=5),)),), ())
    with GraphWriter(path, schema) as w:
        w.write_nodes("item", {"id": ids, "raw_id": [str(i) for i in ids], "tags": tags})


def test_full_mode_finds_duplicate_node_id(tmp_path):
    _token_graph(tmp_path / "g", [0, 1, 2, 1], [[0], [1], [2], [3]])
    GraphDir(tmp_path / "g", validate="none")
    with pytest.raises(GraphFormatError, match=r"part-00000\.parquet: column 'id', row 3: duplicate node id 1"):
        GraphDir(tmp_path / "g", validate="full")


def test_full_mode_finds_token_out_of_range(tmp_path):
    _token_graph(tmp_path / "g", [0, 1, 2], [[0, 4], None, [1, 5]])
    with pytest.raises(GraphFormatError, match=r"column 'tags', row 2: token 5 outside \[0, 5\)"):
        GraphDir(tmp_path / "g", validate="full")


def test_unknown_validate_mode_is_rejected(tmp_path):
    _token_graph(tmp_path / "g", [0], [[0]])
    with pytest.raises(ValueError, match="validate must be 'none', 'fast' or 'full', got 'ful'"):
        GraphDir(tmp_path / "g", validate="ful")


# --- found by tests/graphs/test_loaders_fuzz.py ---------------------------------------------

def _feature_graph(path):
    """4 users with a dense scalar, a dense pair and tokens; 3 weighted self-edges."""
    schema = GraphSchema((NodeType("u", 0, (FeatureSpec("age", "dense"), FeatureSpec("vec", "dense", dim=2),
                                            FeatureSpec("tags", "token_list", cardinality=5))),),
                         (EdgeType("u", "r", "u", weight=True),))
    with GraphWriter(path, schema) as w:
        w.write_nodes("u", {"id": [0, 1, 2, 3], "raw_id": list("abcd"), "age": [1.0, None, 2.0, 3.0],
                            "vec": [[0.0, 1.0], None, [1.0, 2.0], [2.0, 3.0]], "tags": [[0], [1, 4], None, []]})
        w.write_edges("u__r__u", {"src": [0, 1, 2], "dst": [1, 2, 3], "weight": [0.5, 1.0, 2.0]})
    GraphDir(path, validate="full")


def _set(path, column, row, value):
    table = pq.read_table(path)
    cells = table.column(column).to_pylist()
    cells[row] = value
    i = table.schema.get_field_index(column)
    field = pa.field(column, table.field(i).type)             # nullable, so a null can be written
    pq.write_table(table.set_column(i, field, pa.array(cells, field.type)), path)


@pytest.mark.parametrize("part, column, row, value, says", [
    ("nodes/u", "age", 2, float("nan"), "column 'age', row 2: value nan is not finite"),
    ("nodes/u", "age", 3, float("-inf"), "column 'age', row 3: value -inf is not finite"),
    ("nodes/u", "vec", 3, [1.0, float("inf")], "column 'vec', row 3: value [1.0, inf] is not finite"),
    ("nodes/u", "tags", 1, [1, None], "column 'tags', row 1: token null outside [0, 5)"),
    ("edges/u__r__u", "weight", 1, None, "column 'weight', row 1: value is null"),
])
def test_full_mode_finds_nonfinite_and_null_values(tmp_path, part, column, row, value, says):
    _feature_graph(tmp_path / "g")
    path = tmp_path / "g" / part / "part-00000.parquet"
    _set(path, column, row, value)
    GraphDir(tmp_path / "g", validate="fast")               # parquet statistics cannot see these
    with pytest.raises(GraphFormatError, match="^" + re.escape(f"{path}: {says}")):
        GraphDir(tmp_path / "g", validate="full")


def test_corrupt_data_page_is_named(tmp_path):
    _feature_graph(tmp_path / "g")
    path = tmp_path / "g" / "edges" / "u__r__u" / "part-00000.parquet"
    data = bytearray(path.read_bytes())
    data[4:24] = b"\xff" * 20                                 # the first page header; the footer is intact
    path.write_bytes(bytes(data))
    with pytest.raises(GraphFormatError, match="^" + re.escape(f"{path}: truncated or corrupt parquet file")):
        GraphDir(tmp_path / "g", validate="full")


def test_huge_count_is_a_count_error_not_a_memory_error(tmp_path):
    _feature_graph(tmp_path / "g")
    doc = json.loads((tmp_path / "g" / "schema.json").read_text())
    doc["node_types"][0]["count"] = 10**30
    (tmp_path / "g" / "schema.json").write_text(json.dumps(doc))
    with pytest.raises(GraphFormatError, match="^" + re.escape(
            f"{tmp_path / 'g' / 'nodes' / 'u'}: 4 rows in 1 file(s), schema.json says count={10**30}")):
        GraphDir(tmp_path / "g", validate="full")
