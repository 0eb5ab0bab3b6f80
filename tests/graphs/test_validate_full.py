"""Full-mode validation: duplicate node ids, token ids out of range, the mode itself."""

from __future__ import annotations

import pytest

from graphs.exceptions import GraphFormatError
from graphs.schema import FeatureSpec, GraphSchema, NodeType
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
