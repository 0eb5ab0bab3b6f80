"""A serving run whose item type has N items, for the cost of retrieval and ranking at scale.

    python benchmarks/catalogue.py --run RUN_DIR --items 1000000   # catalogues + ANN recall grid -> JSON

The first items are the trained run's, with their interactions, attributes and ranker; the
others are new item nodes (raw ids ``cat-<id>``, no attributes, no interactions, so the
ranker reads its unknown-item row for them) whose embeddings are a random trained item's
plus Gaussian noise of ``noise`` times the per-dimension std: the catalogue keeps the
trained one's cluster structure instead of being uniform noise, on which no ANN index
works. The graph's other files are linked, not copied.

:func:`ann_recall` measures the index the Retriever builds (``serve/index.py``, its
defaults or a given ``IndexConfig``) against exact search: recall@k over user queries,
build time, index bytes and per-query search time.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmarks.results_io import write_result  # noqa: E402
from graphs.store import GraphDir  # noqa: E402
from serve.index import IndexConfig, ItemIndex, index_spec  # noqa: E402
from serve.live import LiveCatalog  # noqa: E402
from trainers.run_dir import RunDir  # noqa: E402


def _link_tree(src: Path, dst: Path, skip: set[str]) -> None:
    """``dst`` mirrors ``src`` with symlinks to its entries, except the names in ``skip``."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        if entry.name not in skip:
            os.symlink(entry.resolve(), dst / entry.name)


def build_catalogue_run(run: str | Path, items: int, out: str | Path, noise: float = 0.5, seed: int = 0) -> Path:
    """A copy of ``run`` under ``out`` whose item type has ``items`` items; returns its path."""
    src, out = RunDir(run), Path(out)
    item_type = LiveCatalog.types(run)[1]
    graph = GraphDir(src.graph, validate="none")
    have = graph.schema.node_type(item_type).count
    if items <= have:
        raise ValueError(f"--items {items} must be more than the run's {have} {item_type} items")
    if out.exists():
        shutil.rmtree(out)
    # the graph: every file linked, the item type's table gets a second part with the new rows
    g = out / "graph"
    _link_tree(Path(src.graph), g, {"nodes", "schema.json"})
    _link_tree(Path(src.graph) / "nodes", g / "nodes", {item_type})
    _link_tree(Path(src.graph) / "nodes" / item_type, g / "nodes" / item_type, set())
    table = graph.read_nodes(item_type)
    ids = pa.array(np.arange(have, items, dtype=np.int64))
    extra = pa.table({name: ids if name == "id" else
                      pa.array([f"cat-{i}" for i in range(have, items)]) if name == "raw_id" else
                      pa.nulls(items - have, table.schema.field(name).type) for name in table.column_names},
                     schema=table.schema)
    pq.write_table(extra, g / "nodes" / item_type / "part-99999.parquet")
    schema = json.loads((Path(src.graph) / "schema.json").read_text())
    for nt in schema["node_types"]:
        if nt["name"] == item_type:
            nt["count"] = items
    (g / "schema.json").write_text(json.dumps(schema, indent=1))
    # the run: the same config but this graph, the same ranker and shards, new item embeddings
    r = out / "run"
    _link_tree(src.path, r, {"config.json", "embeddings", "updates", "serve.token", "ray"})
    config = json.loads((src.path / "config.json").read_text())
    config["graph"] = str(g.resolve())
    (r / "config.json").write_text(json.dumps(config, indent=1))
    version = (src.path / "embeddings" / "LATEST").read_text().strip()
    vdir = r / "embeddings" / version
    _link_tree(src.path / "embeddings" / version, vdir, {f"{item_type}.npy", "prior.npy", "meta.json"})
    trained = np.load(src.path / "embeddings" / version / f"{item_type}.npy")
    rng = np.random.default_rng(seed)
    new = trained[rng.integers(0, have, items - have)]
    new += rng.standard_normal(new.shape, dtype=np.float32) * (noise * trained.std(0))
    np.save(vdir / f"{item_type}.npy", np.concatenate([trained, new]).astype(np.float32))
    prior_file = src.path / "embeddings" / version / "prior.npy"
    if prior_file.is_file():
        prior = np.load(prior_file)
        np.save(vdir / "prior.npy", np.concatenate([prior, np.zeros(items - have, prior.dtype)]))
    meta = json.loads((src.path / "embeddings" / version / "meta.json").read_text())
    meta["counts"][item_type] = items
    (vdir / "meta.json").write_text(json.dumps(meta, indent=1))
    (r / "embeddings" / "LATEST").write_text(version)
    return r


def ann_recall(run: str | Path, queries: int = 1000, k: int = 200, cfg: IndexConfig = IndexConfig(),
               seed: int = 0) -> dict:
    """The Retriever's index over ``run``'s items against exact search, on ``queries`` user
    embeddings (users drawn at random, plus a little noise so repeats differ)."""
    from trainers.ille.embedding_view import EmbeddingView

    user_type, item_type = LiveCatalog.types(run)
    view = EmbeddingView(run)
    users = view.rows(user_type, np.arange(view.count(user_type)))
    rng = np.random.default_rng(seed)
    q = users[rng.integers(0, len(users), queries)]
    q = (q + 0.05 * users.std(0) * rng.standard_normal(q.shape)).astype(np.float32)
    t0 = time.perf_counter()
    index = ItemIndex.from_view(view, item_type, cfg)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    got, _ = index.search(q, k)
    search_ms = (time.perf_counter() - t0) * 1000 / queries
    vectors = view.rows(item_type, np.arange(view.count(item_type)))
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(np.ascontiguousarray(vectors, dtype=np.float32))
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    _, truth = exact.search(np.ascontiguousarray(qn, dtype=np.float32), k)
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(got, truth)])
    return {"items": int(len(vectors)), "index": index_spec(len(vectors), cfg), "nprobe": cfg.nprobe,
            "hnsw_ef_search": cfg.hnsw_ef_search, f"ann_recall@{k}": float(recall), "queries": queries,
            "build_s": build_s, "index_bytes": int(faiss.serialize_index(index.main).nbytes),
            "search_ms_per_query": search_ms}


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="A trained, exported run.")
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--work", default="/tmp/hetrec-catalogue")
    ap.add_argument("--noise", default="0.5,1.0", help="Noise levels of the new items, one catalogue each.")
    ap.add_argument("--nprobe", default="16,32,64", help="IVF lists probed, one index each.")
    ap.add_argument("--train-per-list", default="40", help="IVF training points per list, one index each.")
    ap.add_argument("--out", default="benchmarks/results/catalogue_ann.json")
    args = ap.parse_args()
    rows = []
    for noise in [float(x) for x in args.noise.split(",")]:
        run = build_catalogue_run(args.run, args.items, Path(args.work) / f"noise-{noise}", noise=noise)
        for per_list in [int(x) for x in args.train_per_list.split(",")]:
            for nprobe in [int(x) for x in args.nprobe.split(",")]:
                row = {"noise": noise, "train_per_list": per_list,
                       **ann_recall(run, cfg=IndexConfig(nprobe=nprobe, train_per_list=per_list))}
                print(json.dumps(row), flush=True)
                rows.append(row)
    write_result(args.out, {"rows": rows, "items": args.items, "source_run": str(args.run)})


if __name__ == "__main__":
    main()
