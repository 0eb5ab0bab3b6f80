"""Publishing a new item index without a pause: built aside, swapped in between two searches.

Two things replace a replica's :class:`~serve.index.ItemIndex` while it serves:

* **a new embeddings version** (``hetrec export`` moved ``embeddings/LATEST``): the new
  version's index is built (by one replica, read by the others: ``ItemIndex.from_view``'s
  ``shared``) in a background thread from its own
  :class:`~trainers.ille.embedding_view.EmbeddingView`, and swapped in once the events
  logged on the served version have been carried to the new one and applied there (its
  ILLE deltas cover them), so a user or item added since the old base keeps an embedding
  across the swap; past ``wait_s`` it is swapped in anyway (the updater may be down);
* **a compaction**: once the side index of updates holds ``compact_at`` rows, the same
  version's index is rebuilt aside (base plus every delta in one main index), instead of
  inside a search.

Memory: two indexes while one is being built. CPU: the build runs on ``BUILD_THREADS``
OpenMP threads (1), so the requests keep the replica's other cores.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import faiss

from graphs.events import EventLog
from graphs.exceptions import NotFoundError
from serve.index import IndexConfig, ItemIndex
from trainers.ille.embedding_view import EmbeddingView
from trainers.run_dir import RunDir

log = logging.getLogger("ray.serve")

CHECK_EVERY_S = 0.5       # how often ``LATEST`` is read
BUILD_THREADS = 1         # cores an index build takes from the replica's searches and ranking
WAIT_S = 60.0             # longest a built index waits for the updates to catch up


def caught_up(run: RunDir, old: str, new: EmbeddingView) -> bool:
    """True once every event logged on version ``old`` is in the log of ``new``'s version
    and applied there (the view has read a delta for each of those segments)."""
    old_log = run.updates(old) / "log"
    if not any(old_log.glob("*.jsonl")):
        return True
    end = EventLog(old_log, writer=False).end
    new_log = EventLog(run.updates(new.version) / "log", writer=False)
    if new_log.end < end:
        return False
    new.refresh()
    return set(first for first in new_log.segments if first < end) <= set(new.applied)


class IndexSwap:
    """``poll(view, index)`` from the serving loop: ``(view, index)`` to serve from now on,
    the same objects while nothing new is ready (see the module doc)."""

    def __init__(self, run_dir: str | Path, item_type: str, cfg: IndexConfig, wait_s: float = WAIT_S):
        self.run, self.item_type, self.cfg, self.wait_s = RunDir(run_dir), item_type, cfg, wait_s
        self.checked = 0.0
        self.thread: threading.Thread | None = None
        self.built: tuple[EmbeddingView, ItemIndex, float] | None = None
        self.failed: set[str] = set()          # versions whose build raised (not retried)

    def poll(self, view: EmbeddingView, index: ItemIndex) -> tuple[EmbeddingView, ItemIndex]:
        if self.thread is not None and self.thread.is_alive():
            return view, index
        if self.built is not None:
            new_view, new_index, done = self.built
            ready = new_view.version == view.version or caught_up(self.run, view.version.name, new_view)
            if ready or time.monotonic() - done > self.wait_s:
                if not ready:
                    log.warning("serving %s before its updates caught up with %s (waited %.0f s)",
                                new_view.version.name, view.version.name, self.wait_s)
                self.built = None
                new_index.follow(new_view, self.item_type)        # deltas written during the build
                return new_view, new_index
            return view, index
        if index.side.ntotal >= self.cfg.compact_at and view.version.name not in self.failed:
            self._start(view.version, shared=False)               # compaction: deltas folded in
        elif time.monotonic() - self.checked >= CHECK_EVERY_S:
            self.checked = time.monotonic()
            try:
                latest = self.run.latest_embeddings()
            except NotFoundError:
                return view, index
            if latest.name != view.version.name and latest.name not in self.failed:
                self._start(latest, shared=True)
        return view, index

    def _start(self, version: Path, shared: bool) -> None:
        def build() -> None:
            faiss.omp_set_num_threads(BUILD_THREADS)      # this thread's OpenMP teams only
            t0 = time.perf_counter()
            try:
                new_view = EmbeddingView(self.run.path, version)
                new_index = ItemIndex.from_view(new_view, self.item_type, self.cfg, compact=False, shared=shared)
            except Exception:
                log.exception("building the index of %s failed; still serving the old one", version.name)
                self.failed.add(version.name)
                return
            log.info("index of %s built in %.1f s", version.name, time.perf_counter() - t0)
            self.built = (new_view, new_index, time.monotonic())

        self.thread = threading.Thread(target=build, daemon=True, name=f"index-{version.name}")
        self.thread.start()
