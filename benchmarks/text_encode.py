"""Text encoding throughput: ``hetrec data text`` on a graph of N item texts.

    python benchmarks/text_encode.py --texts 20000 --workers 1,2 --repeats 3

The graph has N items whose titles are MovieLens titles with a number appended (so no two
texts are equal) and a genre each; the job encodes them into ``title_emb`` [384]. Reported
per worker count: the median wall time of ``encode_text`` (actor start and model load
included), texts/s, and the bytes the feature adds to the graph directory.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_io import write_result  # noqa: E402
from graphs.schema import EdgeType, FeatureSpec, GraphSchema, NodeType  # noqa: E402
from graphs.store import GraphDir, GraphWriter  # noqa: E402
from graphs.text_features import TextConfig, encode_text  # noqa: E402


def _graph(path: Path, n: int, titles: list[str], genres: list[str]) -> None:
    schema = GraphSchema((NodeType("item", 0, (FeatureSpec("title", "text"),)), NodeType("genre", 0)),
                         (EdgeType("item", "has_genre", "genre"),), name="texts")
    rng = np.random.default_rng(0)
    with GraphWriter(path, schema) as w:
        w.write_nodes("item", {"id": np.arange(n), "raw_id": [str(i) for i in range(n)],
                               "title": [f"{titles[i % len(titles)]} {i // len(titles) + 1}" for i in range(n)]})
        w.write_nodes("genre", {"id": np.arange(len(genres)), "raw_id": genres})
        w.write_edges("item__has_genre__genre", {"src": np.arange(n), "dst": rng.integers(0, len(genres), n)})


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=20000)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--movielens", default="runs/ml-100k", help="Graph whose movie titles and genres are used.")
    p.add_argument("--out", default="benchmarks/results/text_encode.json")
    args = p.parse_args()

    source = GraphDir(args.movielens)
    titles = [t for t in source.read_nodes("movie", ["id", "title"]).column("title").to_pylist() if t]
    genres = source.read_nodes("genre", ["id", "raw_id"]).column("raw_id").to_pylist()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        _graph(base, args.texts, titles, genres)
        before = _size(base)
        for workers in [int(w) for w in args.workers.split(",")]:
            seconds = []
            for r in range(args.repeats):
                out = Path(tmp) / f"out-{workers}-{r}"
                t0 = time.perf_counter()
                encode_text(base, out, TextConfig(workers=workers, batch_size=args.batch_size), log=lambda _: None)
                seconds.append(time.perf_counter() - t0)
                added = _size(out) - before
                shutil.rmtree(out)
            median = statistics.median(seconds)
            rows.append({"workers": workers, "seconds": seconds, "median_seconds": median,
                         "texts_per_s": args.texts / median, "added_bytes": added,
                         "added_bytes_per_text": added / args.texts})
            print(f"{workers} worker(s): {args.texts:,} texts in {median:.1f} s (median of {args.repeats}), "
                  f"{args.texts / median:,.0f} texts/s; +{added / 2**20:.1f} MiB ({added / args.texts:,.0f} B/text)")
    write_result(args.out, {"texts": args.texts, "graph_bytes_before": before, "rows": rows,
                            "note": "wall time of encode_text: Ray Data job, actor start and model load "
                                    "included; on a 2-core box the driver shares the cores"})


if __name__ == "__main__":
    main()
