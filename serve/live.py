"""What the serving layer knows of users and items right now: the graph plus the event log.

:class:`LiveCatalog` maps raw ids (as in the source data) to node ids and back, and keeps
the user-item interactions, for the base graph and for every event the update stage has
logged since (``updates/<base version>/log``, DESIGN.md's event log). The log is the
source of truth: any replica catches up with :meth:`LiveCatalog.follow`, which reads only
the segments it has not seen (one ``stat`` when there are none), and which moves on to a
newly exported embeddings version's log by itself.

Memory: the raw ids of the two served types (sorted, searched with ``searchsorted``), the
interactions as CSR by user, and the new nodes and edges since the base. That is the
catalogue of one recommendation domain; the graph's other types are never loaded.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from graphs.events import EventLog
from graphs.exceptions import EventError, NotFoundError
from graphs.store import GraphDir
from trainers.evaluation.splits import Interactions, load_interactions
from trainers.run_dir import RunDir

VERSION_CHECK_S = 0.5     # how often a catalogue looks for a newly exported embeddings version


class RawIds:
    """Raw id <-> node id of one node type; new nodes are appended in id order."""

    def __init__(self, raw: np.ndarray):
        self.raw = raw.astype(str)
        self.order = np.argsort(self.raw, kind="stable")
        self.sorted = self.raw[self.order]
        self.new: dict[str, int] = {}
        self.new_raw: list[str] = []

    def __len__(self) -> int:
        return len(self.raw) + len(self.new_raw)

    def lookup(self, raw_id: str) -> int | None:
        raw_id = str(raw_id)
        pos = int(np.searchsorted(self.sorted, raw_id))
        if pos < len(self.sorted) and self.sorted[pos] == raw_id:
            return int(self.order[pos])
        return self.new.get(raw_id)

    def add(self, node_id: int, raw_id: str) -> None:
        if node_id != len(self):
            raise EventError(f"new node id {node_id} out of order: expected {len(self)}")
        self.new[str(raw_id)] = node_id
        self.new_raw.append(str(raw_id))

    def to_raw(self, ids: np.ndarray) -> list[str]:
        base = len(self.raw)
        return [self.raw[i] if i < base else self.new_raw[i - base] for i in np.asarray(ids).tolist()]


class LiveCatalog:
    """Raw ids, histories and popularity of the run's user and item types (see module doc)."""

    def __init__(self, run_dir: str | Path, etype: str | None = None):
        run = RunDir(run_dir)
        self.run_dir, graph, etype = run.path, run.graph, etype or run.target
        gdir = GraphDir(graph, validate="none")
        et = gdir.schema.edge_type(etype)
        self.etype, self.user_type, self.item_type = etype, et.src, et.dst
        self.ids = {t: RawIds(gdir.read_nodes(t, columns=["id", "raw_id"])["raw_id"].to_numpy(zero_copy_only=False))
                    for t in (et.src, et.dst)}
        base = load_interactions(graph, etype)
        order = np.lexsort((base.ts, base.user))
        self.items, self.ts = base.item[order], base.ts[order]
        self.ptr = np.zeros(base.num_users + 1, np.int64)
        np.cumsum(np.bincount(base.user, minlength=base.num_users), out=self.ptr[1:])
        self.base = base
        self.new_edges: list[tuple[int, int, int]] = []         # (user, item, ts) since the base
        self.new_by_user: dict[int, list[int]] = {}
        self.removed: set[tuple[int, int]] = set()              # (user, item) pairs removed since
        self.popularity = np.bincount(base.item, minlength=base.num_items).astype(np.int64)
        self.latest = int(base.ts.max()) if len(base) else 0
        self.run = run
        self.version = run.latest_embeddings().name
        self.log = EventLog(run.updates(self.version) / "log", writer=False)
        self.next_log: EventLog | None = None                    # a newer version's log, once exported
        self.checked = time.monotonic()
        self.offset, self.changes = 0, 0
        self._lock = threading.Lock()
        self.follow()

    @staticmethod
    def types(run_dir: str | Path, etype: str | None = None) -> tuple[str, str]:
        """The (user, item) node types of ``etype`` (None: the run's target) in the run's graph."""
        run = RunDir(run_dir)
        et = GraphDir(run.graph, validate="none").schema.edge_type(etype or run.target)
        return et.src, et.dst

    def follow(self, check_version: bool = False) -> bool:
        """Read the log segments written since the last call; True if anything changed.
        The offset moves past a segment only once all of its events are in. With
        ``check_version`` a newer embeddings version is looked for now, not on the clock."""
        with self._lock:
            self._look_for_version(check_version)
            changed = False
            while True:
                if self.next_log is not None and (self.next_log.folder / f"{self.offset:012d}.jsonl").is_file():
                    self.log, self.next_log = self.next_log, None    # the new log has caught up: move on
                nxt, events = self.log.tail(self.offset, max_segments=1)
                if nxt == self.offset:
                    break
                for ev in events:
                    changed |= self._apply(ev)
                self.offset = nxt
            self.changes += changed
            return changed

    def _look_for_version(self, now: bool = False) -> None:
        """At most every ``VERSION_CHECK_S``: a newer embeddings version? Its log carries this
        one's segments with the same offsets (``EventLog.carry_from``), so reading goes on
        from the same offset, in the new log once it has the segment there (until then the
        old log's copy is read, and nothing is read twice or skipped)."""
        if not now and time.monotonic() - self.checked < VERSION_CHECK_S:
            return
        self.checked = time.monotonic()
        try:
            latest = self.run.latest_embeddings().name
        except NotFoundError:
            return
        if latest != self.version:
            self.version, self.next_log = latest, EventLog(self.run.updates(latest) / "log", writer=False)

    def _apply(self, ev: dict) -> bool:
        if ev["op"] == "node" and ev["ntype"] in self.ids:
            self.ids[ev["ntype"]].add(ev["id"], ev.get("raw_id", f"~{ev['id']}"))
            if ev["ntype"] == self.item_type:
                self.popularity = np.append(self.popularity, 0)
            return True
        if ev["op"] == "edge" and ev["etype"] == self.etype:
            ts = int(ev.get("ts", self.latest))
            self.new_edges.append((ev["src"], ev["dst"], ts))
            self.new_by_user.setdefault(ev["src"], []).append(ev["dst"])
            self.removed.discard((ev["src"], ev["dst"]))
            self.popularity[ev["dst"]] += 1
            self.latest = max(self.latest, ts)
            return True
        if ev["op"] == "remove_edge" and ev["etype"] == self.etype:
            self.removed.add((ev["src"], ev["dst"]))
            self.popularity[ev["dst"]] = max(0, self.popularity[ev["dst"]] - 1)
            return True
        return False

    def lookup(self, ntype: str, raw_id: str) -> int | None:
        return self.ids[ntype].lookup(raw_id)

    def history(self, user: int) -> np.ndarray:
        """Items the user has interacted with, base then new: ``[n]`` int64."""
        base = self.items[self.ptr[user]:self.ptr[user + 1]] if user < len(self.ptr) - 1 else np.zeros(0, np.int64)
        extra = self.new_by_user.get(user)
        items = np.concatenate([base, np.asarray(extra, np.int64)]) if extra else base
        if self.removed:
            items = items[[(user, i) not in self.removed for i in items.tolist()]] if len(items) else items
        return items

    def interactions(self) -> Interactions:
        """Base plus new interactions over the current id spaces."""
        b = self.base
        u, i, t = (np.asarray(c, np.int64) for c in zip(*self.new_edges)) if self.new_edges else (b.user[:0],) * 3
        out = Interactions(np.concatenate([b.user, u]), np.concatenate([b.item, i]), np.concatenate([b.ts, t]),
                           len(self.ids[self.user_type]), len(self.ids[self.item_type]))
        if self.removed:
            gone = np.array(sorted(self.removed), np.int64)
            key, drop = out.user * out.num_items + out.item, gone[:, 0] * out.num_items + gone[:, 1]
            out = out.subset(~np.isin(key, drop))
        return out

    def popular(self, k: int, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most interacted items not in ``exclude``: ids and shares of interactions."""
        counts = self.popularity.astype(np.float64)
        counts[np.asarray(exclude, np.int64)] = -1
        k = min(k, len(counts))
        part = np.argpartition(-counts, k - 1)[:k] if k else np.zeros(0, np.int64)
        top = part[np.argsort(-counts[part], kind="stable")]
        top = top[counts[top] >= 0]
        return top, counts[top] / max(1.0, float(self.popularity.sum()))
