"""Any RecBole atomic-file data set (graphs/recbole.py, graphs/recbole_fields.py).

Property tests generate data sets with random headers, field names and declared types,
random string ids, multi-valued fields and optional files, build the graph and check it
against the source values: node counts and order, every interaction row as one edge with its
ts and weight, each field as the feature or attribute edges the field rule gives, the
knowledge graph, and full validation. Bad cells are named by file, line and column, with no
graph left behind. Specific cases are in tests/graphs/test_recbole.py; those the MovieLens
loader once refused (``occupation:float``) in tests/graphs/test_movielens.py.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, event, given, note, settings
from hypothesis import strategies as st

from graphs.exceptions import GraphFormatError
from graphs.recbole import RecBoleNames, build_recbole, kg_relation_name
from graphs.store import GraphDir

# --- the field rule, restated from graphs/recbole_fields.py's docstring -----------------------

GENRE, CATEGORY = ("genre", "has_genre"), ("category", "in_category")
ATTRIBUTE_FIELDS = {"item": {"class": GENRE, "genre": GENRE, "genres": GENRE, "category": CATEGORY,
                             "categories": CATEGORY},
                    "user": {"occupation": ("occupation", "has_occupation"), "age": ("age_group", "in_age_group")}}
ATTRIBUTE_ORDER = ("genre", "category", "occupation", "age_group")
AGES = ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"), (56, "50-55"), (99e99, "56+"))
KNOWN = ["occupation", "age", "gender", "class", "genre", "genres", "category", "categories", "movie_title",
         "title", "release_year", "id", "raw_id", "zip code", "zip_code"]
ID_FIELDS = ("user_id", "item_id", "entity_id", "head_id", "relation_id", "tail_id")
NAMES = [RecBoleNames(), RecBoleNames(item="movie", interaction="rates"), RecBoleNames("member", "product", "bought")]


def ordered(values) -> list[str]:
    """Sorted raw values: numerically when every one is an integer."""
    values = set(values)
    try:
        return sorted(values, key=lambda v: (int(v), v))
    except ValueError:
        return sorted(values)


def sanitized(name: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_.-]", "_", name)).strip("_.-") or "feature"


def age_groups(values: list[str]) -> list[str]:
    out = []
    for v in values:
        try:
            age = float(v)
        except ValueError:
            out.append(v)
            continue
        if not math.isnan(age):
            out.append(next(label for upper, label in AGES if age < upper))
    return out


# --- random data sets --------------------------------------------------------------------------

NO_BREAK = st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r")
ID_CHAR = st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp"),       # no str.isspace() character
                        blacklist_characters="\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85")
SEQ_CHAR = st.one_of(ID_CHAR, st.sampled_from("\xa0\u2028\x0b\x1f"))  # only " " separates sequence items
raw_ids = st.one_of(st.integers(0, 10**12).map(str), st.sampled_from(["007", "7", "-3", "1e3", "١٢"]),
                    st.text(ID_CHAR, min_size=1, max_size=8),
                    st.text(ID_CHAR, min_size=1, max_size=3).map(lambda s: s * 150))     # long ids
field_names = st.one_of(st.sampled_from(KNOWN), st.text(st.characters(blacklist_categories=("Cs",),
                                                                      blacklist_characters="\t\n\r\ufeff"),
                                                        min_size=1, max_size=8)).filter(lambda s: s not in ID_FIELDS)
KINDS = ("token", "token_seq", "float", "float_seq")
finite32 = st.floats(-1e30, 1e30, allow_nan=False).map(lambda x: float(np.float32(x)))


@dataclass
class Table:
    """One atomic file: ``fields`` (name, type) and per row the Python values and the written cells."""

    fields: list[tuple[str, str]]
    values: list[list]
    cells: list[list[str]]

    def text(self) -> str:
        lines = ["\t".join(f"{n}:{k}" for n, k in self.fields)] + ["\t".join(c) for c in self.cells]
        return "\n".join(lines) + "\n"

    def column(self, name: str) -> list:
        i = [n for n, _ in self.fields].index(name)
        return [row[i] for row in self.values]


def token_cells(draw, name: str):
    """A field's strategy of (value, cell); a pool of values makes repeats likely."""
    if name == "age":
        pool = draw(st.lists(st.one_of(st.integers(0, 99).map(str), st.text(NO_BREAK, min_size=1, max_size=4),
                                       st.just("nan")), min_size=1, max_size=4))
    else:
        pool = draw(st.lists(st.text(NO_BREAK, min_size=1, max_size=5), min_size=1, max_size=4))
    return st.one_of(st.none(), st.sampled_from(pool)).map(lambda v: (v, v or ""))


def token_seq_cells(draw, name: str):
    pool = draw(st.lists(st.text(SEQ_CHAR, min_size=1, max_size=4) if name != "age" else
                         st.integers(0, 99).map(str), min_size=1, max_size=4))
    return st.tuples(st.lists(st.sampled_from(pool), max_size=3), st.sampled_from([" ", "  "]),
                     st.sampled_from(["", " "])).map(lambda t: (t[0], t[2] + t[1].join(t[0])))


def float_cells(draw, name: str):
    return st.one_of(st.none(), st.just(math.nan), finite32).map(
        lambda v: (v, "" if v is None else repr(v)))


def float_seq_cells(draw, name: str):
    dim = draw(st.one_of(st.none(), st.integers(1, 3)))                  # None: varying lengths
    item = st.one_of(finite32, finite32, finite32, st.just(math.nan))
    seq = st.lists(item, max_size=3) if dim is None else st.one_of(st.just([]), st.lists(item, min_size=dim,
                                                                                          max_size=dim))
    return seq.map(lambda v: (v, " ".join(map(repr, v))))


CELLS = {"token": token_cells, "token_seq": token_seq_cells, "float": float_cells, "float_seq": float_seq_cells}


@st.composite
def node_table(draw, id_field: str) -> Table:
    """A ``.user``/``.item`` file: the id field somewhere among 0-4 random fields, unique ids."""
    names = draw(st.lists(field_names.filter(lambda s: s != id_field), max_size=4, unique=True))
    fields = [(n, draw(st.sampled_from(KINDS))) for n in names]
    fields.insert(draw(st.integers(0, len(fields))), (id_field, "token"))
    strategies = [None if n == id_field else CELLS[k](draw, n) for n, k in fields]
    values, cells = [], []
    for raw in draw(st.lists(raw_ids, max_size=6, unique=True)):
        row = [(raw, raw) if s is None else draw(s) for s in strategies]
        values.append([v for v, _ in row])
        cells.append([c for _, c in row])
    return Table(fields, values, cells)


@st.composite
def datasets(draw) -> tuple[dict[str, Table], dict]:
    """``({ext: table}, roles)``: a ``.inter`` and each of ``.user/.item/.kg/.link`` maybe."""
    ufield = draw(st.sampled_from(["user_id", "uid", "visitor ü"]))
    ifield = draw(st.sampled_from(["item_id", "iid", "book:isbn"]))
    wfield = draw(st.sampled_from([None, "rating", "score"]))
    tfield = draw(st.sampled_from([None, "timestamp", "ts", "when"]))
    extra = draw(st.sampled_from([None, ("review", "token_seq"), ("tags", "float_seq"), ("shop", "token")]))
    fields = [(ufield, "token"), (ifield, "token")] + [(f, "float") for f in (wfield, tfield) if f] + ([extra] if extra
                                                                                                     else [])
    users, items = draw(st.lists(raw_ids, min_size=1, max_size=5)), draw(st.lists(raw_ids, min_size=1, max_size=5))
    values, cells = [], []
    for _ in range(draw(st.integers(0, 10))):
        row = [(draw(st.sampled_from(users)),) * 2, (draw(st.sampled_from(items)),) * 2]
        if wfield:
            row.append((w := draw(st.floats(-1e6, 1e6, width=32)), repr(w)))
        if tfield:
            row.append((t := draw(st.integers(0, 2**53)), str(t)))
        if extra:
            row.append(draw(CELLS[extra[1]](draw, extra[0])))
        values.append([v for v, _ in row])
        cells.append([c for _, c in row])
    files = {"inter": Table(fields, values, cells)}
    if draw(st.booleans()):
        files["user"] = draw(node_table(ufield))
    if draw(st.booleans()):
        files["item"] = draw(node_table(ifield))
    if draw(st.booleans()):                                  # .link: each entity linked to one item
        linked = draw(st.lists(st.tuples(st.sampled_from(items) | raw_ids, raw_ids), max_size=4,
                               unique_by=lambda p: p[1]))
        files["link"] = Table([(ifield, "token"), ("entity_id", "token")], [list(p) for p in linked],
                              [list(p) for p in linked])
    if draw(st.booleans()):
        linked = [e for _, e in files["link"].values] if "link" in files else []
        ends = st.sampled_from(linked) | raw_ids if linked else raw_ids
        rels = st.sampled_from(["film.film.actor", "rev_of", "a b", "ä", "x__y"]) | st.text(NO_BREAK, min_size=1,
                                                                                          max_size=5)
        triples = draw(st.lists(st.tuples(ends, rels, ends), max_size=8))
        files["kg"] = Table([("head_id", "token"), ("relation_id", "token"), ("tail_id", "token")],
                            [list(t) for t in triples], [list(t) for t in triples])
    return files, {"user": ufield, "item": ifield, "weight": wfield, "ts": tfield}


def write_source(folder: Path, name: str, files: dict[str, Table]) -> Path:
    folder.mkdir(parents=True)
    for ext, table in files.items():
        (folder / f"{name}.{ext}").write_text(table.text(), encoding="utf-8")
    return folder


# --- what the graph must hold ------------------------------------------------------------------

def expected_features(table: Table, role: str, id_field: str, node_ids: list[str]) -> dict[str, tuple]:
    """``{feature name: (kind, dim, [value per node])}`` by the rule."""
    rows = {row[[n for n, _ in table.fields].index(id_field)]: row for row in table.values}
    out: dict[str, tuple] = {}
    for i, (name, kind) in enumerate(table.fields):
        if name == id_field or (kind in ("token", "token_seq") and name in ATTRIBUTE_FIELDS[role]):
            continue
        raw = [rows[n][i] if n in rows else None for n in node_ids]
        dim = 1
        if role == "item" and name in ("movie_title", "title") and kind in ("token", "token_seq"):
            vals = [v if isinstance(v, str) or v is None else " ".join(v) for v in raw]
            vals, kind = [None if v in ("unkonwn", "unknown") or not v else v for v in vals], "text"
        elif kind == "token":
            if role == "item" and name == "release_year":
                raw = [v if v is not None and v.isdigit() else None for v in raw]
            vals, kind = raw, "categorical"
        elif kind == "token_seq":
            vals, kind = [v or None for v in raw], "token_list"
        elif kind == "float":
            vals, kind = [None if v is None or math.isnan(v) else v for v in raw], "dense"
        else:
            vals = [None if not v or any(math.isnan(x) for x in v) else v for v in raw]
            dim = max((len(v) for v in vals if v), default=1)
            vals, kind = [v if v is None or dim == 1 else v + [0.0] * (dim - len(v)) for v in vals], "dense"
            vals = [v[0] if v is not None and dim == 1 else v for v in vals]
        if all(v is None for v in vals):
            continue                                         # no value in any row: left out
        fname = "title" if kind == "text" else sanitized(name)
        base, n = fname, 1
        while fname in out or fname in ("id", "raw_id"):
            n += 1
            fname = f"{base}_{n}"
        out[fname] = (kind, dim, vals)
    return out


def expected_attributes(table: Table, role: str, id_field: str) -> dict[str, set[tuple[str, str]]]:
    """``{attribute node type: {(node raw id, attribute raw id)}}``."""
    ids = table.column(id_field)
    out: dict[str, set] = {}
    for i, (name, kind) in enumerate(table.fields):
        if kind not in ("token", "token_seq") or name not in ATTRIBUTE_FIELDS[role] or name == id_field:
            continue
        ntype = ATTRIBUTE_FIELDS[role][name][0]
        for raw, row in zip(ids, table.values):
            values = ([row[i]] if row[i] else []) if kind == "token" else row[i]
            out.setdefault(ntype, set()).update((raw, v) for v in (age_groups(values) if name == "age" else values))
    return out


def check_feature(gdir: GraphDir, ntype: str, name: str, kind: str, dim: int, want: list) -> None:
    spec = {f.name: f for f in gdir.schema.node_type(ntype).features}[name]
    assert (spec.kind, spec.dim) == (kind, dim), (name, spec)
    got = gdir.read_nodes(ntype, [name]).column(name).to_pylist()
    if kind == "categorical":                                     # codes by sorted value
        vocab = ordered(v for v in want if v is not None)
        assert spec.cardinality == len(vocab) and got == [None if v is None else vocab.index(v) for v in want]
    elif kind == "token_list":
        vocab = ordered(t for v in want if v for t in v)
        assert spec.cardinality == len(vocab)
        assert got == [None if v is None else [vocab.index(t) for t in v] for v in want]
    elif kind == "dense":
        f32 = lambda v: None if v is None else np.float32(v).tolist()    # noqa: E731
        assert got == [f32(v) if dim == 1 or v is None else [f32(x) for x in v] for v in want], name
    else:
        assert got == want


def check_graph(gdir: GraphDir, files: dict[str, Table], roles: dict, names: RecBoleNames) -> None:
    inter, link = files["inter"], dict((e, i) for i, e in files["link"].values) if "link" in files else {}
    users = ordered(inter.column(roles["user"]) + (files["user"].column(roles["user"]) if "user" in files else []))
    items = ordered(inter.column(roles["item"]) + (files["item"].column(roles["item"]) if "item" in files else [])
                    + list(link.values()))
    raw = {n.name: gdir.read_nodes(n.name, ["raw_id"]).column("raw_id").to_pylist() for n in gdir.schema.node_types}
    assert raw[names.user] == users and raw[names.item] == items     # every distinct id, in order

    e = gdir.read_edges(names.edge_type)                             # one edge per interaction row
    assert [raw[names.user][s] for s in e["src"]] == inter.column(roles["user"])
    assert [raw[names.item][d] for d in e["dst"]] == inter.column(roles["item"])
    et = gdir.schema.edge_type(names.edge_type)
    assert (et.count, et.ts, et.weight) == (len(inter.values), bool(roles["ts"]), bool(roles["weight"]))
    if roles["ts"]:
        assert e["ts"].tolist() == inter.column(roles["ts"])
    if roles["weight"]:
        assert e["weight"].tolist() == [np.float32(w).tolist() for w in inter.column(roles["weight"])]

    attributes: dict[str, tuple[str, set]] = {}
    for role, ntype in (("user", names.user), ("item", names.item)):
        want = expected_features(files[role], role, roles[role], raw[ntype]) if role in files else {}
        assert [f.name for f in gdir.schema.node_type(ntype).features] == list(want)
        for name, (kind, dim, values) in want.items():
            check_feature(gdir, ntype, name, kind, dim, values)
        if role in files:
            attributes.update((a, (ntype, p)) for a, p in expected_attributes(files[role], role, roles[role]).items())
    for a, (src, pairs) in attributes.items():
        rel = {"genre": "has_genre", "category": "in_category", "occupation": "has_occupation"}.get(a, "in_age_group")
        if pairs:
            got = gdir.read_edges(f"{src}__{rel}__{a}")
            assert set(raw[a]) == {v for _, v in pairs}
            assert sorted(zip(got["src"].tolist(), got["dst"].tolist())) == sorted(
                (raw[src].index(s), raw[a].index(v)) for s, v in pairs)
            if a == "age_group":
                labels = [label for _, label in AGES]
                assert raw[a] == [g for g in labels if g in raw[a]] + ordered(set(raw[a]) - set(labels))

    triples = [t for t in files["kg"].values if t[0] in link or t[2] in link] if "kg" in files else []
    entities = ordered(x for h, _, t in triples for x in (h, t) if x not in link)

    def end(x: str) -> tuple[str, str]:
        return (names.item, link[x]) if x in link else ("entity", x)

    want_kg = Counter((*end(h), kg_relation_name(r), *end(t)) for h, r, t in triples)
    got_kg = Counter()
    for e in gdir.schema.edge_types:
        if e.key != names.edge_type and e.dst not in ATTRIBUTE_ORDER:
            cols = gdir.read_edges(e.key)
            got_kg.update((e.src, raw[e.src][s], e.rel, e.dst, raw[e.dst][d]) for s, d in zip(cols["src"], cols["dst"]))
    assert got_kg == want_kg
    assert raw.get("entity", []) == entities
    present = [a for a in ATTRIBUTE_ORDER if attributes.get(a, (None, set()))[1]]
    assert [n.name for n in gdir.schema.node_types] == [names.user, names.item] + present + (["entity"] if entities
                                                                                              else [])


@settings(max_examples=150, deadline=None)
@given(data=datasets(), names=st.sampled_from(NAMES))
def test_any_atomic_dataset_builds_the_graph_the_rule_says(data, names):
    files, roles = data
    event(f"files: {'+'.join(sorted(files))}")
    note({ext: t.text() for ext, t in files.items()})
    with tempfile.TemporaryDirectory() as tmp:
        src, out = write_source(Path(tmp) / "src", "mine", files), Path(tmp) / "g"
        schema = build_recbole(out, src, names)
        gdir = GraphDir(out, validate="full")
        assert gdir.schema == schema and schema.name == "mine"
        check_graph(gdir, files, roles, names)


# --- one bad cell: named by file, line and column, nothing written -----------------------------

@st.composite
def broken(draw):
    """``(files, ext, line, column or None)``: a valid data set with one bad header entry or cell."""
    files, roles = draw(datasets())
    keys = {"inter": roles["user"], "user": roles["user"], "item": roles["item"], "link": roles["item"],
            "kg": "head_id"}
    # (how, file, row, field index) of every break this data set allows
    spots = [("header", ext, None, i) for ext, t in files.items() for i in range(len(t.fields))]
    for ext, t in files.items():
        kinds = [k for _, k in t.fields]
        for row, cells in enumerate(t.cells):
            spots.append(("fields", ext, row, len(cells) - 1))
            spots.append(("empty_id", ext, row, [n for n, _ in t.fields].index(keys[ext])))
            if ext in ("user", "item") and row:
                spots.append(("duplicate_id", ext, row, [n for n, _ in t.fields].index(keys[ext])))
            for i, k in enumerate(kinds):
                if k.startswith("float"):
                    spots.append(("not_float", ext, row, i))
                    if ext != "inter" or k == "float":            # .inter's other fields are not read
                        spots.append(("too_big", ext, row, i))
    how, ext, row, i = draw(st.sampled_from(sorted(spots, key=str)))
    table = files[ext]
    name = table.fields[i][0]
    if how == "header":
        table.fields[i] = (name, draw(st.sampled_from(["int", "string", "Token", ""])))
        return files, ext, 1, f"column {i + 1}"
    cells = table.cells[row]
    if how == "fields":
        del cells[i]
        name = None
    elif how == "empty_id":
        cells[i] = ""
    elif how == "duplicate_id":
        cells[i] = table.cells[0][i]
    elif how == "not_float":
        cells[i] = draw(st.sampled_from(["x", "1,5", "1 x", "--1"]))
    else:                                                    # stored as float32 (ts: int64): too big
        cells[i] = draw(st.sampled_from(["inf", "-1e39", "1e39" if table.fields[i][1] == "float" else "1 1e39"]))
    assume("".join(cells).strip())                           # a blank line is skipped, not an error
    event(how)
    return files, ext, row + 2, name


@settings(max_examples=150, deadline=None)
@given(case=broken())
def test_bad_cell_is_named_by_file_line_and_column(case):
    files, ext, line, column = case
    with tempfile.TemporaryDirectory() as tmp:
        src, out = write_source(Path(tmp) / "src", "d", files), Path(tmp) / "g"
        with pytest.raises(GraphFormatError) as err:
            build_recbole(out, src)
        msg = str(err.value)
        assert re.match(re.escape(f"{src / f'd.{ext}'}: line {line}") + "[,:]", msg), msg
        assert column is None or (column if column.startswith("column ") else f"column {column!r}") in msg, msg
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["src"]     # no graph, no temp folder
