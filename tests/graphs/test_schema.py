"""GraphSchema: name and type checks, and schema.json parsing errors that name the file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_store import SCHEMA

from graphs.exceptions import GraphFormatError
from graphs.schema import EdgeType, FeatureSpec, GraphSchema, NodeType
from graphs.store import GraphDir

# --- schema ----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["a__b", "", "-x", "_x", "a b", "é"])
def test_invalid_names(bad):
    msg = re.escape(repr(bad)) + " is not a valid name"
    with pytest.raises(GraphFormatError, match="node type " + msg):
        NodeType(bad, 1)
    with pytest.raises(GraphFormatError, match="feature " + msg):
        FeatureSpec(bad, "dense")
    with pytest.raises(GraphFormatError, match="relation " + msg):
        EdgeType("a", bad, "b")


def test_reserved_feature_names():
    for name in ("id", "raw_id"):
        with pytest.raises(GraphFormatError, match=f"feature name '{name}' is reserved"):
            FeatureSpec(name, "text")


def test_unknown_feature_kind():
    with pytest.raises(GraphFormatError, match=r"feature 'f': kind 'sparse' is not one of \('dense'"):
        FeatureSpec("f", "sparse")


@pytest.mark.parametrize("kind", ["categorical", "token_list"])
def test_categorical_needs_cardinality(kind):
    with pytest.raises(GraphFormatError, match=f"feature 'c': a {kind} feature needs cardinality >= 1, got 0"):
        FeatureSpec("c", kind)


def test_bad_dim_and_count():
    with pytest.raises(GraphFormatError, match="feature 'd': dim must be >= 1, got 0"):
        FeatureSpec("d", "dense", dim=0)
    with pytest.raises(GraphFormatError, match="node type 'n': count must be an int >= 0, got -1"):
        NodeType("n", -1)
    with pytest.raises(GraphFormatError, match="edge type a__r__b: count must be an int >= 0, got 2.0"):
        EdgeType("a", "r", "b", count=2.0)


def test_edge_type_naming_unknown_node_type():
    with pytest.raises(GraphFormatError, match=re.escape(
            "edge type user__rates__movie names unknown node type 'movie'; known: ['user']")):
        GraphSchema((NodeType("user", 1),), (EdgeType("user", "rates", "movie"),))


def test_duplicate_types():
    with pytest.raises(GraphFormatError, match=re.escape("duplicate node type names in ['a', 'b', 'a']")):
        GraphSchema((NodeType("a", 1), NodeType("b", 1), NodeType("a", 2)), ())
    with pytest.raises(GraphFormatError, match=re.escape("duplicate edge types in ['a__r__a', 'a__r__a']")):
        GraphSchema((NodeType("a", 1),), (EdgeType("a", "r", "a"), EdgeType("a", "r", "a", ts=True)))
    with pytest.raises(GraphFormatError, match=re.escape("node type 'a': duplicate feature names in ['f', 'f']")):
        NodeType("a", 1, (FeatureSpec("f", "dense"), FeatureSpec("f", "text")))


def test_schema_json_round_trip():
    assert GraphSchema.from_json(SCHEMA.to_json()) == SCHEMA


def write_schema_json(tmp_path: Path, text: str) -> Path:
    g = tmp_path / "g"
    g.mkdir()
    (g / "schema.json").write_text(text)
    return g


@pytest.mark.parametrize("change, message", [
    ({"format": "other"}, "field 'format' is 'other', expected 'hetrec-graph'"),
    ({"version": 2}, "field 'version' is 2, expected 1"),
    ({"version": None}, "field 'version' is None, expected 1"),
])
def test_schema_json_wrong_format_or_version(tmp_path, change, message):
    g = write_schema_json(tmp_path, json.dumps({**SCHEMA.to_json(), **change}))
    with pytest.raises(GraphFormatError, match="^" + re.escape(f"{g / 'schema.json'}: {message}")):
        GraphDir(g)


def test_schema_json_not_json(tmp_path):
    g = write_schema_json(tmp_path, '{"format": "hetrec-graph", ')
    with pytest.raises(GraphFormatError, match="^" + re.escape(f"{g / 'schema.json'}: not valid JSON")):
        GraphDir(g)


@pytest.mark.parametrize("drop, key", [("node_types", "node_types"), ("edge_types", "edge_types")])
def test_schema_json_missing_key(tmp_path, drop, key):
    doc = SCHEMA.to_json()
    del doc[drop]
    g = write_schema_json(tmp_path, json.dumps(doc))
    with pytest.raises(GraphFormatError, match="^" + re.escape(
            f"{g / 'schema.json'}: malformed schema (KeyError: '{key}')")):
        GraphDir(g)


def test_schema_json_malformed_entries(tmp_path):
    doc = SCHEMA.to_json()
    del doc["node_types"][1]["count"]
    g = write_schema_json(tmp_path, json.dumps(doc))
    with pytest.raises(GraphFormatError, match=re.escape(f"{g / 'schema.json'}: malformed schema (KeyError: 'count')")):
        GraphDir(g)
    doc = SCHEMA.to_json()
    doc["node_types"][0]["features"][0]["unit"] = "years"
    (g / "schema.json").write_text(json.dumps(doc))
    with pytest.raises(GraphFormatError, match=re.escape(f"{g / 'schema.json'}: malformed schema (TypeError:")):
        GraphDir(g)
    (g / "schema.json").write_text("[1, 2]")
    with pytest.raises(GraphFormatError, match=re.escape(f"{g / 'schema.json'}: malformed schema (AttributeError:")):
        GraphDir(g)
    doc = SCHEMA.to_json()
    doc["node_types"][0]["features"][2]["kind"] = "enum"
    (g / "schema.json").write_text(json.dumps(doc))
    with pytest.raises(GraphFormatError, match=re.escape(
            f"{g / 'schema.json'}: feature 'gender': kind 'enum' is not one of")):
        GraphDir(g)


def test_missing_schema_json(tmp_path):
    (tmp_path / "g").mkdir()
    with pytest.raises(GraphFormatError, match=re.escape(f"{tmp_path / 'g' / 'schema.json'}: not found")):
        GraphDir(tmp_path / "g")


# Found by tests/graphs/test_loaders_fuzz.py: wrong JSON types that used to be accepted
# (a float dim crashed validation later with a TypeError; "ts": "no" read as True).
@pytest.mark.parametrize("path, value, message", [
    (("name",), 5, "field 'name' must be a string, got 5"),
    (("node_types", 0, "count"), True, "node type 'a': count must be an int >= 0, got True"),
    (("node_types", 0, "features", 0, "dim"), 2.0, "feature 'v': dim must be an int, got 2.0"),
    (("node_types", 0, "features", 0, "dim"), None, "feature 'v': dim must be an int, got None"),
    (("node_types", 0, "features", 1, "cardinality"), "3", "feature 'c': cardinality must be an int, got '3'"),
    (("edge_types", 0, "ts"), "no", "edge type a__r__a: ts must be true or false, got 'no'"),
    (("edge_types", 0, "weight"), 1, "edge type a__r__a: weight must be true or false, got 1"),
])
def test_schema_json_wrong_types(path, value, message):
    doc = {"format": "hetrec-graph", "version": 1, "name": "g",
           "node_types": [{"name": "a", "count": 2, "features": [
               {"name": "v", "kind": "dense", "dim": 2}, {"name": "c", "kind": "categorical", "cardinality": 3}]}],
           "edge_types": [{"src": "a", "rel": "r", "dst": "a", "count": 0, "ts": False, "weight": False}]}
    GraphSchema.from_json(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(GraphFormatError, match="^" + re.escape(f"schema.json: {message}") + "$"):
        GraphSchema.from_json(doc)


@pytest.mark.parametrize("data, message", [(b"\xff\xfe{", "not valid JSON"),
                                           (b"[" * 100_000, "not a schema (JSON nested too deep)")])
def test_schema_json_not_utf8_or_too_deep(tmp_path, data, message):
    g = write_schema_json(tmp_path, "")
    (g / "schema.json").write_bytes(data)
    with pytest.raises(GraphFormatError, match="^" + re.escape(f"{g / 'schema.json'}: {message}")):
        GraphDir(g)
