"""Specific RecBole atomic-file data sets (graphs/recbole.py): sequences, missing values,
ids and field names of any shape, optional files, other type names, bad names and cells.
The property tests are in tests/graphs/test_recbole_fuzz.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from graphs.exceptions import GraphFormatError
from graphs.recbole import RecBoleNames, build_recbole
from graphs.store import GraphDir

INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t5\t10\n2\t2\t3\t20\n"


def build(tmp_path: Path, files: dict[str, str], names: RecBoleNames = RecBoleNames()) -> GraphDir:
    src = tmp_path / "src"
    src.mkdir()
    for name, text in {"d.inter": INTER, **files}.items():
        (src / name).write_text(text, encoding="utf-8")
    build_recbole(tmp_path / "g", src, names)
    return GraphDir(tmp_path / "g", validate="full")


def features(gdir: GraphDir, ntype: str) -> list[tuple]:
    return [(f.name, f.kind, f.dim, f.cardinality) for f in gdir.schema.node_type(ntype).features]


def test_sequences_and_missing_values(tmp_path):
    gdir = build(tmp_path, {"d.item": "item_id:token\ttags:token_seq\temb:float_seq\tvar:float_seq\tone:float_seq\t"
                                      "empty:token\n"
                                      "1\tx  y x\t1 2\t1 2 3\t7\t\n"
                                      "2\t\t\t4\tnan\t\n"
                                      "3\tz\t3 nan\t\t8\t\n"})
    assert features(gdir, "item") == [("tags", "token_list", 1, 3), ("emb", "dense", 2, 0),
                                      ("var", "dense", 3, 0), ("one", "dense", 1, 0)]  # "empty": no value, left out
    got = gdir.read_nodes("item").to_pydict()
    assert got["tags"] == [[0, 1, 0], None, [2]]
    assert got["emb"] == [[1.0, 2.0], None, None]                  # a nan in a sequence: a missing value
    assert got["var"] == [[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], None]  # padded with 0.0 as RecBole pads
    assert got["one"] == [7.0, None, 8.0]


def test_ids_and_field_names_of_any_shape(tmp_path):
    ids = ["ünï", "a" * 500, "x:y", "0012", "名前", "--", "\x00z"]
    inter = "uid:token\tiid:token\n" + "".join(f"{u}\t{i}\n" for u, i in zip(ids, reversed(ids)))
    gdir = build(tmp_path, {"d.inter": inter, "d.item": "title:token\tiid:token\tgröße:float\tä:float\tp:q:float\n"
                            + "".join(f"T {i}\t{i}\t1\t2\t3\n" for i in ids[:3])})
    assert gdir.read_nodes("user", ["raw_id"]).column("raw_id").to_pylist() == sorted(ids)
    items = gdir.read_nodes("item", ["raw_id", "title"]).to_pydict()
    assert dict(zip(items["raw_id"], items["title"]))["ünï"] == "T ünï"    # keyed by .inter's item field
    assert [f[0] for f in features(gdir, "item")] == ["title", "gr_e", "feature", "p_q"]


def test_byte_order_mark_and_space_in_tokens(tmp_path):
    gdir = build(tmp_path, {"d.inter": "\ufeffuser_id:token\titem_id:token\n1 a\t1\n", "d.user":
                            "\ufeffuser_id:token\tcity:token\tage:token\n1 a\tNew York\tyoung\n"})
    assert gdir.read_nodes("user").to_pydict()["raw_id"] == ["1 a"]
    assert features(gdir, "user") == [("city", "categorical", 1, 1)]
    assert gdir.read_nodes("age_group").column("raw_id").to_pylist() == ["young"]  # not a number: its own group


def test_only_inter_and_knowledge_graph(tmp_path):
    gdir = build(tmp_path, {"d.link": "item_id:token\tentity_id:token\n1\tm.1\n9\tm.9\n",
                            "d.kg": "head_id:token\trelation_id:token\ttail_id:token\n"
                                    "m.1\tfilm.actor\tm.2\nm.5\tfilm.actor\tm.6\nm.9\trev_of\tm.1\n"})
    assert [(n.name, n.count) for n in gdir.schema.node_types] == [("user", 2), ("item", 3), ("entity", 1)]
    assert {e.key: e.count for e in gdir.schema.edge_types} == {
        "user__interacts__item": 2, "item__film_actor__entity": 1, "item__kg_rev_of__item": 1}


def test_category_nodes_and_other_names(tmp_path):
    names = RecBoleNames("member", "product", "bought")
    gdir = build(tmp_path, {"d.item": "item_id:token\tcategories:token_seq\tbrand:token\n1\tBooks Kids\tX\n"}, names)
    assert [n.name for n in gdir.schema.node_types] == ["member", "product", "category"]
    assert [e.key for e in gdir.schema.edge_types] == ["member__bought__product", "product__in_category__category"]


@pytest.mark.parametrize("kwargs, match", [
    ({"item": "genre"}, "item type 'genre' is an attribute or entity node type"),
    ({"user": "a__b"}, "user type 'a__b' is not a valid name"),
    ({"interaction": "rev_rates"}, "no 'rev_' prefix"),
    ({"user": "x", "item": "x"}, "both 'x'"),
])
def test_bad_names(kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        RecBoleNames(**kwargs)


def test_bad_float_seq_is_named(tmp_path):
    with pytest.raises(GraphFormatError, match=re.escape("d.item: line 3, column 'emb': value inf does not fit")):
        build(tmp_path, {"d.item": "item_id:token\temb:float_seq\n1\t1 2\n2\t3 inf\n"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
