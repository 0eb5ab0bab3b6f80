"""The field rule: how each field of a ``.user`` or ``.item`` file enters the graph.

The declared type decides (https://recbole.io/docs/user_guide/data/atomic_files.html),
whatever the field is called:

- ``token`` -> a ``categorical`` feature, codes by sorted value (numerically when every
  value is an integer);
- ``token_seq`` -> a ``token_list`` feature, one vocabulary per field, codes by sorted token;
- ``float`` -> a ``dense`` feature (float32);
- ``float_seq`` -> a ``dense`` feature of ``dim`` = the longest row; shorter rows are padded
  with 0.0, as RecBole pads them; rows of at most one value give a plain float32.

Except these known fields, which become attribute nodes when declared ``token`` or
``token_seq`` (one node per distinct value, one edge per node and distinct value; declared
``float``/``float_seq`` they are dense features like any other field):

=========  =================================  ==============  ==================
file       field                              node type       relation
=========  =================================  ==============  ==================
``.item``  ``class``, ``genre``, ``genres``   ``genre``       ``has_genre``
``.item``  ``category``, ``categories``       ``category``    ``in_category``
``.user``  ``occupation``                     ``occupation``  ``has_occupation``
``.user``  ``age``                            ``age_group``   ``in_age_group``
=========  =================================  ==============  ==================

Ages that are numbers fall into MovieLens's groups (``<18``, ``18-24`` ... ``56+``); any
other value is a group of its own. Two more known ``.item`` fields: ``movie_title`` and
``title`` (token or token_seq) become the ``text`` feature ``title``, and
``release_year:token`` a categorical whose non-numeric values are nulls. A list of known
names rather than a cardinality threshold: the graph's shape does not change with a sample of
the rows, and MovieLens keeps its shape (``gender``, two values, stays a feature).

An empty cell (or ``nan``, or a sequence holding ``nan``) is a null: a missing value. A field
with no value in any row is left out. A feature is named after its field, characters outside
``[A-Za-z0-9_.-]`` replaced by ``_``; a name already taken (``id``, ``raw_id``, an earlier
field) gets ``_2``, ``_3``...
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from graphs.atomic_files import AtomicTable
from graphs.exceptions import GraphFormatError
from graphs.schema import FeatureSpec

log = logging.getLogger(__name__)

FLOAT32_MAX = float(np.finfo(np.float32).max)
# MovieLens age groups (the ML-1M README); upper bound exclusive, None = open.
AGE_GROUPS = ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"), (56, "50-55"),
              (None, "56+"))
TITLE_FIELDS = ("movie_title", "title")
MISSING_TITLES = ("unkonwn", "unknown")  # RecBole's ml-100k (and u.item) placeholder for movie 267
RESERVED = ("id", "raw_id")


@dataclass(frozen=True)
class Attribute:
    """Attribute nodes of type ``ntype``, linked from their user or item by ``rel``."""

    ntype: str
    rel: str


_GENRE, _CATEGORY = Attribute("genre", "has_genre"), Attribute("category", "in_category")
AGE_GROUP = Attribute("age_group", "in_age_group")
# role ("user" for .user, "item" for .item) -> field name -> attribute; node types in this order
ATTRIBUTE_FIELDS = {
    "item": {"class": _GENRE, "genre": _GENRE, "genres": _GENRE, "category": _CATEGORY, "categories": _CATEGORY},
    "user": {"occupation": Attribute("occupation", "has_occupation"), "age": AGE_GROUP},
}
ATTRIBUTES = tuple(dict.fromkeys(a for fields in ATTRIBUTE_FIELDS.values() for a in fields.values()))


class Vocab:
    """Dense codes of a set of strings, by sorted value (numerically when all are integers),
    or with the values of ``first`` ahead in that order."""

    def __init__(self, values: Iterable[str], first: tuple[str, ...] = ()):
        values = set(values)
        head = [v for v in first if v in values]
        self.raw = head + sorted_values(values - set(head))
        self.index = {r: i for i, r in enumerate(self.raw)}


def sorted_values(values: Iterable[str]) -> list[str]:
    values = set(values)
    try:
        return sorted(values, key=lambda v: (int(v), v))
    except ValueError:                       # not all integers (or one of over 4300 digits)
        return sorted(values)


def feature_name(field: str, fallback: str = "feature") -> str:
    """A field name as a valid feature or relation name: ``zip code`` -> ``zip_code``; ``fallback``
    where nothing is left (``größe`` -> ``gr_e``, ``ä`` -> ``feature``)."""
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_.-]", "_", field)).strip("_.-") or fallback


def attribute_of(role: str, field: str, kind: str) -> Attribute | None:
    """The attribute node type of a field under the rule, None where it is a feature."""
    return ATTRIBUTE_FIELDS[role].get(field) if kind in ("token", "token_seq") else None


def age_groups(values: list[str]) -> list[str]:
    """``["24"]`` -> ``["18-24"]``; a value that is not a number is a group of its own, nan none."""
    out = []
    for value in values:
        try:
            age = float(value)
        except ValueError:
            out.append(value)
            continue
        if not math.isnan(age):
            out.append(next(label for upper, label in AGE_GROUPS if upper is None or age < upper))
    return out


def attribute_values(table: AtomicTable | None, role: str, id_field: str | None,
                     rows: list[int | None]) -> dict[Attribute, list[list[str]]]:
    """Per attribute of the rule, the sorted distinct values of each node.

    ``rows[i]``: the table row of node ``i``, None where the node has no row.
    """
    out: dict[Attribute, list[list[str]]] = {}
    if table is None:
        return out
    for field, kind in table.types.items():
        attribute = attribute_of(role, field, kind)
        if attribute is None or field == id_field:
            continue
        per_node = out.setdefault(attribute, [[] for _ in rows])
        cells = table.columns[field]
        for node, row in enumerate(rows):
            if row is None or not cells[row]:
                continue
            values = [cells[row]] if kind == "token" else cells[row]
            if attribute == AGE_GROUP:
                values = age_groups(values)
            per_node[node] = sorted(set(per_node[node]).union(values))
    return out


def node_features(table: AtomicTable | None, role: str, id_field: str | None,
                  rows: list[int | None]) -> tuple[dict[str, list], tuple[FeatureSpec, ...]]:
    """Feature columns (one value per node, None for a null) and their specs, by the rule."""
    columns: dict[str, list] = {}
    specs: list[FeatureSpec] = []
    if table is None:
        return columns, ()
    for field, kind in table.types.items():
        if field == id_field or attribute_of(role, field, kind) is not None:
            continue
        cells = table.columns[field]
        values = [None if r is None else cells[r] for r in rows]
        if role == "item" and field in TITLE_FIELDS and kind in ("token", "token_seq"):
            spec, column = _title(values)
        elif kind == "token":
            if role == "item" and field == "release_year":
                values = [v if v is not None and v.isdigit() else None for v in values]
            spec, column = _categorical(values)
        elif kind == "token_seq":
            spec, column = _token_list(values)
        elif kind == "float":
            spec, column = _dense(table, field, values)
        else:
            spec, column = _dense_seq(table, field, values)
        if spec is None:
            log.info("%s: field %r has no value in any row; left out", table.path, field)
            continue
        name = _free_name("title" if spec.kind == "text" else feature_name(field), columns)
        columns[name] = column
        specs.append(FeatureSpec(name, spec.kind, dim=spec.dim, cardinality=spec.cardinality))
    return columns, tuple(specs)


def _free_name(name: str, taken: dict) -> str:
    base, n = name, 1
    while name in taken or name in RESERVED:
        n += 1
        name = f"{base}_{n}"
    return name


# Each returns (spec, one value per node); the spec's name is set by node_features.
def _title(values: list) -> tuple[FeatureSpec | None, list]:
    titles = [v if isinstance(v, str) or v is None else " ".join(v) for v in values]
    titles = [None if t in MISSING_TITLES else t or None for t in titles]
    return (FeatureSpec("f", "text") if any(t is not None for t in titles) else None), titles


def _categorical(values: list) -> tuple[FeatureSpec | None, list]:
    vocab = Vocab(v for v in values if v is not None)
    codes = [None if v is None else vocab.index[v] for v in values]
    return (FeatureSpec("f", "categorical", cardinality=len(vocab.raw)) if vocab.raw else None), codes


def _token_list(values: list) -> tuple[FeatureSpec | None, list]:
    vocab = Vocab(t for v in values for t in v or ())
    codes = [[vocab.index[t] for t in v] if v else None for v in values]
    return (FeatureSpec("f", "token_list", cardinality=len(vocab.raw)) if vocab.raw else None), codes


def _check_fits(table: AtomicTable, field: str, row: int, value: float) -> None:
    if abs(value) > FLOAT32_MAX:                 # inf, or 1e39: no float32 holds it
        raise GraphFormatError(f"{table.where(row, field)}: value {value} does not fit a float32 feature")


def _dense(table: AtomicTable, field: str, values: list) -> tuple[FeatureSpec | None, list]:
    for row, v in enumerate(table.columns[field]):
        _check_fits(table, field, row, v)
    out = [None if v is None or math.isnan(v) else v for v in values]
    return (FeatureSpec("f", "dense") if any(v is not None for v in out) else None), out


def _dense_seq(table: AtomicTable, field: str, values: list) -> tuple[FeatureSpec | None, list]:
    for row, seq in enumerate(table.columns[field]):
        for v in seq:
            _check_fits(table, field, row, v)
    seqs = [None if not v or any(math.isnan(x) for x in v) else v for v in values]
    dim = max((len(v) for v in seqs if v is not None), default=0)
    if dim == 0:
        return None, seqs
    if dim == 1:
        return FeatureSpec("f", "dense"), [None if v is None else v[0] for v in seqs]
    return FeatureSpec("f", "dense", dim=dim), [None if v is None else v + [0.0] * (dim - len(v)) for v in seqs]
