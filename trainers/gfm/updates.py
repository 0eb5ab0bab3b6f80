"""GFM's live updates: a served GFM run follows new interactions through its towers.

    pool = TowerPool("runs/gfm")     # after `hetrec gfm adapt runs/gfm`
    ack = pool.submit(events)        # validated, logged and fsynced: acknowledged
    stats = pool.apply()             # every logged, unapplied segment -> a delta

The same event log and deltas as ILLE's :class:`~trainers.ille.pool.UpdatePool` (so the
serving layer reads both alike), another way to compute the rows:

* a user with new interactions (or a new user) gets the user tower's output over its last
  ``L`` items as of the segment (its attribute tokens too; a new user has none), so what
  it just did is in its next recommendation, with no retraining;
* a new item (no foundation row, no id row) is placed at the normalised mean of the
  vectors of the users who interacted with it; items the towers know do not move (their
  tower reads no interactions).

A new item in a user's history is skipped by the user tower (it knows nothing of it); a
removed interaction leaves the history (older items do not move up into the last L). The
pool's state (the histories changed since the base) is rebuilt from the log at start, so a
restarted pool applies exactly the segments without a delta.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from graphs.exceptions import ConfigError
from graphs.store import GraphDir
from trainers.gfm.adapt import load_towers
from trainers.ille.pool import BatchStats, LoggedPool
from trainers.run_dir import RunDir


class TowerPool(LoggedPool):
    """The update pool of a GFM run (see the module doc); same API as ``UpdatePool``."""

    def __init__(self, run_dir: str | Path):
        run = RunDir(run_dir)
        if run.model != "gfm":
            raise ConfigError(f"{run.path} is a {run.model} run, not a GFM one; its updates are ILLE's")
        schema = GraphDir(run.graph, validate="none").schema
        super().__init__(run.path, schema, {n.name: n.count for n in schema.node_types})
        self.model, self.towers, config = load_towers(run.path)
        self.etype = config["etype"]
        self.user_type, _, self.item_type = self.etype.split("__")
        self.known_items = config["train"].num_items          # items the towers have rows for
        self.length = self.towers.cfg.history
        self.hist: dict[int, list[int]] = {}                  # users changed since the base: last L known items
        self.item_users: dict[int, list[int]] = {}            # new items: the users who interacted
        done = self._committed()
        for first in self.log.segments:                       # committed segments: state only
            if first in done:
                self._replay(self.log.read(first))

    def _history(self, user: int) -> list[int]:
        if user not in self.hist:
            base = self.towers.last[user] if user < len(self.towers.last) else np.zeros(0, np.int64)
            self.hist[user] = [int(i) for i in base if i >= 0]
        return self.hist[user]

    def _replay(self, events: list[dict]) -> tuple[set[int], set[int]]:
        """Apply ``events`` to the histories; returns the users and the new items they touch."""
        users, items = set(), set()
        for ev in events:
            if ev["op"] == "node" and ev["ntype"] == self.user_type:
                users.add(ev["id"])
            elif ev["op"] in ("edge", "remove_edge") and ev["etype"] == self.etype:
                user, item = ev["src"], ev["dst"]
                hist = self._history(user)
                users.add(user)
                if ev["op"] == "remove_edge":
                    if item in hist:
                        hist.remove(item)
                    if item in self.item_users and user in self.item_users[item]:
                        self.item_users[item].remove(user)
                        items.add(item)
                elif item < self.known_items:
                    hist.append(item)
                    del hist[:-self.length]
                else:
                    self.item_users.setdefault(item, []).append(user)
                    items.add(item)
        return users, items

    @torch.no_grad()
    def _user_rows(self, users: np.ndarray) -> np.ndarray:
        """``[n, dim]``: the user tower over each user's current last ``L`` items."""
        hist = np.full((len(users), self.length), -1, np.int64)
        for row, user in enumerate(users.tolist()):
            items = self._history(user)
            if items:
                hist[row, -len(items):] = items
        tokens = np.full((len(users), self.towers.tokens.shape[1]), -1, np.int64)
        base = users < len(self.towers.tokens)
        tokens[base] = self.towers.tokens[users[base]]
        return self.model.users(self.towers.rows(hist), torch.from_numpy(hist), torch.from_numpy(tokens)).numpy()

    def _apply_segment(self, first: int) -> BatchStats:
        t0 = time.perf_counter()
        events = self.log.read(first)
        touched, new_items = self._replay(events)
        users = np.array(sorted(touched), np.int64)
        rows = self._user_rows(users) if len(users) else np.zeros((0, self.view.dim), np.float32)
        latest = dict(zip(users.tolist(), rows))
        placed = [i for i in sorted(new_items) if self.item_users.get(i)]
        item_rows = np.zeros((len(placed), self.view.dim), np.float32)
        for row, item in enumerate(placed):
            who = self.item_users[item]
            have = [u for u in who if u not in latest]
            vectors = [latest[u] for u in who if u in latest]
            vectors += list(self.view.rows(self.user_type, np.array(have, np.int64))) if have else []
            item_rows[row] = F.normalize(torch.from_numpy(np.mean(vectors, axis=0)), dim=0).numpy()
        self._write_delta(first, {self.user_type: (users, rows),
                                  self.item_type: (np.array(placed, np.int64), item_rows)})
        trained = users < self.view.base_counts[self.user_type]
        old = np.asarray(self.view.base[self.user_type][users[trained]]) if trained.any() else rows[:0]
        created = sum(e["op"] == "node" for e in events)
        return self._drift_stats(first, len(events), created, old, rows[trained], len(users) + len(placed),
                                 {"user_tower": len(users), "users_mean": len(placed)}, 0, t0)
