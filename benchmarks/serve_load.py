"""Load test of the Serve application: a real HTTP client on loopback, bounded in count and time.

    python benchmarks/serve_load.py --run RUN_DIR --rates 50,100,200 --seconds 15
    python benchmarks/serve_load.py --run RUN_DIR --catalogue 1000000      # a 1e6-item catalogue

RUN_DIR holds embeddings and a trained ranker (without ``--run``, a small one is trained
on MovieLens-100K first). In one run it measures:

* floor: the in-process retrieve + rank call (the same Retriever and Ranker classes, no
  Serve, no HTTP), p50/p95/p99 over ``--floor-requests`` users;
* fixed rates: open-loop ``GET /recommend`` arrivals at each rate for ``--seconds`` (random
  known users, k=10, N=``--candidates``), p50/p95/p99 latency, errors, achieved rate;
* maximum sustainable rate: the highest rate sustained (achieved >= 95% of offered, errors
  <= 1%, p99 <= ``--max-p99-ms``): from the best of ``--rates`` (or of ``--max-rates``,
  tried when all of those are sustained) upwards in ``--resolution`` QPS steps until one is
  not sustained; every rate starts once the service is idle (the queue of a failed rate
  drained);
* overload: twice the maximum sustainable rate; goodput (answered/s) against that rate,
  the p99 of the answered requests, and the requests shed (503 with ``Retry-After``);
* overhead: Serve p50 at the lowest sustained rate minus the floor p50;
* freshness: for ``--fresh-users`` new users, time from ``POST /events`` to the first
  ``/recommend`` that is personalised (``fallback`` false);
* publish: a new embeddings version moved into ``LATEST`` under ``--publish-qps`` reads
  (``benchmarks/publish.py``): seconds until every answer carries it, failed reads, p99.

Each of ``--layouts`` is deployed in turn and measured the same way: ``split`` (Ingress ->
Retriever -> Ranker deployments) and ``colocated`` (the Ingress retrieves and ranks
in-process, ``ServeConfig.colocate``, the default). The HTTP ingress is HAProxy, as
``hetrec serve`` has it (``--serve-proxy``: Serve's Python proxy).

The load generator shares the machine's cores with the service. Writes
``benchmarks/results/serve_load.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402

from benchmarks.publish import publish_under_load  # noqa: E402
from benchmarks.results_io import write_result  # noqa: E402
from serve.config import ServeConfig  # noqa: E402
from serve.haproxy import enable_haproxy, free_port  # noqa: E402


def percentiles(ms: list[float]) -> dict[str, float]:
    if not ms:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan")}
    return {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)}


def prepare_run(work: Path, graph: str) -> Path:
    """A small run: 1 short HetSGFormer epoch, exported, plus a short DSGL ranker."""
    from trainers.hetsgformer.export import export_embeddings
    from trainers.hetsgformer.train import TrainConfig, train
    from trainers.ranking.train import RankerConfig, train_ranker

    run = work / "run"
    if not (run / "embeddings" / "LATEST").is_file():
        train(graph, run, TrainConfig(workers=2, epochs=1, steps_per_epoch=60))
        export_embeddings(run, actors=1)
    if not (run / "ranker" / "meta.json").is_file():
        train_ranker(graph, run / "ranker", RankerConfig(workers=2, epochs=1, steps_per_epoch=60))
    return run


def floor(run: Path, users: np.ndarray, candidates: int) -> dict:
    """In-process retrieve + rank, no Serve: the latency floor, on a second pass over the
    users (``cold``: the first pass, whose candidates fill the ranker's item cache)."""
    from serve.config import ServeConfig
    from serve.deployments import Ranker, Retriever

    cfg = ServeConfig(run_dir=str(run), candidates=candidates)
    retriever, ranker = Retriever(cfg), Ranker(cfg)
    loop = asyncio.new_event_loop()            # one running loop, as in a replica
    passes = []
    for _ in range(2):
        ms = []
        for u in users.tolist():
            t0 = time.perf_counter()
            seen = ranker.catalog.history(u)
            got = loop.run_until_complete(retriever.retrieve(u, candidates, seen.tolist()))   # an async method
            ranker.score([(u, got["ids"])])
            ms.append((time.perf_counter() - t0) * 1000)
        passes.append(percentiles(ms))
    loop.close()
    return {**passes[1], "cold": passes[0]}


async def fixed_rate(url: str, raw_users: list[str], rate: float, seconds: float, timeout_s: float) -> dict:
    """Open-loop arrivals at ``rate``/s for ``seconds``; latencies of the answered requests."""
    n = int(rate * seconds)
    rng = np.random.default_rng(int(rate))
    picks = rng.choice(len(raw_users), n)
    ms, errors, shed = [], 0, 0
    conn = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        start = time.perf_counter()

        async def one(i: int) -> None:
            nonlocal errors, shed
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            t0 = time.perf_counter()
            try:
                async with session.get(f"{url}/recommend", params={"user_id": raw_users[picks[i]], "k": 10}) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                        shed += r.status == 503
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                errors += 1
                return
            ms.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - start
    return {"offered_qps": rate, "requests": n, "errors": errors, "shed_503": shed, "error_rate": errors / max(n, 1),
            "achieved_qps": len(ms) / elapsed, **percentiles(ms)}


def drain(url: str, quiet_s: float = 3.0) -> None:
    """Wait until requests queued by an overloaded step are gone: a probe answers in under
    a second, then ``quiet_s`` more."""
    import urllib.request

    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5):
                pass
        except OSError:
            pass
        if time.perf_counter() - t0 < 1.0:
            break
    time.sleep(quiet_s)


async def freshness(url: str, users: int, token: str) -> list[float]:
    out = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        for j in range(users):
            raw = f"load-fresh-{time.time_ns()}-{j}"
            events = [{"user_id": raw, "item_id": m, "ts": 893_286_638 + s} for s, m in enumerate(["50", "172", "181"])]
            t0 = time.perf_counter()
            async with session.post(f"{url}/events", json={"events": events}) as r:
                assert r.status == 200, await r.text()
            while time.perf_counter() - t0 < 30:
                async with session.get(f"{url}/recommend", params={"user_id": raw, "k": 10}) as r:
                    if not (await r.json())["fallback"]:
                        break
                await asyncio.sleep(0.02)
            out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=None, help="A run with embeddings and a ranker (default: train a small one).")
    ap.add_argument("--movielens", default="runs/demo/ml-100k")
    ap.add_argument("--work", default="/tmp/hetrec-bench-serve")
    ap.add_argument("--rates", default="50,100,200")
    ap.add_argument("--max-rates", default="300,400,600,800")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--floor-requests", type=int, default=300)
    ap.add_argument("--fresh-users", type=int, default=5)
    ap.add_argument("--max-p99-ms", type=float, default=200)
    ap.add_argument("--resolution", type=float, default=10, help="QPS step at which the rate search stops.")
    ap.add_argument("--timeout-s", type=float, default=5)
    ap.add_argument("--max-replicas", type=int, default=2, help="Autoscaling bound of each deployment.")
    ap.add_argument("--max-inflight", type=int, default=None,
                    help="ServeConfig.max_inflight (requests in progress per Ingress replica before 503s).")
    ap.add_argument("--layouts", default="colocated", help="Layouts to measure, in turn (split, colocated).")
    ap.add_argument("--catalogue", type=int, default=None,
                    help="Serve a copy of the run whose item type has this many items (benchmarks/catalogue.py), "
                         "after measuring its ANN recall@200 against exact search.")
    ap.add_argument("--catalogue-noise", type=float, default=0.5,
                    help="The new items' noise around trained items, in per-dimension stds.")
    ap.add_argument("--publish-qps", type=float, default=50,
                    help="Rate of the reads while a new embeddings version is published (adds a version to the "
                         "run; 0: skip).")
    ap.add_argument("--serve-proxy", action="store_true",
                    help="Serve's Python HTTP proxy instead of HAProxy (the default of `hetrec serve`).")
    ap.add_argument("--out", default="benchmarks/results/serve_load.json")
    args = ap.parse_args()
    bad = [layout for layout in args.layouts.split(",") if layout not in ("split", "colocated")]
    if bad:
        raise SystemExit(f"--layouts: unknown layout(s) {bad} (split, colocated)")
    if not args.serve_proxy:
        enable_haproxy(stats_port=None, metrics_port=None)   # as `hetrec serve` has it
    ray.init(log_to_driver=False)
    run = Path(args.run) if args.run else prepare_run(Path(args.work), args.movielens)
    result = {}
    if args.catalogue:
        from benchmarks.catalogue import ann_recall, build_catalogue_run

        run = build_catalogue_run(run, args.catalogue, Path(args.work) / f"catalogue-{args.catalogue}",
                                  noise=args.catalogue_noise)
        result["ann"] = ann_recall(run)
        print(f"catalogue of {args.catalogue:,} items: {result['ann']}", flush=True)
    from graphs.store import GraphDir
    from trainers.run_dir import RunDir

    graph = RunDir(run).graph
    raw_users = GraphDir(graph, validate="none").read_nodes("user", columns=["id", "raw_id"])["raw_id"].to_pylist()
    users = np.random.default_rng(0).choice(len(raw_users), args.floor_requests)
    result["floor_ms"] = floor(run, users, args.candidates)
    print(f"floor (in-process retrieve + rank, N={args.candidates}): {result['floor_ms']}", flush=True)
    result["layouts"] = {}
    for layout in args.layouts.split(","):
        result["layouts"][layout] = measure(run, raw_users, layout, args, result["floor_ms"]["p50"])
    first = result["layouts"][args.layouts.split(",")[0]]
    at_100 = [r for r in first["rates"] if r["offered_qps"] == 100]
    write_result(args.out, {**result, "catalogue": args.catalogue or "run",
                            "ann_recall@200": result["ann"]["ann_recall@200"] if "ann" in result else None,
                            "p99_ms_at_100qps": at_100[0]["p99"] if at_100 else None,
                            "overhead_ms": first["overhead_p50_ms"],
                            "publish_s": first["publish"]["last_old_s"] if "publish" in first else None,
                            "ingress": "serve proxy" if args.serve_proxy else "haproxy",
                            "candidates": args.candidates, "max_replicas": args.max_replicas,
                            "max_inflight": args.max_inflight or ServeConfig.max_inflight,
                            "seconds_per_rate": args.seconds, "run": str(run)})


def measure(run: Path, raw_users: list[str], layout: str, args, floor_p50: float) -> dict:
    """Deploy the app in ``layout``, run the fixed rates, the rate search and freshness."""
    from serve.app import start
    from serve.auth import write_token_file

    port = free_port()
    token = write_token_file(run / "serve.token")
    start(ServeConfig(run_dir=str(run), candidates=args.candidates, max_replicas=args.max_replicas,
                      token_file=str(run / "serve.token"), colocate=layout == "colocated",
                      **({"max_inflight": args.max_inflight} if args.max_inflight else {})), port=port)
    url = f"http://127.0.0.1:{port}"
    asyncio.run(fixed_rate(url, raw_users, 20, 3, args.timeout_s))          # warm-up, not reported
    result = {"rates": []}

    def sustained(row: dict) -> bool:
        return (row["achieved_qps"] >= 0.95 * row["offered_qps"] and row["error_rate"] <= 0.01
                and row["p99"] <= args.max_p99_ms)

    def one(rate: float) -> dict:
        drain(url)                                      # each rate starts from an idle service
        row = asyncio.run(fixed_rate(url, raw_users, rate, args.seconds, args.timeout_s))
        result["rates"].append(row)
        print(f"{layout:>9} {rate:5.0f} QPS: p50 {row['p50']:.1f} p95 {row['p95']:.1f} p99 {row['p99']:.1f} ms, "
              f"errors {row['errors']}, achieved {row['achieved_qps']:.1f}/s", flush=True)
        return row

    rows = [one(float(r)) for r in args.rates.split(",")]
    best = max((r["offered_qps"] for r in rows if sustained(r)), default=0.0)
    above = [r["offered_qps"] for r in rows if not sustained(r) and r["offered_qps"] > best]
    worst = min(above) if above else None
    if worst is None:
        for rate in [float(r) for r in args.max_rates.split(",")]:
            if not sustained(one(rate)):
                worst = rate
                break
            best = rate
    rate = best + args.resolution
    while worst is not None and rate < worst:        # upwards from the best
        if not sustained(one(rate)):
            break
        best, rate = rate, rate + args.resolution
    result["max_sustainable_qps"] = best
    if best:                                            # overload: twice the sustainable rate
        over = one(2 * best)
        result["overload"] = {"offered_qps": over["offered_qps"], "goodput_qps": over["achieved_qps"],
                              "goodput_share_of_sustainable": over["achieved_qps"] / best,
                              "answered_p99_ms": over["p99"], "shed_503": over["shed_503"],
                              "other_errors": over["errors"] - over["shed_503"]}
        print(f"{layout:>9} overload at {2 * best:.0f} QPS: goodput {over['achieved_qps']:.1f}/s "
              f"({over['achieved_qps'] / best:.0%} of {best:.0f}), answered p99 {over['p99']:.1f} ms, "
              f"{over['shed_503']} shed", flush=True)
    calm = sorted((r for r in result["rates"] if sustained(r)), key=lambda r: r["offered_qps"])
    result["overhead_at_qps"] = calm[0]["offered_qps"] if calm else None       # the lowest sustained rate
    result["overhead_p50_ms"] = calm[0]["p50"] - floor_p50 if calm else float("nan")
    fresh = asyncio.run(freshness(url, args.fresh_users, token))
    result["freshness_s"] = {"median": float(np.median(fresh)), "max": float(np.max(fresh)), "all": fresh}
    print(f"{layout:>9}: max sustainable {best:.0f} QPS; overhead at p50 {result['overhead_p50_ms']:.1f} ms "
          f"(at {result['overhead_at_qps']} QPS); "
          f"freshness median {np.median(fresh):.2f} s (max {np.max(fresh):.2f} s)", flush=True)
    if args.publish_qps:
        pub = asyncio.run(publish_under_load(url, raw_users, run, args.publish_qps, args.timeout_s))
        result["publish"] = pub
        print(f"{layout:>9}: {pub['version']} published under {args.publish_qps:.0f} QPS: first answer "
              f"{pub['first_new_s'] or float('nan'):.1f} s, every replica {pub['last_old_s']:.1f} s after the move; "
              f"{pub['failed']} of {pub['reads']} reads failed; p99 {pub['p99_before_ms']:.1f} ms before, "
              f"{pub['p99_during_ms']:.1f} ms during", flush=True)
    serve.shutdown()
    return result


if __name__ == "__main__":
    main()
