"""``make demo``: the hetrec pipeline on MovieLens-100K, on an embedded local Ray.

1. build the heterogeneous graph and print its stats;
2. partition it with Ray Data and print the partition stats;
3. train HetSGFormer on 2 Ray Train workers on the random split's train interactions
   (validation NDCG@10 every epoch), export the embeddings, and score the test split
   against the baselines (popularity, MF-BPR, LightGCN, R-GCN) in one table;
4. cold start: a new user arrives with three ratings; the ILLE update pool gives them an
   embedding without retraining, and their top 10 is printed before (popularity) and after;
5. serving: a DSGL ranker is trained on Ray Train, the Serve app (faiss retrieval + DSGL
   ranking + live updates) starts on loopback, and prints recommendations for a known
   user and for a brand-new user before and after posting their events; then shuts down.

Output goes to ``$HETREC_DEMO_DIR`` (default ``runs/demo``); ``$HETREC_DEMO_EPOCHS`` sets
the training epochs (default 4, a few minutes on 2 cores).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from graphs.movielens import build_movielens
from graphs.partition import PartitionConfig, partition_graph
from graphs.stats import format_stats, graph_stats


def run_demo(root: Path, num_parts: int = 4, epochs: int = 4) -> dict:
    """Run the stages above under ``root``; returns the evaluation results."""
    from trainers.evaluate import format_table, run_eval
    from trainers.train import TrainConfig

    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print("== 1. MovieLens-100K -> heterogeneous graph", flush=True)
    build_movielens(root / "ml-100k", overwrite=True)
    print(format_stats(graph_stats(root / "ml-100k")), flush=True)

    print(f"\n== 2. partition into {num_parts} shards with Ray Data (local Ray)", flush=True)
    partition_graph(root / "ml-100k", root / "ml-100k.parts", PartitionConfig(num_parts=num_parts), overwrite=True)
    print(format_stats(graph_stats(root / "ml-100k.parts")), flush=True)

    print(f"\n== 3. HetSGFormer: {epochs} epochs on 2 Ray Train workers, export, evaluate (random split)",
          flush=True)
    results = run_eval(root / "ml-100k", ["hetsgformer", "lightgcn", "mf", "pop", "rgcn"], protocol="random",
                       train_cfg=TrainConfig(workers=2, epochs=epochs), work_dir=root / "eval",
                       log=lambda line: print(line, flush=True))
    print(format_table({m: {k: v for k, v in r.items() if k in ("ndcg@10", "recall@20", "hit@10", "mrr@10")}
                        for m, r in results.items()}))
    run = root / "eval" / "hetsgformer-random-0" / "run"
    print(f"\ntraining curves: {run / 'metrics.png'}; embeddings: {run / 'embeddings'}")
    print("\n== 4. cold start: a new user with three ratings, embedded by ILLE (2 Ray actors)", flush=True)
    cold_start_step(run)
    print("\n== 5. serving: DSGL ranker (Ray Train), then Ray Serve on loopback", flush=True)
    serve_step(run)
    print(f"demo finished in {time.perf_counter() - t0:.1f} s; outputs in {root}")
    return results


def cold_start_step(run: Path, liked: tuple[str, ...] = ("Star Wars", "Empire Strikes Back", "Return of the Jedi"),
                    etype: str = "user__rates__movie") -> tuple[list[str], list[str]]:
    """Add one user who rated ``liked`` (title prefixes) to ``run``; print and return the top
    10 titles before (popularity: nothing is known of them) and after the ILLE update."""
    import json

    import numpy as np

    from cluster.update_pool import UpdatePool
    from graphs.store import GraphDir

    graph = GraphDir(json.loads((run / "config.json").read_text())["graph"], validate="none")
    titles = graph.read_nodes("movie", columns=["id", "title"])["title"].to_pylist()
    popular = np.bincount(graph.read_edges(etype)["dst"], minlength=len(titles)).astype(np.float64)
    picks = [i for name in liked for i in [next((i for i, t in enumerate(titles) if t and t.startswith(name)), None)]
             if i is not None] or list(np.argsort(-popular)[:3])          # not in this graph: 3 popular ones
    pool = UpdatePool(run, actors=2)
    try:
        user = pool.embeddings().count("user")
        events = [{"op": "node", "ntype": "user", "id": user, "attrs": {}}]
        events += [{"op": "edge", "etype": etype, "src": user, "dst": m, "ts": 893_286_638} for m in picks]
        ack = pool.submit(events)
        (stats,) = pool.apply()
        view = pool.embeddings()
        u = view.rows("user", [user])[0]
        items = view.rows("movie", np.arange(len(titles)))
    finally:
        pool.close()
    score = items @ u / np.maximum(np.linalg.norm(items, axis=1) * np.linalg.norm(u), 1e-12)
    popular[picks] = score[picks] = -np.inf
    before = [titles[i] for i in np.argsort(-popular)[:10]]
    after = [titles[i] for i in np.argsort(-score)[:10]]
    print(f"new user {user} rated: {', '.join(titles[m] for m in picks)} ({ack.accepted} events, "
          f"update {stats.seconds:.2f} s, outcome {stats.status})")
    print(f"{'before (popularity)':<45} after (ILLE embedding)")
    for b, a in zip(before, after):
        print(f"  {b[:43]:<43} {a[:60]}")
    return before, after


def serve_step(run: Path, steps: int = 60, port: int = 8765) -> tuple[dict, dict, dict]:
    """Train a short DSGL ranker into ``run/ranker``, serve ``run`` and query it; returns the
    known user's answer and a new user's answers before and after their events."""
    import json
    import urllib.request

    from ray import serve

    from serve.app import start
    from serve.auth import write_token_file
    from serve.config import ServeConfig
    from trainers.ranker_train import RankerConfig, train_ranker

    graph = json.loads((run / "config.json").read_text())["graph"]
    meta = train_ranker(graph, run / "ranker", RankerConfig(workers=2, epochs=1, steps_per_epoch=steps))
    print(f"DSGL ranker: test AUC {meta['final']['test_auc']:.3f}, cold-user AUC {meta['final']['cold_auc']:.3f}")
    token = write_token_file(run / "serve.token")          # POST /events needs it (serve/auth.py)
    start(ServeConfig(run_dir=str(run), token_file=str(run / "serve.token")), port=port)
    url = f"http://127.0.0.1:{port}"

    def get(user: str) -> dict:
        with urllib.request.urlopen(f"{url}/recommend?user_id={user}&k=5", timeout=30) as r:
            return json.loads(r.read())

    def show(title: str, answer: dict) -> None:
        items = ", ".join(f"{it['item_id']} ({it['score']:.2f})" for it in answer["items"])
        print(f"  {title:<34} version {answer['version']:<8} fallback {str(answer['fallback']):<5} {items}")

    try:
        known = get("1")
        show("user 1:", known)
        before = get("demo-newcomer")
        show("new user, before events:", before)
        events = [{"user_id": "demo-newcomer", "item_id": m, "ts": 893_286_638 + j} for j, m in enumerate(["50", "172", "181"])]
        req = urllib.request.Request(f"{url}/events", data=json.dumps({"events": events}).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=30) as r:
            ack = json.loads(r.read())
        print(f"  POST /events: {ack['accepted']} accepted (movies 50, 172, 181: the Star Wars trilogy)")
        after = get("demo-newcomer")
        while after["fallback"] and time.perf_counter() - t0 < 20:
            time.sleep(0.1)
            after = get("demo-newcomer")
        show(f"new user, {time.perf_counter() - t0:.2f} s after:", after)
    finally:
        serve.shutdown()
    print("service shut down")
    return known, before, after


if __name__ == "__main__":
    run_demo(Path(os.environ.get("HETREC_DEMO_DIR", "runs/demo")),
             epochs=int(os.environ.get("HETREC_DEMO_EPOCHS", "4")))
