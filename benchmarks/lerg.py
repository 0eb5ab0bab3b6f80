"""LERG at scale: the device bundle's size and the reference scorer's time and memory on
power-law interaction graphs of 1e5 and 1e6 entities (users + items).

    python benchmarks/lerg.py --entities 1e4,1e5,1e6 --steps 5 --movielens runs/ml-100k

For each size: 70% users, 30% items, ``--per-user`` interactions a user with Zipf item
popularity; LERG (the default config) trains for ``--steps`` full-graph steps only (size,
time and memory do not depend on how far it trained), then the bundle is written and read
back (with ``--pq`` bytes of PQ scoring codes an item), and the reference scorer is timed in
both modes: propagating (decode + propagation over the rewired graph, once per bundle) and
from the PQ codes; per user, fine-tune + score of every item (median of ``--users``). Peak
memory is tracemalloc's (numpy's allocations included): over the load, over one user, and
over both (``peak_mb``: what a device must have). ``--movielens GRAPH`` first scores the
device scorer's recommendations against the server's (:func:`device_quality`). Writes ``benchmarks/results/lerg_scale.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.results_io import write_result  # noqa: E402
from trainers.evaluation.splits import Interactions  # noqa: E402
from trainers.lerg.bundle import bundle_sizes, read_bundle, write_bundle  # noqa: E402
from trainers.lerg.device import DeviceScorer  # noqa: E402
from trainers.lerg.model import LERGConfig, fit_lerg  # noqa: E402


def power_law(entities: int, per_user: int, seed: int) -> Interactions:
    rng = np.random.default_rng(seed)
    users, items = int(entities * 0.7), entities - int(entities * 0.7)
    user = np.repeat(np.arange(users), per_user)
    rank = np.minimum((rng.pareto(1.0, len(user)) * items / 50).astype(np.int64), items - 1)
    item = rng.permutation(items)[rank]
    return Interactions(user, item, np.zeros(len(user), dtype=np.int64), users, items)


def measure(entities: int, args) -> dict:
    inter = power_law(entities, args.per_user, args.seed)
    cfg = LERGConfig(epochs=1, finetune_epochs=1, max_steps_per_epoch=args.steps)
    t0 = time.perf_counter()
    state = fit_lerg(inter, args.seed, replace(cfg, batch_size=max(2048, len(inter) // args.steps)), log=print)
    train_s = time.perf_counter() - t0
    row = {"entities": entities, "interactions": len(inter), "train_s": train_s, "retained": int(state.retained.sum()),
           "macs_ratio": state.macs() / state.full_macs}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_bundle(state, Path(tmp) / "device.npz", pq_subvectors=args.pq)
        row.update(bundle_sizes(read_bundle(path).arrays), file_bytes=path.stat().st_size)
        for mode, propagate in (("propagate", True), ("pq", False)):
            if propagate and entities > args.max_propagate:
                continue
            row[mode] = device_figures(path, propagate, inter, args)
    return row


def device_figures(path: Path, propagate: bool, inter: Interactions, args) -> dict:
    """Load the bundle and recommend for ``args.users`` users: times and tracemalloc peaks."""
    users = np.random.default_rng(args.seed).choice(inter.num_users, args.users, replace=False)
    locals_ = [inter.item[inter.user == u] for u in users]  # the benchmark's own arrays stay out of the count
    tracemalloc.start()
    t0 = time.perf_counter()
    scorer = DeviceScorer.load(path, propagate=propagate)
    load_s = time.perf_counter() - t0
    load_peak = tracemalloc.get_traced_memory()[1]
    times, peaks = [], []
    for user, local in zip(users, locals_):
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        scorer.recommend(int(user), local, k=20)
        times.append(time.perf_counter() - t0)
        peaks.append(tracemalloc.get_traced_memory()[1] - base)
    resident = tracemalloc.get_traced_memory()[0]
    total_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"load_s": load_s, "load_peak_mb": load_peak / 2**20, "resident_mb": resident / 2**20,
            "peak_mb": max(load_peak, total_peak) / 2**20, "user_ms_median": 1e3 * float(np.median(times)),
            "user_ms_max": 1e3 * float(np.max(times)), "user_peak_mb_median": float(np.median(peaks)) / 2**20}


def device_quality(graph: str, seed: int, pq: int) -> dict:
    """NDCG@20 on MovieLens' random split (``seed``) of the server's scores and of the device
    scorer's, propagating (users as the bundle has them, then fine-tuned on their training
    interactions) and from PQ codes (users from their training interactions, fine-tuned)."""
    import torch

    from trainers.evaluation.evaluate import fit_part, make_split
    from trainers.evaluation.metrics import evaluate_scores
    from trainers.evaluation.splits import load_interactions

    split = make_split(load_interactions(graph, None), "random", seed)
    train = fit_part(split)
    state = fit_lerg(train, seed, LERGConfig(), log=print)
    out = {"server": evaluate_scores(state.score_fn(), split.test, [train, split.valid], (20,))["ndcg@20"]}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_bundle(state, Path(tmp) / "device.npz", pq_subvectors=pq)
        for mode, propagate in (("device_propagate", True), ("device_pq", False)):
            scorer = DeviceScorer.load(path, propagate=propagate)
            rows = np.stack([scorer.item_scores(scorer.finetune(u, train.item[train.user == u]))
                             for u in range(train.num_users)])  # [U, N]
            table = torch.from_numpy(rows)
            out[mode] = evaluate_scores(lambda u: table[u], split.test, [train, split.valid], (20,))["ndcg@20"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", default="1e5,1e6")
    parser.add_argument("--per-user", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pq", type=int, default=16, help="PQ scoring bytes an item in the bundle.")
    parser.add_argument("--max-propagate", type=float, default=2e6,
                        help="Largest entity count whose propagating scorer is measured too.")
    parser.add_argument("--movielens", default=None, help="Also score the device scorer on this graph's random split.")
    parser.add_argument("--out", default="benchmarks/results/lerg_scale.json")
    args = parser.parse_args()
    quality = device_quality(args.movielens, args.seed, args.pq) if args.movielens else None
    if quality:
        print(quality, flush=True)
    rows = []
    for n in (int(float(x)) for x in args.entities.split(",")):
        rows.append(measure(n, args))
        print(rows[-1], flush=True)
    write_result(args.out, {"config": vars(args), "movielens_ndcg@20": quality, "rows": rows})


if __name__ == "__main__":
    main()
