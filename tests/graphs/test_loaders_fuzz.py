"""Property-based tests of the graph loaders and validators: random schema documents, part
files broken in random ways (wrong dtypes, ids out of range, NaN, nulls, empty and truncated
files) and random bad MovieLens source files. Every bad input gives a GraphFormatError or a
DataSourceError naming the file; never another exception, never a partial graph directory."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, event, example, given, note, settings
from hypothesis import strategies as st

from graphs.exceptions import DataSourceError, GraphFormatError
from graphs.movielens import build_movielens
from graphs.schema import FEATURE_KINDS, EdgeType, FeatureSpec, GraphSchema, NodeType
from graphs.store import GraphDir, GraphWriter

MODES = ("fast", "full")
INT64 = (-(2**63), 2**63 - 1)

# --- schema documents ------------------------------------------------------------------------

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-3, 60), st.floats(), st.text(max_size=6),
                        st.sampled_from([2**70, -1, 0.5, 2.0, "1", "", "a__b", "id", "dense", "token_list"]))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=5)
names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,5}", fullmatch=True).filter(lambda s: "__" not in s)


@st.composite
def features(draw) -> FeatureSpec:
    kind = draw(st.sampled_from(FEATURE_KINDS))
    name = draw(names.filter(lambda s: s not in ("id", "raw_id")))
    return FeatureSpec(name, kind, dim=draw(st.integers(1, 3)) if kind == "dense" else 1,
                       cardinality=draw(st.integers(1, 9)) if kind in ("categorical", "token_list") else 0)


@st.composite
def schemas(draw, max_count: int = 40) -> GraphSchema:
    """A valid random schema: 1-3 node types with features, 0-3 edge types between them."""
    ntypes = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    nodes = tuple(NodeType(n, draw(st.integers(0, max_count)),
                           tuple(draw(st.lists(features(), max_size=3, unique_by=lambda f: f.name))))
                  for n in ntypes)
    ends = st.tuples(st.sampled_from(ntypes), names, st.sampled_from(ntypes))
    edges = tuple(EdgeType(s, r, d, draw(st.integers(0, max_count)), draw(st.booleans()), draw(st.booleans()))
                  for s, r, d in draw(st.lists(ends, max_size=3, unique_by=lambda e: "__".join(e))))
    return GraphSchema(nodes, edges, draw(st.text(max_size=5)))


@st.composite
def mutated_docs(draw) -> object:
    """A valid schema document with 1-3 random edits: a value replaced, a key dropped or added."""
    doc = draw(schemas()).to_json()
    for _ in range(draw(st.integers(1, 3))):
        spots, todo = [], [doc]
        while todo:                                      # every dict and list in the document
            node = todo.pop()
            if isinstance(node, (dict, list)):
                spots.append(node)
                todo += node.values() if isinstance(node, dict) else node
        node = draw(st.sampled_from(spots))
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        edit = draw(st.sampled_from(["set", "drop", "add"] if isinstance(node, dict) else ["set"]))
        if edit == "add" or not keys:
            if isinstance(node, dict):
                node[draw(st.text(max_size=6))] = draw(json_value)
        elif edit == "drop":
            del node[draw(st.sampled_from(keys))]
        else:
            node[draw(st.sampled_from(keys))] = draw(json_value)
    return draw(json_value) if draw(st.integers(0, 9)) == 0 else doc    # now and then not a schema at all


@settings(max_examples=400, deadline=None)
@given(doc=mutated_docs())
def test_any_schema_document_parses_exactly_or_names_the_problem(doc):
    try:
        schema = GraphSchema.from_json(doc, "g/schema.json")
    except GraphFormatError as err:
        assert str(err).startswith("g/schema.json: ") and len(str(err)) > len("g/schema.json: "), str(err)
        return
    # accepted: every value is exactly what the document says, with its documented type
    assert isinstance(schema.name, str) and schema.name == doc.get("name", "")
    for n, raw in zip(schema.node_types, doc["node_types"], strict=True):
        assert type(n.count) is int and n.count == raw["count"] >= 0
        for f in n.features:
            assert type(f.dim) is int and type(f.cardinality) is int and f.dim >= 1
            f.arrow_type()
    for e, raw in zip(schema.edge_types, doc["edge_types"], strict=True):
        assert type(e.count) is int and e.count == raw.get("count", 0) >= 0
        assert e.ts is raw.get("ts", False) and e.weight is raw.get("weight", False)
    assert GraphSchema.from_json(json.loads(json.dumps(schema.to_json()))) == schema


valid_json = schemas().map(lambda s: json.dumps(s.to_json()).encode())


@settings(max_examples=150, deadline=None)
@given(data=st.one_of(st.binary(max_size=64), valid_json.flatmap(
    lambda b: st.integers(0, len(b)).map(lambda cut: b[:cut]))))
@example(data=b"\xff\xfe{")
@example(data=b"[" * 100_000)
def test_any_schema_json_bytes_load_or_name_the_file(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "schema.json"
        path.write_bytes(data)
        try:
            GraphSchema.load(path)
        except GraphFormatError as err:
            assert str(err).startswith(f"{path}: "), str(err)


# --- part files ------------------------------------------------------------------------------

def column_values(draw, feat: FeatureSpec, n: int) -> pa.Array:
    """``n`` valid values of one feature, some missing."""
    def one():
        if feat.kind == "dense":
            x = st.floats(-1e6, 1e6, width=32)
            return x if feat.dim == 1 else st.lists(x, min_size=feat.dim, max_size=feat.dim)
        if feat.kind == "categorical":
            return st.integers(0, feat.cardinality - 1)
        if feat.kind == "token_list":
            return st.lists(st.integers(0, feat.cardinality - 1), max_size=3)
        return st.text(max_size=4)
    return pa.array(draw(st.lists(st.one_of(st.none(), one()), min_size=n, max_size=n)), feat.arrow_type())


def drawn(draw, values: st.SearchStrategy, m: int, dtype) -> np.ndarray:
    return np.array(draw(st.lists(values, min_size=m, max_size=m)), dtype)


@st.composite
def graph_data(draw) -> tuple[GraphSchema, dict, dict]:
    """A valid random graph with features: ``(schema, {ntype: columns}, {ekey: columns})``."""
    schema = draw(schemas(max_count=12))
    nodes = {}
    for n in schema.node_types:
        nodes[n.name] = {"id": np.array(draw(st.permutations(range(n.count))), np.int64),
                         "raw_id": [str(i) for i in range(n.count)],
                         **{f.name: column_values(draw, f, n.count) for f in n.features}}
    edges = {}
    for e in schema.edge_types:
        n_src, n_dst = schema.node_type(e.src).count, schema.node_type(e.dst).count
        m = draw(st.integers(0, 12)) if n_src and n_dst else 0
        cols = {"src": drawn(draw, st.integers(0, max(n_src - 1, 0)), m, np.int64),
                "dst": drawn(draw, st.integers(0, max(n_dst - 1, 0)), m, np.int64)}
        if e.ts:
            cols["ts"] = drawn(draw, st.integers(0, INT64[1]), m, np.int64)
        if e.weight:
            cols["weight"] = drawn(draw, st.floats(-1e6, 1e6, width=32), m, np.float32)
        edges[e.key] = cols
    return schema, nodes, edges


def write(out: Path, schema: GraphSchema, nodes: dict, edges: dict) -> GraphSchema:
    with GraphWriter(out, schema) as w:
        for ntype, cols in nodes.items():
            w.write_nodes(ntype, cols)
        for ekey, cols in edges.items():
            if len(cols["src"]):
                w.write_edges(ekey, cols)
    return schema.with_counts({n: len(c["id"]) for n, c in nodes.items()},
                              {k: len(c["src"]) for k, c in edges.items()})


@settings(max_examples=100, deadline=None)
@given(g=graph_data(), mode=st.sampled_from(MODES))
def test_random_valid_graph_with_features_passes(g, mode):
    with tempfile.TemporaryDirectory() as tmp:
        schema = write(Path(tmp) / "g", *g)
        assert GraphDir(Path(tmp) / "g", validate=mode).schema == schema


# A fixed graph with every feature kind, broken below one file and one column at a time.
SCHEMA = GraphSchema(
    (NodeType("user", 0, (FeatureSpec("gender", "categorical", cardinality=3), FeatureSpec("age", "dense"),
                          FeatureSpec("vec", "dense", dim=2), FeatureSpec("tags", "token_list", cardinality=5),
                          FeatureSpec("bio", "text"))),
     NodeType("item", 0)),
    (EdgeType("user", "rates", "item", ts=True, weight=True), EdgeType("item", "similar", "item")))
COUNTS = {"user": 12, "item": 6}
FILES = {"nodes/user": SCHEMA.node_type("user").arrow_schema(), "nodes/item": SCHEMA.node_type("item").arrow_schema(),
         "edges/user__rates__item": SCHEMA.edge_types[0].arrow_schema(),
         "edges/item__similar__item": SCHEMA.edge_types[1].arrow_schema()}
NONFINITE = st.sampled_from([math.nan, math.inf, -math.inf])


def out_of(count: int):
    return st.one_of(st.none(), st.integers(INT64[0], -1), st.integers(count, INT64[1]))


BAD_VALUES = {  # (file, column) -> (bad values, the modes that must reject them)
    ("nodes/user", "id"): (out_of(12), MODES), ("nodes/item", "id"): (out_of(6), MODES),
    ("nodes/user", "gender"): (st.one_of(st.integers(INT64[0], -1), st.integers(3, INT64[1])), MODES),
    ("nodes/user", "age"): (NONFINITE, ("full",)),
    ("nodes/user", "vec"): (st.tuples(NONFINITE, st.floats(-1, 1, width=32)).map(list), ("full",)),
    ("nodes/user", "tags"): (st.lists(st.one_of(st.none(), st.integers(5, 99), st.integers(-99, -1)),
                                      min_size=1, max_size=2), ("full",)),
    ("edges/user__rates__item", "src"): (out_of(12), MODES), ("edges/user__rates__item", "dst"): (out_of(6), MODES),
    ("edges/user__rates__item", "ts"): (st.one_of(st.none(), st.integers(INT64[0], -1)), MODES),
    ("edges/user__rates__item", "weight"): (st.one_of(st.none(), NONFINITE), ("full",)),
    ("edges/item__similar__item", "src"): (out_of(6), MODES), ("edges/item__similar__item", "dst"): (out_of(6), MODES),
}
OTHER_TYPES = [pa.int32(), pa.int64(), pa.float32(), pa.float64(), pa.string(), pa.bool_(), pa.list_(pa.int64()),
               pa.list_(pa.float32(), 2), pa.large_string(), pa.dictionary(pa.int32(), pa.string())]


@pytest.fixture(scope="module")
def fixed_graph(tmp_path_factory) -> Path:
    rng = np.random.default_rng(3)
    n, m = COUNTS["user"], 20
    out = tmp_path_factory.mktemp("fuzz") / "g"
    write(out, SCHEMA, {
        "user": {"id": np.arange(n), "raw_id": [f"u{i}" for i in range(n)],
                 "gender": pa.array([None if i % 4 == 0 else i % 3 for i in range(n)], pa.int64()),
                 "age": rng.random(n).astype(np.float32), "vec": [[float(i), 0.5] for i in range(n)],
                 "tags": [[i % 5] * (i % 3) for i in range(n)], "bio": [f"b{i}" for i in range(n)]},
        "item": {"id": np.arange(6)[::-1].copy(), "raw_id": [f"i{i}" for i in range(6)]}},
        {"user__rates__item": {"src": rng.integers(0, n, m), "dst": rng.integers(0, 6, m),
                               "ts": rng.integers(0, 10**9, m), "weight": rng.random(m).astype(np.float32)},
         "item__similar__item": {"src": [0, 1, 2, 3, 4], "dst": [5, 4, 3, 2, 1]}})
    GraphDir(out, validate="full")
    return out


@st.composite
def breakages(draw):
    """``(folder, change(path) -> column or None, modes that must reject it)``: one broken part file."""
    kind = draw(st.sampled_from(["value"] * 4 + ["dtype", "duplicate", "drop", "extra", "empty", "zero_rows",
                                               "truncate", "scribble", "count"]))   # bad values: 12 targets
    rewrite = {"row_group_size": draw(st.integers(1, 8)), "write_statistics": draw(st.booleans())}
    folder, column = draw(st.sampled_from(sorted(BAD_VALUES) if kind == "value" else
                                          [(f, c) for f, s in FILES.items() for c in s.names]))
    values, modes = BAD_VALUES.get((folder, column), (None, MODES))
    if kind == "duplicate":
        folder, column, modes = "nodes/user", "id", ("full",)
    pick = draw(st.tuples(st.integers(0, 19), st.integers(0, 19), st.randoms(use_true_random=False)))
    bad = draw({"value": values, "count": st.integers(0, 2**70)}.get(kind, st.sampled_from(OTHER_TYPES)))

    def change(path: Path) -> str | None:
        event(f"break: {kind}")
        if kind == "count":                                 # schema.json promises another row count
            section, name = folder.split("/")
            names = [t.name for t in SCHEMA.node_types] if section == "nodes" else [e.key for e in SCHEMA.edge_types]
            doc = json.loads((path.parents[2] / "schema.json").read_text())
            entry = doc[f"{section[:-1]}_types"][names.index(name)]
            assume(entry["count"] != bad)
            entry["count"] = bad
            (path.parents[2] / "schema.json").write_text(json.dumps(doc))
            return None
        table = pq.read_table(path)
        row, other = pick[0] % table.num_rows, pick[1] % table.num_rows
        note(f"{kind} {folder} column {column!r} row {row} other {other} bad {bad!r} {rewrite}")
        i = table.schema.get_field_index(column)
        if kind in ("value", "duplicate"):
            cells = table.column(column).to_pylist()
            cells[row] = bad if kind == "value" else cells[other]
            assume(kind == "value" or row != other)
            type_ = table.field(i).type                              # nullable, so nulls can be written
            table = table.set_column(i, pa.field(column, type_), pa.array(cells, type_))
        elif kind == "dtype":
            assume(bad != table.field(i).type)
            try:
                new = table.column(column).cast(bad)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                new = pa.nulls(table.num_rows, bad)
            table = table.set_column(i, pa.field(column, bad), new)
        elif kind in ("drop", "extra"):
            table = table.drop_columns([column]) if kind == "drop" else table.append_column("zz", table[column])
        elif kind == "zero_rows":
            table = table.slice(0, 0)
        else:
            data = path.read_bytes()
            cut = {"empty": 0, "truncate": pick[2].randrange(len(data))}.get(kind)
            if cut is None:                                       # scribble: random bytes anywhere
                at = pick[2].randrange(len(data))
                data = data[:at] + pick[2].randbytes(pick[2].randint(1, 16)) + data[at + 16:]
            path.write_bytes(data if cut is None else data[:cut])
            return None
        pq.write_table(table, path, **rewrite)
        return {"zero_rows": None, "extra": "zz"}.get(kind, column)

    return folder, change, () if kind == "scribble" else modes


@settings(max_examples=500, deadline=None)
@given(broken=breakages(), mode=st.sampled_from(MODES))
def test_broken_part_file_is_named(fixed_graph, broken, mode):
    folder, change, must_fail = broken
    with tempfile.TemporaryDirectory() as tmp:
        g = Path(shutil.copytree(fixed_graph, Path(tmp) / "g"))
        path = g / folder / "part-00000.parquet"
        column = change(path)
        try:
            GraphDir(g, validate=mode)
        except GraphFormatError as err:      # names the file (a row count: its folder) and the column
            event(f"{mode}: rejected")
            msg = str(err)
            assert msg.startswith(f"{path}: ") or (column is None and msg.startswith(f"{path.parent}: ")), msg
            assert column is None or repr(column) in msg, msg
            return
        event(f"{mode}: accepted")
        assert mode not in must_fail, f"{mode} mode accepted a broken {path}"


# --- MovieLens source files -------------------------------------------------------------------

token = st.sampled_from(["1", "2", "3", "10", "a", "b"])
number = st.one_of(st.integers(-2, 10**10).map(str), st.sampled_from(
    ["", "nan", "inf", "-inf", "1e30", "1e39", "-1e39", "9.3e18", "x", "1,5", " 4 "]))
column_kinds = st.sampled_from(["token", "token_seq", "float", "float_seq"])


@st.composite
def sources(draw) -> dict[str, bytes]:
    """A RecBole atomic dataset: ``.inter`` and optional ``.user``/``.item``, maybe one bad line or cut."""
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{draw(token)}\t{draw(token)}\t{draw(st.integers(1, 5))}\t{draw(st.integers(0, 10**9))}"
              for _ in range(draw(st.integers(0, 6)))]
    files = {"d.inter": inter}
    for ext, id_col, cols in (("user", "user_id", ["age", "occupation", "zip code", "zip_code", "id", "raw_id",
                                                   "score"]),
                              ("item", "item_id", ["movie_title", "title", "release_year", "class", "genre",
                                                   "price"])):
        if draw(st.booleans()):
            chosen = draw(st.lists(st.sampled_from(cols), max_size=3, unique=True))
            kinds = [draw(column_kinds) for _ in chosen]
            files[f"d.{ext}"] = ["\t".join([f"{id_col}:token"] + [f"{c}:{k}" for c, k in zip(chosen, kinds)])]
            for raw in draw(st.lists(token, max_size=4, unique=True)):
                files[f"d.{ext}"].append("\t".join([raw] + [draw(number) if k.startswith("float") else draw(token)
                                                            for k in kinds]))
    name = draw(st.sampled_from(sorted(files)))
    lines = files[name]
    bad = draw(st.sampled_from(["none", "line", "empty", "cut"]))
    if bad == "line":
        width = draw(st.integers(1, 6))
        lines.insert(draw(st.integers(1, len(lines))), "\t".join(draw(st.one_of(token, number))
                                                                 for _ in range(width)))
    data = {n: ("\n".join(ls) + "\n").encode() for n, ls in files.items()}
    if bad == "empty":
        data[name] = b""
    elif bad == "cut":
        data[name] = data[name][:draw(st.integers(0, len(data[name])))] + draw(st.sampled_from([b"", b"\xc3"]))
    return data


@settings(max_examples=400, deadline=None)
@given(files=sources(), previous=st.booleans())
def test_bad_source_gives_named_error_and_no_partial_graph(files, previous):
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "g"
        src.mkdir()
        for name, data in files.items():
            (src / name).write_bytes(data)
        if previous:
            write(out, GraphSchema((NodeType("old", 0),), ()), {"old": {"id": [0], "raw_id": ["x"]}}, {})
        before = (out / "schema.json").read_bytes() if previous else None
        try:
            schema = build_movielens(out, source=src, overwrite=previous)
        except (GraphFormatError, DataSourceError) as err:
            event(f"rejected: {type(err).__name__}")
            assert any(f"{src / n}:" in str(err) for n in files), str(err)
            if previous:                                             # the old graph is untouched
                assert (out / "schema.json").read_bytes() == before
                GraphDir(out, validate="full")
            else:
                assert not out.exists()
        else:
            event("built")
            assert GraphDir(out, validate="full").schema == schema   # what is written is valid
        left = sorted(p.name for p in Path(tmp).iterdir())           # no hidden .g.tmp-* folder
        assert left == (["g", "src"] if out.exists() else ["src"]), left
