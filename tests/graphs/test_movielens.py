"""MovieLens loader: the real ml-100k graph from the recbole wheel, tiny hand-written fixtures
in both source formats, and the error paths. Other RecBole data sets: tests/graphs/test_atomic_files.py."""

from __future__ import annotations

import re
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from graphs.exceptions import DataSourceError, GraphFormatError
from graphs.movielens import KG_OTHER, build_movielens, fetch_recbole_files, kg_relation_name
from graphs.recbole import build_recbole
from graphs.store import GraphDir

WHEEL = Path("/tmp/rb/recbole-1.2.1-py3-none-any.whl")
ATTRIBUTE_RELS = {"rates", "has_genre", "has_occupation", "in_age_group"}


def _rows(path: Path) -> list[list[str]]:
    """A raw atomic file without its header, read without the loader's code."""
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t") for line in lines if line]


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    """(source folder, graph dir, returned schema) of the real ml-100k, built once."""
    root = tmp_path_factory.mktemp("ml100k")
    if WHEEL.is_file():
        src = fetch_recbole_files(cache_dir=root / "cache", wheel=WHEEL)
    else:  # downloads recbole with pip once, into the user's cache
        src = fetch_recbole_files()
    schema = build_movielens(root / "graph", source=src)
    return src, GraphDir(root / "graph", validate="full"), schema


def _index(gdir: GraphDir, ntype: str) -> dict[str, int]:
    table = gdir.read_nodes(ntype, ["id", "raw_id"]).to_pydict()
    return dict(zip(table["raw_id"], table["id"]))


def test_ml100k_counts(ml100k):
    src, gdir, schema = ml100k
    assert gdir.schema == schema
    s = gdir.schema
    assert s.node_type("user").count == 943
    assert s.node_type("movie").count == 1682
    assert s.edge_type("user__rates__movie").count == 100_000
    genres = {g for row in _rows(src / "ml-100k.item") for g in row[3].split()}
    assert s.node_type("genre").count == len(genres) == 19
    assert s.node_type("occupation").count == 21
    assert [r for r in gdir.read_nodes("age_group").column("raw_id").to_pylist()] == [
        "<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]
    assert s.edge_type("user__has_occupation__occupation").count == 943
    assert s.edge_type("user__in_age_group__age_group").count == 943


def test_ml100k_knowledge_graph_matches_raw_files(ml100k):
    src, gdir, _ = ml100k
    linked = {entity for _, entity in _rows(src / "ml-100k.link")}
    triples = [t for t in _rows(src / "ml-100k.kg") if t[0] in linked or t[2] in linked]
    assert len(triples) == 91_631  # every ml-100k triple touches a linked movie
    kg = [e for e in gdir.schema.edge_types if e.rel not in ATTRIBUTE_RELS]
    assert sum(e.count for e in kg) == len(triples)
    unlinked = {e for h, _, t in triples for e in (h, t) if e not in linked}
    assert gdir.schema.node_type("entity").count == len(unlinked)

    # relation counts by (head type, relation, tail type), merging the rare relations
    per_rel = Counter(kg_relation_name(r) for _, r, _ in triples)
    expected = Counter()
    for h, r, t in triples:
        rel = kg_relation_name(r) if per_rel[kg_relation_name(r)] >= 0.01 * len(triples) else KG_OTHER
        expected[("movie" if h in linked else "entity", rel, "movie" if t in linked else "entity")] += 1
    assert {(e.src, e.rel, e.dst): e.count for e in kg} == dict(expected)
    assert gdir.schema.edge_type("movie__film_film_actor__entity").count == 40_152


def test_ml100k_edge_types_valid(ml100k):
    _, gdir, _ = ml100k
    names = [n.name for n in gdir.schema.node_types]
    assert names == ["user", "movie", "genre", "occupation", "age_group", "entity"]
    for e in gdir.schema.edge_types:
        assert e.src in names and e.dst in names
        assert re.fullmatch(r"[a-z][a-z0-9_]*", e.rel) and "__" not in e.rel
        assert not e.rel.startswith("rev_")
        assert (e.ts, e.weight) == ((True, True) if e.rel == "rates" else (False, False))
        assert e.count > 0


def test_ml100k_raw_id_round_trip(ml100k):
    _, gdir, _ = ml100k
    users, movies = _index(gdir, "user"), _index(gdir, "movie")
    assert users["1"] == 0 and users["943"] == 942 and movies["1"] == 0 and movies["1682"] == 1681
    r = gdir.read_edges("user__rates__movie")
    assert r["ts"].dtype == np.int64 and r["weight"].dtype == np.float32
    hit = (r["src"] == users["196"]) & (r["dst"] == movies["242"])
    assert hit.sum() == 1
    assert r["ts"][hit][0] == 881250949 and r["weight"][hit][0] == 3.0
    assert sorted(np.unique(r["weight"]).tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_ml100k_features(ml100k):
    _, gdir, _ = ml100k
    user = gdir.schema.node_type("user")
    assert [(f.name, f.kind, f.cardinality) for f in user.features] == [
        ("gender", "categorical", 2), ("zip_code", "categorical", 795)]
    gender = Counter(gdir.read_nodes("user", ["gender"]).column("gender").to_pylist())
    assert gender == {0: 273, 1: 670}  # codes by sorted value: F=0, M=1
    movies = gdir.read_nodes("movie").to_pydict()
    assert movies["title"][0] == "Toy Story"
    assert movies["release_year"][266] is None and movies["title"][266] is None  # movie 267 "unkonwn"
    genre = _index(gdir, "genre")
    e = gdir.read_edges("movie__has_genre__genre")
    assert sorted(e["dst"][e["src"] == 0].tolist()) == sorted(
        genre[g] for g in ("Animation", "Children's", "Comedy"))


def test_fetch_reuses_cache(ml100k, monkeypatch):
    src, _, _ = ml100k
    monkeypatch.setenv("HETREC_CACHE", str(src.parent))
    assert fetch_recbole_files() == src  # cached: no wheel, no pip


def test_fetch_from_bad_wheel(tmp_path):
    bad = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataSourceError, match="cannot extract"):
        fetch_recbole_files(cache_dir=tmp_path / "cache", wheel=bad)
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("recbole/__init__.py", "")
    with pytest.raises(DataSourceError, match="no member recbole/dataset_example/ml-100k/ml-100k.inter"):
        fetch_recbole_files(cache_dir=tmp_path / "cache", wheel=empty)
    assert not (tmp_path / "cache" / "ml-100k").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # no temp folder left


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="latin-1")
    return folder


GENRES = "unknown|0\nAction|1\nComedy|2\n"
U_ITEM = ("1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1\n"
          "2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|0\n"
          "3|Café (1996)|||http://x|0|1|1\n")
U_USER = "1|24|M|technician|85711\n2|53|F|other|94043\n10|17|M|student|T8H1N\n"
U_DATA = "1\t1\t5\t874965758\n10\t3\t3\t876893171\n2\t2\t4\t878542960\n1\t4\t1\t875071561\n"


def test_grouplens_originals(tmp_path):
    src = _write(tmp_path / "ml", {"u.data": U_DATA, "u.item": U_ITEM, "u.user": U_USER, "u.genre": GENRES})
    schema = build_movielens(tmp_path / "g", source=src)
    gdir = GraphDir(tmp_path / "g", validate="full")
    counts = {n.name: n.count for n in schema.node_types}
    # movie 4 is rated but absent from u.item: it still gets a node, with null features
    assert counts == {"user": 3, "movie": 4, "genre": 2, "occupation": 3, "age_group": 3}
    assert {e.key: e.count for e in schema.edge_types} == {
        "user__rates__movie": 4, "movie__has_genre__genre": 4,
        "user__has_occupation__occupation": 3, "user__in_age_group__age_group": 3}
    users = gdir.read_nodes("user").to_pydict()
    assert users["raw_id"] == ["1", "2", "10"]  # numeric order
    assert users["zip_code"] == [0, 1, 2]  # sorted as strings (T8H1N is not numeric): 85711, 94043, T8H1N
    movies = gdir.read_nodes("movie").to_pydict()
    assert movies["title"] == ["Toy Story", "GoldenEye", "Café", None]
    assert movies["release_year"] == [0, 0, None, None]
    assert gdir.read_nodes("age_group").column("raw_id").to_pylist() == ["<18", "18-24", "50-55"]
    r = gdir.read_edges("user__rates__movie")
    assert r["src"].tolist() == [0, 2, 1, 0] and r["dst"].tolist() == [0, 2, 1, 3]
    assert r["ts"].tolist() == [874965758, 876893171, 878542960, 875071561]


def test_atomic_with_other_column_names(tmp_path):
    src = _write(tmp_path / "mine", {"shop.inter": "uid:token\tiid:token\tscore:float\twhen:float\n"
                                                   "b\tx\t0.5\t100\na\ty\t2\t200\na\tx\t1\t300\n"})
    schema = build_movielens(tmp_path / "g", source=src)
    assert schema.name == "shop"
    assert [(n.name, n.count) for n in schema.node_types] == [("user", 2), ("movie", 2)]
    [rates] = schema.edge_types
    assert (rates.key, rates.count, rates.ts, rates.weight) == ("user__rates__movie", 3, True, True)
    gdir = GraphDir(tmp_path / "g", validate="full")
    assert gdir.read_nodes("user").column("raw_id").to_pylist() == ["a", "b"]
    r = gdir.read_edges("user__rates__movie")
    assert r["src"].tolist() == [1, 0, 0] and r["dst"].tolist() == [0, 1, 0]
    assert r["ts"].tolist() == [100, 200, 300] and r["weight"].tolist() == [0.5, 2.0, 1.0]


@pytest.mark.parametrize("body, match", [
    ("1\t2\t3\t4\n5\t6\t7\n", r"bad\.inter: line 3: 3 fields, the header declares 4"),
    ("1\t2\t3\t4\n5\t6\tfour\t8\n", r"bad\.inter: line 3, column 'rating': 'four' is not a float"),
    ("1\t2\t3\t\n", r"bad\.inter: line 2, column 'timestamp': value nan is missing"),
    ("\n1\t2\t3\t-5\n", r"bad\.inter: line 3, column 'timestamp': value -5.0 .* below 0"),
])
def test_malformed_line(tmp_path, body, match):
    src = _write(tmp_path / "src", {"bad.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                                 + body})
    with pytest.raises(GraphFormatError, match=match):
        build_movielens(tmp_path / "g", source=src)
    assert not (tmp_path / "g").exists()


INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t5\t10\n"


# Found by tests/graphs/test_loaders_fuzz.py: crashes (OverflowError, TypeError) or a graph
# written with inf in it, and errors that did not name the file.
@pytest.mark.parametrize("name, text, says", [
    ("d.inter", INTER + "1\t2\t4\t1e30\n",
     "d.inter: line 3, column 'timestamp': value 1e+30 is above 9223372036854775807"),
    ("d.inter", INTER + "1\t2\t1e39\t10\n", "d.inter: line 3, column 'rating': value 1e+39 is above 3.4028234"),
    ("d.user", "user_id:token\tscore:float\n1\tinf\n", "d.user: line 2, column 'score': value inf does not fit"),
    ("d.item", "item_id:token\tprice:float\n1\t2\n2\t-1e39\n",
     "d.item: line 3, column 'price': value -1e+39 does not fit"),
])  # declared types once refused here (occupation:token_seq, class:float) and clashing feature
# names are read now: see test_fields_once_refused_are_read and test_feature_names_never_collide
def test_bad_value_or_column_type_is_named(tmp_path, name, text, says):
    src = _write(tmp_path / "src", {"d.inter": INTER, name: text})
    with pytest.raises(GraphFormatError, match="^" + re.escape(f"{src}/{says}")):
        build_movielens(tmp_path / "g", source=src)
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no graph, no temp folder


def _features(gdir: GraphDir, ntype: str) -> list[tuple]:
    return [(f.name, f.kind, f.dim, f.cardinality) for f in gdir.schema.node_type(ntype).features]


def test_occupation_float_is_a_dense_feature(tmp_path):
    src = _write(tmp_path / "src", {"d.inter": INTER, "d.user": "user_id:token\toccupation:float\tgender:token\n"
                                                                "1\t3.5\tF\n2\t\tM\n"})
    build_movielens(tmp_path / "g", source=src)
    gdir = GraphDir(tmp_path / "g", validate="full")
    assert _features(gdir, "user") == [("occupation", "dense", 1, 0), ("gender", "categorical", 1, 2)]
    assert gdir.read_nodes("user", ["occupation"]).column("occupation").to_pylist() == [3.5, None]
    assert [n.name for n in gdir.schema.node_types] == ["user", "movie"]   # no occupation nodes


def test_fields_once_refused_are_read(tmp_path):
    """Declared types this loader refused: now features or attribute edges (graphs/recbole_fields.py)."""
    src = _write(tmp_path / "src", {"d.inter": INTER,
                                    "d.user": "user_id:token\toccupation:token_seq\tage:float\n1\ta b a\t24\n",
                                    "d.item": "item_id:token\tmovie_title:float\tclass:float\n1\t2\t0.5\n"})
    build_movielens(tmp_path / "g", source=src)
    gdir = GraphDir(tmp_path / "g", validate="full")
    assert _features(gdir, "user") == [("age", "dense", 1, 0)]
    assert _features(gdir, "movie") == [("movie_title", "dense", 1, 0), ("class", "dense", 1, 0)]
    assert gdir.read_nodes("occupation").column("raw_id").to_pylist() == ["a", "b"]
    e = gdir.read_edges("user__has_occupation__occupation")
    assert (e["src"].tolist(), e["dst"].tolist()) == ([0, 0], [0, 1])   # one edge per distinct value


def test_feature_names_never_collide(tmp_path):
    src = _write(tmp_path / "src", {"d.inter": INTER,
                                    "d.user": "user_id:token\tzip code:token\tzip_code:token\tid:float\t"
                                              "raw_id:token\n1\ta\tb\t1\tx\n",
                                    "d.item": "item_id:token\tmovie_title:token\ttitle:token_seq\n1\tA\tB C\n"})
    build_movielens(tmp_path / "g", source=src)
    gdir = GraphDir(tmp_path / "g", validate="full")
    assert [f[0] for f in _features(gdir, "user")] == ["zip_code", "zip_code_2", "id_2", "raw_id_2"]
    assert _features(gdir, "movie") == [("title", "text", 1, 0), ("title_2", "text", 1, 0)]
    assert gdir.read_nodes("movie", ["title_2"]).column("title_2").to_pylist() == ["B C"]


def test_ml100k_as_any_recbole_dataset(ml100k, tmp_path):
    """ml-100k through ``build_recbole``: the same graph, the item type named ``item``."""
    src, _, ml = ml100k
    rb = build_recbole(tmp_path / "rb", src)
    rename = {"movie": "item", "rates": "interacts"}
    assert [(rename.get(n.name, n.name), n.count, n.features) for n in ml.node_types] == [
        (n.name, n.count, n.features) for n in rb.node_types]
    assert [(rename.get(e.src, e.src), rename.get(e.rel, e.rel), rename.get(e.dst, e.dst), e.count)
            for e in ml.edge_types] == [(e.src, e.rel, e.dst, e.count) for e in rb.edge_types]


def test_bad_header_and_grouplens_line(tmp_path):
    src = _write(tmp_path / "a", {"x.inter": "user_id:token\titem_id:integer\n1\t2\n"})
    with pytest.raises(GraphFormatError, match=r"x\.inter: line 1, column 2 \('item_id:integer'\)"):
        build_movielens(tmp_path / "g", source=src)
    src = _write(tmp_path / "b", {"u.data": U_DATA, "u.item": U_ITEM + "4|Bad|||x|0|2|0\n", "u.user": U_USER,
                                  "u.genre": GENRES})
    with pytest.raises(GraphFormatError, match=r"u\.item: line 4, genre flag 'Action': '2' is not 0 or 1"):
        build_movielens(tmp_path / "g", source=src)


def test_missing_source(tmp_path):
    with pytest.raises(DataSourceError, match=r"nowhere: no such folder.*\.inter.*u\.data"):
        build_movielens(tmp_path / "g", source=tmp_path / "nowhere")
    with pytest.raises(DataSourceError, match=r"found neither \*\.inter nor u\.data"):
        build_movielens(tmp_path / "g", source=_write(tmp_path / "empty", {"readme.txt": "hi"}))
    with pytest.raises(DataSourceError, match=r"has u\.data but not \['u\.item'\]"):
        build_movielens(tmp_path / "g", source=_write(tmp_path / "gl", {"u.data": U_DATA, "u.user": U_USER}))


def test_existing_output_needs_overwrite(tmp_path):
    src = _write(tmp_path / "s", {"d.inter": "user_id:token\titem_id:token\n1\t1\n"})
    build_movielens(tmp_path / "g", source=src)
    with pytest.raises(FileExistsError, match="overwrite"):
        build_movielens(tmp_path / "g", source=src)
    schema = build_movielens(tmp_path / "g", source=src, overwrite=True)
    assert [(e.key, e.ts, e.weight) for e in schema.edge_types] == [("user__rates__movie", False, False)]
