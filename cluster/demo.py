"""``make demo``: the hetrec pipeline on MovieLens-100K, on an embedded local Ray.

1. build the heterogeneous graph and print a summary (``hetrec graph stats`` shows all);
2. partition it with Ray Data;
3. evaluate: train HetSGFormer on 2 Ray Train workers on the random split's train
   interactions (one line per epoch, validation NDCG@10), export, and score the test split
   against popularity and MF-BPR in one table (``hetrec eval`` adds LightGCN, the
   heterogeneous peers and more seeds);
4. the served run: the trained weights embed the full graph (every rating), exported;
5. cold start: a new user arrives with three ratings; the ILLE update pool gives them an
   embedding without retraining, and their top 10 is printed before (popularity) and after;
6. serving: a DSGL ranker is trained on Ray Train, the Serve app (faiss retrieval + DSGL
   ranking + live updates) starts on loopback and prints recommendations (never a movie
   the user rated) for a known user and for a new user before and after posting events.

    python -m cluster.demo              # or: hetrec demo [--dir DIR] [--epochs E] [--verbose]

Output goes to ``$HETREC_DEMO_DIR`` (default ``runs/demo``, relative to the current
directory); ``$HETREC_DEMO_EPOCHS`` sets HetSGFormer's epochs (default 12). Ray's own logs
stay in its session folder unless ``HETREC_LOG_LEVEL=INFO``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.runtime import init_ray
from serve.haproxy import enable_haproxy
from graphs.exceptions import ConfigError
from trainers.run_dir import RunDir

DEMO_MODELS = ("hetsgformer", "pop", "mf")


@dataclass(frozen=True)
class DemoConfig:
    """``root``: output folder; ``epochs``: HetSGFormer's; ``models``: the evaluation table's
    rows; ``ranker_steps``: DSGL training steps; ``port``: the demo service's HTTP port."""

    root: str = "runs/demo"
    epochs: int = 12
    parts: int = 4
    models: tuple[str, ...] = DEMO_MODELS
    ranker_steps: int = 60
    port: int = 8765
    verbose: bool = False

    def __post_init__(self) -> None:
        from graphs.paths import absolute_fields

        absolute_fields(self, "root")
        for name in ("epochs", "parts", "ranker_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"DemoConfig.{name} must be >= 1, got {getattr(self, name)}")


def run_demo(cfg: DemoConfig = DemoConfig()) -> dict:
    """Run the stages above under ``cfg.root``; returns the evaluation results."""
    import ray

    from graphs.movielens import build_movielens
    from graphs.partition import PartitionConfig, partition_graph
    from graphs.stats import format_stats, graph_stats
    from trainers.evaluation.evaluate import format_table, run_eval
    from trainers.hetsgformer.export import serving_run
    from trainers.hetsgformer.train import TrainConfig

    root = Path(cfg.root)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not ray.is_initialized():
        # the serving step's HTTP ingress, as `hetrec serve` has it; stats and metrics on free ports
        enable_haproxy(stats_port=None, metrics_port=None)
    init_ray(verbose=cfg.verbose)
    say(f"hetrec demo: outputs in {root}; Ray's logs in /tmp/ray/session_latest/logs "
        "(HETREC_LOG_LEVEL=INFO shows them here)")
    step(1, "MovieLens-100K -> heterogeneous graph", t0)
    graph = root / "ml-100k"
    build_movielens(graph, overwrite=True)
    say(format_stats(graph_stats(graph), top=5))

    step(2, f"partition into {cfg.parts} shards with Ray Data", t0)
    parts = root / "ml-100k.parts"
    partition_graph(graph, parts, PartitionConfig(num_parts=cfg.parts), overwrite=True)
    say(format_stats(graph_stats(parts), top=4))

    step(3, f"evaluate on the random 80/10/10 split: HetSGFormer ({cfg.epochs} epochs, 2 Ray Train "
            f"workers) vs {', '.join(m for m in cfg.models if m != 'hetsgformer')}", t0)
    results = run_eval(graph, cfg.models, protocol="random",
                       train_cfg=TrainConfig(workers=2, epochs=cfg.epochs), work_dir=root / "eval",
                       log=lambda line: say(f"  {line}"))
    say(format_table({m: {k: v for k, v in r.items() if k in ("ndcg@10", "recall@20", "hit@10", "mrr@10")}
                      for m, r in results.items()}))
    trained = root / "eval" / "hetsgformer-random-0" / "run"
    say(f"training curves: {trained / 'metrics.png'}")

    step(4, "the served run: the trained weights embed the full graph (all 100,000 ratings)", t0)
    run = root / "run"
    shutil.rmtree(run, ignore_errors=True)
    say(f"embeddings: {serving_run(trained, parts, run)}")

    step(5, "cold start: a new user with three ratings, embedded by ILLE (2 Ray actors)", t0)
    cold_start_step(run)
    step(6, "serving: DSGL ranker (Ray Train), then Ray Serve on loopback", t0)
    try:
        serve_step(run, steps=cfg.ranker_steps, port=cfg.port)
    finally:
        ray.shutdown()      # the demo's local Ray, with Serve and every actor it started
    say(f"demo finished in {time.perf_counter() - t0:.0f} s; outputs in {root}")
    return results


def say(text: str) -> None:
    print(text, flush=True)


def step(number: int, title: str, t0: float) -> None:
    say(f"\n== {number}/6 {title} (at {time.perf_counter() - t0:.0f} s)")


def movie_titles(run: Path) -> tuple[list[str], list[str]]:
    """``(titles, raw ids)`` of the run's movies, by id."""
    from graphs.store import GraphDir

    graph = GraphDir(RunDir(run).graph, validate="none")
    table = graph.read_nodes("movie", columns=["id", "raw_id", "title"])
    return table["title"].to_pylist(), [str(r) for r in table["raw_id"].to_pylist()]


def cold_start_step(run: Path, liked: tuple[str, ...] = ("Star Wars", "Empire Strikes Back", "Return of the Jedi"),
                    etype: str | None = None) -> tuple[list[str], list[str]]:
    """Add one user who rated ``liked`` (title prefixes) to ``run``; print and return the top
    10 titles before (popularity: nothing is known of them) and after the ILLE update."""
    import numpy as np

    from graphs.store import GraphDir
    from trainers.ille.pool import UpdatePool

    titles, _ = movie_titles(run)
    graph, etype = GraphDir(RunDir(run).graph, validate="none"), etype or RunDir(run).target
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
    say(f"new user {user} rated: {', '.join(titles[m] for m in picks)} ({ack.accepted} events, "
        f"update {stats.seconds:.2f} s, outcome {stats.status})")
    say(f"  {'before (popularity)':<43} after (ILLE embedding)")
    for b, a in zip(before, after):
        say(f"  {b[:43]:<43} {a[:60]}")
    return before, after


def serve_step(run: Path, steps: int = 60, port: int = 8765) -> tuple[dict, dict, dict]:
    """Train a short DSGL ranker into ``run/ranker``, serve ``run`` and query it; returns the
    known user's answer and a new user's answers before and after their events. Raises if a
    recommendation is a movie the user rated."""
    import urllib.request

    from ray import serve

    from graphs.store import GraphDir
    from serve.app import start
    from serve.auth import write_token_file
    from serve.config import ServeConfig
    from trainers.ranking.train import RankerConfig, train_ranker

    run_dir = RunDir(run)
    meta = train_ranker(run_dir.graph, run_dir.ranker,
                        RankerConfig(workers=2, epochs=1, steps_per_epoch=steps, etype=run_dir.target))
    final = meta["final"]
    say(f"DSGL ranker ({steps} steps): test AUC {final['test_auc']:.3f} (popularity {final['test_pop_auc']:.3f}), "
        f"cold-user AUC {final['cold_auc']:.3f} (popularity {final['cold_pop_auc']:.3f})")
    titles, raw_ids = movie_titles(run)
    title_of = dict(zip(raw_ids, titles))
    graph = GraphDir(run_dir.graph, validate="none")
    user_raw = [str(r) for r in graph.read_nodes("user", columns=["id", "raw_id"])["raw_id"].to_pylist()]
    edges = graph.read_edges(run_dir.target)
    known_user = "1"
    rated = {raw_ids[i] for i in edges["dst"][edges["src"] == user_raw.index(known_user)]}
    token = write_token_file(run / "serve.token")          # POST /events needs it (serve/auth.py)
    start(ServeConfig(run_dir=str(run), token_file=str(run / "serve.token")), port=port)
    url = f"http://127.0.0.1:{port}"

    def get(user: str) -> dict:
        with urllib.request.urlopen(f"{url}/recommend?user_id={user}&k=5", timeout=30) as r:
            return json.loads(r.read())

    def show(title: str, answer: dict, history: set[str]) -> None:
        items = [it["item_id"] for it in answer["items"]]
        if history & set(items):
            raise RuntimeError(f"{title} recommended movies the user rated: {sorted(history & set(items))}")
        say(f"  {title} (version {answer['version']}{', popularity fallback' if answer['fallback'] else ''})")
        for it in answer["items"]:
            say(f"    {it['score']:6.2f}  {title_of.get(it['item_id'], it['item_id'])[:60]}")

    try:
        known = get(known_user)
        show(f"user {known_user} (rated {len(rated)} movies, none recommended):", known, rated)
        before = get("demo-newcomer")
        show("new user, before any event:", before, set())
        posted = ["50", "172", "181"]                              # the Star Wars trilogy
        events = [{"user_id": "demo-newcomer", "item_id": m, "ts": 893_286_638 + j} for j, m in enumerate(posted)]
        req = urllib.request.Request(f"{url}/events", data=json.dumps({"events": events}).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=30) as r:
            ack = json.loads(r.read())
        say(f"  POST /events: {ack['accepted']} accepted ({', '.join(title_of[m] for m in posted)})")
        after = get("demo-newcomer")
        while after["fallback"] and time.perf_counter() - t0 < 20:
            time.sleep(0.1)
            after = get("demo-newcomer")
        show(f"new user, {time.perf_counter() - t0:.2f} s after:", after, set(posted))
    finally:
        serve.delete("hetrec")
    return known, before, after


def main() -> None:
    run_demo(DemoConfig(root=os.environ.get("HETREC_DEMO_DIR", "runs/demo"),
                        epochs=int(os.environ.get("HETREC_DEMO_EPOCHS", "12"))))


if __name__ == "__main__":
    main()
