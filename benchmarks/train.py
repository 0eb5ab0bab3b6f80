"""Benchmark: HetSGFormer training throughput (1 and 2 workers) against LightGCN, and scale.

    python benchmarks/train.py                                   # MovieLens-100K + synthetic 1e6/1e7/1e8
    python benchmarks/train.py --parts scale --scale-sizes 1e6   # quicker

MovieLens part (random split, seed 0, train interactions only): HetSGFormer with 1 and
2 Ray Train workers, ``--epochs`` each, edges/s and seconds per epoch (median over the
epochs after the first, which pays for start-up); LightGCN (the harness's baseline) timed
over its own epochs in the same run. Ratios are taken within this run.

Scale part: synthetic graphs of ``--scale-sizes`` edges are generated, partitioned (8
shards) and trained for ``--scale-steps`` steps on 2 workers with the default
``TrainConfig``; it reports steps/s, the generate and partition times, and the peak RSS
of each worker (``ru_maxrss``, split into anonymous and file-backed pages), which shows
what grows with the graph (the shard store is memory-mapped; the ID table is ``v_max``
rows whatever the node count). The steps/s include the workers' start (first pages).

Writes ``benchmarks/results/train.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402

from graphs.partition import PartitionConfig, partition_graph  # noqa: E402
from graphs.synthetic import generate_synthetic  # noqa: E402
from trainers.evaluation.baselines import LIGHTGCN_CONFIG, fit_lightgcn  # noqa: E402
from trainers.evaluation.evaluate import make_split  # noqa: E402
from trainers.evaluation.split_graph import write_split_graph  # noqa: E402
from trainers.evaluation.splits import load_interactions  # noqa: E402
from trainers.hetsgformer.train import TrainConfig, train  # noqa: E402


SETTINGS: dict = {}   # TrainConfig overrides from --set


def hetsgformer_epochs(graph: Path, run: Path, workers: int, epochs: int, **kw) -> list[dict]:
    shutil.rmtree(run, ignore_errors=True)
    train(graph, run, TrainConfig(workers=workers, epochs=epochs, **{**SETTINGS, **kw}))
    return json.loads((run / "metrics.json").read_text())["epochs"]


def summarise(rows: list[dict]) -> dict:
    steady = rows[1:] or rows  # the first epoch pays for start-up (imports, page cache)
    return {"epoch_s": statistics.median(r["epoch_s"] for r in steady),
            "edges_per_s": statistics.median(r["edges_per_s"] for r in steady),
            "max_worker_rss_mb": max(r["max_rss_mb"] for r in rows), "epochs": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--movielens", default="runs/demo/ml-100k", help="MovieLens graph directory (make demo builds it)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--scale-sizes", default="1e6,1e7,1e8")
    ap.add_argument("--scale-steps", type=int, default=30)
    ap.add_argument("--parts", default="movielens,scale", help="which parts to run: movielens, scale")
    ap.add_argument("--work", default="/tmp/hetrec-bench-train")
    ap.add_argument("--out", default="benchmarks/results/train.json")
    ap.add_argument("--set", default="{}", help="TrainConfig overrides as JSON, e.g. '{\"fanout_per\": \"node\"}'")
    args = ap.parse_args()
    SETTINGS.update({k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(args.set).items()})
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ray.init(log_to_driver=False)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "settings": SETTINGS,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "ray": ray.__version__}}

    out = Path(args.out)
    if out.is_file():  # keep the other part's last figures
        result = {**json.loads(out.read_text()), **result}
    if "movielens" in args.parts:
        result["movielens"] = {**movielens(args, work), "command": result["command"], "settings": SETTINGS}
    if "scale" in args.parts:
        result["scale"] = {**scale(args, work), "command": result["command"], "settings": SETTINGS}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


def movielens(args, work: Path) -> dict:
    inter = load_interactions(args.movielens)
    split = make_split(inter, "random", 0)
    graph = write_split_graph(args.movielens, work / "ml-train", split.train, "user__rates__movie", overwrite=True)
    ml = {"train_edges": len(split.train)}
    for workers in (1, 2):
        ml[f"hetsgformer_{workers}w"] = summarise(hetsgformer_epochs(graph, work / f"ml-{workers}w", workers,
                                                                     args.epochs))
        print(f"hetsgformer {workers} worker(s): {ml[f'hetsgformer_{workers}w']['edges_per_s']:,.0f} edges/s",
              flush=True)
    cfg = replace(LIGHTGCN_CONFIG, epochs=10)  # the harness's LightGCN setting, fewer epochs
    t0 = time.perf_counter()
    fit_lightgcn(split.train, 0, config=cfg)
    seconds = (time.perf_counter() - t0) / cfg.epochs
    ml["lightgcn"] = {"epoch_s": seconds, "edges_per_s": len(split.train) / seconds, "epochs": cfg.epochs}
    print(f"lightgcn: {ml['lightgcn']['edges_per_s']:,.0f} edges/s", flush=True)
    ml["ratio_2w_over_1w"] = ml["hetsgformer_2w"]["edges_per_s"] / ml["hetsgformer_1w"]["edges_per_s"]
    ml["epoch_ratio_2w_over_lightgcn"] = ml["hetsgformer_2w"]["epoch_s"] / seconds
    return ml


def scale(args, work: Path) -> dict:
    found = {}
    for size in [int(float(s)) for s in args.scale_sizes.split(",")]:
        g = work / f"syn-{size}"
        t0 = time.perf_counter()
        if not (g / "schema.json").is_file():
            generate_synthetic(g, size, seed=0, overwrite=True)
        generate_s = time.perf_counter() - t0
        parts = work / f"syn-parts-{size}"
        t0 = time.perf_counter()
        if not (parts / "meta.json").is_file():
            partition_graph(g, parts, PartitionConfig(num_parts=8))
        partition_s = time.perf_counter() - t0
        rows = hetsgformer_epochs(parts, work / f"syn-run-{size}", 2, 1, steps_per_epoch=args.scale_steps)
        last = rows[-1]
        found[str(size)] = {**summarise(rows), "steps": args.scale_steps, "steps_per_s": args.scale_steps / last["epoch_s"],
                            "generate_s": generate_s, "partition_s": partition_s,
                            "rss_anon_mb": last.get("rss_anon_mb"), "rss_file_mb": last.get("rss_file_mb")}
        print(f"synthetic {size:.0e} edges: {found[str(size)]['steps_per_s']:.2f} steps/s, "
              f"{found[str(size)]['edges_per_s']:,.0f} edges/s, worker peak {found[str(size)]['max_worker_rss_mb']:,.0f} MB "
              f"(anonymous {last.get('rss_anon_mb')} MB, file-backed {last.get('rss_file_mb')} MB)", flush=True)
    return found


if __name__ == "__main__":
    main()
