"""A/B of the in-process serving floor between two checkouts, interleaved on one run.

    git worktree add /tmp/floor-a <older commit>
    python benchmarks/serve_floor_ab.py --a /tmp/floor-a --b . --run /tmp/hetrec-bench-serve/run

Each round runs one process per checkout (A then B): it loads the Retriever and the
Ranker from that checkout, makes two passes over the same users (the second, item cache
warm, is reported) on one event loop, as a replica does, and prints its p50. Rounds
alternate so that the machine's drift hits both sides. Writes
``benchmarks/results/serve_floor_ab.json``: each side's p50s, their medians and the ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_io import write_result  # noqa: E402

ONE = """
import asyncio, json, sys, time
import numpy as np
sys.path.insert(0, {repo!r})
from serve.config import ServeConfig
from serve.deployments import Ranker, Retriever
cfg = ServeConfig(run_dir={run!r})
retriever, ranker = Retriever(cfg), Ranker(cfg)
users = np.random.default_rng(0).choice(ranker.catalog.base.num_users, {users})
loop = asyncio.new_event_loop()
for _ in range(2):
    ms = []
    for u in users.tolist():
        t0 = time.perf_counter()
        got = loop.run_until_complete(retriever.retrieve(u, 200, ranker.catalog.history(u).tolist()))
        ranker.score([(u, got["ids"])])
        ms.append((time.perf_counter() - t0) * 1000)
print(json.dumps({{"p50": float(np.median(ms))}}))
"""


def one(repo: str, run: str, users: int) -> float:
    out = subprocess.run([sys.executable, "-c", ONE.format(repo=str(Path(repo).resolve()), run=run, users=users)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["p50"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="Checkout A (e.g. a worktree of the older commit).")
    ap.add_argument("--b", default=".", help="Checkout B.")
    ap.add_argument("--run", required=True, help="A run with embeddings and a ranker.")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--out", default="benchmarks/results/serve_floor_ab.json")
    args = ap.parse_args()
    p50 = {"a": [], "b": []}
    for r in range(args.rounds):
        for side in ("a", "b"):
            p50[side].append(one(getattr(args, side), args.run, args.users))
        print(f"round {r + 1}: A {p50['a'][-1]:.2f} ms, B {p50['b'][-1]:.2f} ms", flush=True)
    med = {side: float(np.median(v)) for side, v in p50.items()}
    print(f"median p50: A {med['a']:.2f} ms, B {med['b']:.2f} ms, B/A {med['b'] / med['a']:.2f}")
    write_result(args.out, {"a": str(args.a), "b": str(args.b), "run": args.run, "users": args.users,
                            "p50_ms": p50, "median_p50_ms": med, "ratio_b_over_a": med["b"] / med["a"]})


if __name__ == "__main__":
    main()
