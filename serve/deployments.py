"""The back-end deployments of the Serve application: retrieval, ranking, updates.

* :class:`Retriever`: the faiss :class:`~serve.index.ItemIndex` over item embeddings, which
  follows ILLE's deltas (new and changed items, without a restart) and a newly exported
  version (built aside, :mod:`serve.versions`); user vectors from the same
  :class:`~trainers.ille.embedding_view.EmbeddingView`.
* :class:`Ranker`: the trained DSGL (or baseline) ranker scoring one user's N candidates,
  requests grouped by ``@serve.batch``; sequences from the :class:`~serve.live.LiveCatalog`,
  so a new user's posted events are in its next ranking.
* :class:`Updater`: the single writer of the event log. Turns raw-id events into graph
  events (an unknown raw id creates its node), submits them to the
  :class:`~trainers.ille.pool.UpdatePool` (durable before it returns), and applies them
  with ILLE in a background thread, so a response never waits for the solve (a GFM run:
  with its user tower, :class:`~trainers.gfm.updates.TowerPool`). When a new
  embeddings version is exported, it moves its pool there, carrying the log over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np
import torch
from ray import serve

from serve import telemetry
from serve.config import ServeConfig
from serve.index import ItemIndex
from serve.live import LiveCatalog
from serve.versions import CHECK_EVERY_S, IndexSwap
from trainers.dccl.rounds import load_dccl
from trainers.ille.embedding_view import EmbeddingView
from trainers.ille.pool import LoggedPool, open_pool, stats_json
from trainers.ranking.dsgl import hops_to_tensors
from trainers.ranking.dsgl_data import SequenceGraphs
from trainers.ranking.train import load_ranker
from trainers.run_dir import RunDir

log = logging.getLogger("ray.serve")

FOLLOW_EVERY_S = 0.05    # how often a replica looks for new embedding deltas
CACHE_ITEMS = 65_536     # item memories a ranker keeps (about 170 MB at L = 10, D = 32)


class Retriever:
    """``retrieve(user, n, exclude) -> {"ids", "scores", "version", "known"}``."""

    def __init__(self, cfg: ServeConfig):
        self.user_type, self.item_type = LiveCatalog.types(cfg.run_dir, cfg.etype)
        self.view = EmbeddingView(cfg.run_dir)
        self.index = ItemIndex.from_view(self.view, self.item_type, cfg.index, compact=False, shared=True)
        self.swap = IndexSwap(cfg.run_dir, self.item_type, cfg.index)
        self.last_follow = time.monotonic()
        telemetry.serving_version(self.index.version)

    def _follow(self) -> None:
        if time.monotonic() - self.last_follow >= FOLLOW_EVERY_S:
            before = self.index.version
            self.view, self.index = self.swap.poll(self.view, self.index)    # a new version, compacted
            self.index.follow(self.view, self.item_type)          # refreshes the view too
            self.last_follow = time.monotonic()
            if self.index.version != before:
                telemetry.serving_version(self.index.version)

    # async with no await inside: calls run one at a time on the replica's event loop, so the
    # view and the index never change under a search (sync methods would share a thread pool)
    async def retrieve(self, user: int, n: int, exclude: list[int]) -> dict:
        self._follow()
        if not self.view.has(self.user_type, np.array([user]))[0]:
            return {"ids": [], "scores": [], "version": self.index.version, "known": False}
        t0 = time.perf_counter()
        query = self.view.rows(self.user_type, np.array([user]))
        ids, scores = self.index.search(query, n, [set(exclude)])
        telemetry.stage_ms().observe((time.perf_counter() - t0) * 1000, tags={"stage": "retrieve"})
        keep = ids[0] >= 0
        return {"ids": ids[0][keep].tolist(), "scores": scores[0][keep].tolist(), "version": self.index.version,
                "known": True}

    async def version(self) -> str:
        self._follow()
        return self.index.version


class Ranker:
    """``rank((user, items)) -> scores`` (logits), one call per request, batched inside.

    Scoring time is just after the newest interaction the catalogue holds. What the
    candidates' first-layer attention reads (their sequences encoded and projected to keys
    and values) depends only on the item and that time, so it is cached per item until the
    catalogue changes (most of a request's LSTM and projection work).
    """

    def __init__(self, cfg: ServeConfig, threads: int = 1):
        torch.set_num_threads(max(1, threads))
        if cfg.dccl:        # DIN with every user's MetaPatch, looked up by user id in the model
            self.model, dcfg, _ = load_dccl(RunDir(cfg.run_dir).dccl)
            self.rcfg, self.length, self.depth, self.buckets = None, dcfg.length, 1, 32
        else:
            self.model, self.rcfg, _ = load_ranker(RunDir(cfg.run_dir).ranker)
            self.length, self.depth, self.buckets = self.rcfg.length, self.rcfg.dsgl.depth, self.rcfg.dsgl.num_buckets
        if hasattr(self.model, "freeze_embeddings"):       # DSGL: one lookup per embedding
            self.model.freeze_embeddings()
        self.catalog = LiveCatalog(cfg.run_dir, cfg.etype)
        self.graphs = self._build()
        # cache rows: first-layer memories [C, 2, L, D] and masks [C, L]; `slot[item]` its row
        self.memory, self.mask, self.slot, self.used = None, None, np.zeros(0, np.int64), 0
        self.rank.set_max_batch_size(cfg.batch_size)
        self.rank.set_batch_wait_timeout_s(cfg.batch_wait_s)

    def _build(self) -> SequenceGraphs:
        return SequenceGraphs(self.catalog.interactions(), self.length, self.depth, num_buckets=self.buckets)

    def _current(self) -> SequenceGraphs:
        if self.catalog.follow():
            # New interactions since the last request: rebuilt from the catalogue (a sort of
            # the domain's interactions, ~20 ms for MovieLens-100K), and the cache dropped.
            self.graphs = self._build()
            self.slot[:], self.used = -1, 0
        return self.graphs

    def _item_side(self, items: np.ndarray, t: int) -> tuple[list[dict], torch.Tensor | None]:
        """The candidates' item-side input: ``(hops, [B, 2, L, D] first-layer memories)``. With
        one item hop (depth 2) each item's memory and mask are cached, and only the items
        not cached yet get their sequences built; otherwise ``(hops, None)``. The cache holds
        at most ``max(CACHE_ITEMS, B)`` items (grown as needed) and starts over when full,
        so its memory is bounded whatever the catalogue's size."""
        if self.depth != 2 or not hasattr(self.model, "root_memory"):
            return hops_to_tensors(self.graphs.item_side(items, np.full(len(items), t))), None
        if len(self.slot) <= items.max():                       # item id -> cache row, -1: not cached
            self.slot = np.concatenate([self.slot, np.full(2 * int(items.max()) + 2 - len(self.slot), -1)])
        missing = np.unique(items[self.slot[items] < 0])
        if len(missing):
            need = self.used + len(missing)
            if need > self._rows() and self._rows() < CACHE_ITEMS:      # grow (doubling) up to the bound
                self._grow(min(CACHE_ITEMS, max(need, 2 * self._rows())))
            if need > self._rows():                                     # full: start over
                self.slot[:], self.used = -1, 0
                missing = np.unique(items)
                self._grow(len(missing))                                # a batch larger than the bound
            hop = hops_to_tensors(self.graphs.item_side(missing, np.full(len(missing), t)))[0]
            memory = self.model.root_memory(False, hop)
            rows = np.arange(self.used, self.used + len(missing))
            self.memory[rows], self.mask[rows] = memory, hop["mask"]
            self.slot[missing], self.used = rows, self.used + len(missing)
        rows = torch.from_numpy(self.slot[items])
        return [{"mask": self.mask.index_select(0, rows)}], self.memory.index_select(0, rows)

    def _rows(self) -> int:
        return 0 if self.memory is None else len(self.memory)

    def _grow(self, size: int) -> None:
        """At least ``size`` cache rows, keeping the old ones."""
        have = self._rows()
        if size > have:
            L, D = self.rcfg.length, self.rcfg.dsgl.dim
            grown_memory, grown_mask = torch.zeros(size, 2, L, D), torch.zeros(size, L, dtype=torch.bool)
            if self.memory is not None:
                grown_memory[:have], grown_mask[:have] = self.memory, self.mask
            self.memory, self.mask = grown_memory, grown_mask

    async def ready(self) -> bool:
        """Answers once the model and the sequences are loaded (for ``/healthz``)."""
        return True

    @torch.inference_mode()
    def score(self, requests: list[tuple[int, list[int]]]) -> list[list[float]]:
        """Each request ``(user, candidate items)``; one model call for all."""
        graphs = self._current()
        t = self.catalog.latest + 1
        users = np.array([r[0] for r in requests], np.int64)
        items = np.concatenate([np.asarray(r[1], np.int64) for r in requests])
        sizes = [len(r[1]) for r in requests]
        pair = np.repeat(np.arange(len(requests)), sizes)
        item_hops, item_memory = self._item_side(items, t)
        logits = self.model(torch.from_numpy(users), torch.from_numpy(items),
                            hops_to_tensors(graphs.user_side(users, np.full(len(users), t))), item_hops,
                            pair=torch.from_numpy(pair),
                            **({} if item_memory is None else {"item_memory": item_memory}))   # DIN takes none
        return [part.tolist() for part in torch.split(logits, sizes)]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def rank(self, users: list[int], retrieved: list[dict]) -> list[dict]:
        """``retrieved[j]``: the Retriever's answer for ``users[j]`` (passed straight from
        it, not through the ingress); returns it with ``logits`` for its ``ids``."""
        todo = [j for j, got in enumerate(retrieved) if got["known"] and got["ids"]]
        t0 = time.perf_counter()
        scores = self.score([(users[j], retrieved[j]["ids"]) for j in todo]) if todo else []
        for _ in todo:                  # each request waited for the whole batch
            telemetry.stage_ms().observe((time.perf_counter() - t0) * 1000, tags={"stage": "rank"})
        out = [{**got, "logits": []} for got in retrieved]
        for j, s in zip(todo, scores):
            out[j]["logits"] = s
        return out


class Updater:
    """``submit(events)``: raw-id interactions in, durable ack out; ILLE in the background."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.pool = self._pool()
        self.catalog = LiveCatalog(cfg.run_dir, cfg.etype)
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.applied: deque[dict] = deque(maxlen=1000)     # the latest batches' stats
        self.batches = 0
        self.failures = 0
        self.wake.set()                                   # apply whatever an earlier run left logged
        threading.Thread(target=self._apply_loop, daemon=True, name="ille-apply").start()

    def submit(self, events: list[dict]) -> dict:
        """``events[j]``: ``{"user_id", "item_id", "ts"}`` (raw ids); returns the ack."""
        with self.lock:
            self.catalog.follow()
            c = self.catalog
            created: dict[tuple[str, str], int] = {}
            nodes, edges = [], []

            def node_id(ntype: str, raw: str) -> int:
                nid = c.lookup(ntype, raw)
                if nid is None:
                    nid = created.get((ntype, raw))
                if nid is None:
                    nid = len(c.ids[ntype]) + sum(1 for t, _ in created if t == ntype)
                    created[(ntype, raw)] = nid
                    nodes.append({"op": "node", "ntype": ntype, "id": nid, "raw_id": raw})
                return nid

            for ev in events:
                edges.append({"op": "edge", "etype": c.etype, "src": node_id(c.user_type, str(ev["user_id"])),
                              "dst": node_id(c.item_type, str(ev["item_id"])), "ts": ev["ts"]})
            ack = self.pool.submit(nodes + edges)
            self.catalog.follow()                          # its own writes, so ids stay in step
        self.wake.set()
        # ack indexes count the node events first; report the request's own event indexes
        return {"accepted": ack.accepted - len(nodes), "offset": ack.first, "created_nodes": len(nodes),
                "errors": [{"index": e.index - len(nodes) if e.index >= len(nodes) else None, "message": e.message}
                           for e in ack.errors]}

    def _pool(self) -> LoggedPool:
        """ILLE's pool, or for a GFM run the pool that re-runs its user tower."""
        return open_pool(self.cfg.run_dir, actors=self.cfg.ille_actors, num_cpus=self.cfg.ille_cpus,
                          resources={k: v * self.cfg.ille_cpus for k, v in self.cfg.ille_resources.items()})

    def _switch(self, version: str) -> None:
        """Move to a newly exported embeddings ``version``: the new pool's log takes over the
        old one's events (those logged until the switch too), and ILLE applies them there."""
        t0 = time.perf_counter()
        old = self.pool
        old.stop()                        # its actors' CPUs for the new pool's; it still logs
        new = self._pool()                # carries what was logged so far
        with self.lock:                   # no submit in between: carry the rest, then switch
            carried = new.carry()
            old.close()
            self.pool = new
            self.catalog.follow(check_version=True)
        log.info("updates moved to embeddings %s in %.1f s (%d more events carried)", version,
                 time.perf_counter() - t0, carried)

    def _apply_loop(self) -> None:
        while True:
            self.wake.wait(timeout=CHECK_EVERY_S)
            self.wake.clear()
            try:                                            # the lag, off the request path
                latest = RunDir(self.cfg.run_dir).latest_embeddings().name
                if latest != self.pool.view.version.name:
                    self._switch(latest)
                telemetry.update_lag().set(self.pool.lag())
                stats = self.pool.apply()
                self.applied.extend(stats_json(stats))
                self.batches += len(stats)
                telemetry.update_lag().set(self.pool.lag())
            except Exception:                               # keep serving; the log still holds the events
                self.failures += 1
                telemetry.update_failures().inc()
                log.exception("ILLE apply failed; retrying on the next submit")
                time.sleep(1.0)
                self.wake.set()

    def status(self) -> dict:
        return {"pending": len(self.pool.pending()), "lag_events": self.pool.lag(), "applied_batches": self.batches,
                "failures": self.failures, "last": self.applied[-1] if self.applied else None}
