"""The ILLE update pool: events in, durable log, parallel updater actors, embedding deltas out.

    pool = UpdatePool("runs/ml", actors=2)
    ack = pool.submit(events)        # validated, logged and fsynced: acknowledged
    stats = pool.apply()             # every logged, unapplied segment -> a delta version
    view = pool.embeddings()         # base + deltas, what retrieval reads

A pool works on the latest embeddings version. Its log starts as a copy of the older
version's (``EventLog.carry_from``, offsets kept), so the events acknowledged before a new
version was exported are applied on it too: nothing acknowledged is lost by a retrain.

For each log segment (one submitted batch) the pool broadcasts the events to the ``P``
:class:`~trainers.ille.shard_updater.ShardUpdater` actors (Ray actors, ``num_cpus`` each, restarted on
failure), each returns the ILLE rows of the nodes it owns, the pool solves the batch
jointly (:func:`trainers.ille.weights.solve_joint`, a sparse system the size of the batch) and
writes ``updates/<base>/deltas/<offset>.npz`` atomically. That file is the commit: a
segment with a delta is never applied again, one without is (re)applied, in log order.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import ray

from graphs.events import EventError, EventLog, EventValidator
from graphs.exceptions import ConfigError
from graphs.samplers import split_key
from graphs.shards import ShardStore
from trainers.ille.embedding_view import EmbeddingView
from trainers.ille.shard_updater import ShardUpdater
from trainers.ille.weights import STATUS_NAMES, ILLEConfig, solve_joint
from trainers.run_dir import RunDir

# Re-anchoring advice: retrain from scratch when updates have drifted this far.
REANCHOR_MIN_COSINE = 0.8       # mean cosine of re-solved existing nodes to their trained rows
REANCHOR_NEW_FRACTION = 0.2     # nodes added since the base, as a fraction of the base


@dataclass
class Ack:
    """Outcome of :meth:`UpdatePool.submit`: ``accepted`` events logged from ``first``."""

    first: int | None
    accepted: int
    errors: list[EventError] = field(default_factory=list)   # str(e): "event <i>: <what is wrong>"


@dataclass
class BatchStats:
    """One applied segment: counts, outcome per node, drift, time."""

    first: int
    events: int
    new_nodes: int
    resolved: int           # nodes ILLE added earlier (or, with change_threshold, trained ones), re-solved
    status: dict[str, int]
    unanchored: int
    moved: float            # mean relative movement of re-solved trained nodes (0 if none)
    cosine_to_base: float   # their mean cosine to the last full training's rows (1 if none)
    new_fraction: float     # nodes added since the base / base nodes, after this batch
    reanchor_advised: bool
    seconds: float
    nodes_per_s: float


class LoggedPool:
    """What every update pool of a run shares: the event log of the latest embeddings
    version (carried over from the older one), validation against the schema and the node
    counts so far, and the committed deltas (``updates/<version>/deltas/<offset>.npz``: a
    segment with a delta is applied, one without is pending). Subclasses apply a segment
    (``_apply_segment(first) -> BatchStats``): :class:`UpdatePool` with ILLE, GFM's
    :class:`~trainers.gfm.updates.TowerPool` with its towers."""

    def __init__(self, run_dir: str | Path, schema, counts: dict[str, int]):
        run = RunDir(run_dir)
        self.run_dir = run.path
        self.view = EmbeddingView(run.path)
        self.dir = run.updates(self.view.version)
        self.log = EventLog(self.dir / "log")
        self.previous = run.previous_updates(self.view.version)
        if self.previous is not None:                     # events logged on older versions
            self.log.carry_from(self.previous / "log")
        self.types = [n.name for n in schema.node_types]
        self.validator = EventValidator(schema, counts)
        for first in self.log.segments:                   # nodes added by earlier runs
            self.validator.check([e for e in self.log.read(first) if e["op"] == "node"])
        self.base_nodes = sum(counts.values())

    def submit(self, events: list[dict]) -> Ack:
        """Validate, log durably, acknowledge. Bad events are reported and skipped."""
        counts = dict(self.validator.counts)
        accepted, errors = self.validator.check(events)
        try:
            first = self.log.append(accepted) if accepted else None
        except BaseException:
            self.validator.counts = counts               # nothing logged: the new ids are free again
            raise
        return Ack(first, len(accepted), errors)

    def carry(self) -> int:
        """Carry over what was logged on the older version since this pool started (a
        writer that was still on it, until it switched); returns the events carried."""
        if self.previous is None:
            return 0
        carried = [self.log.read(first) for first in self.log.carry_from(self.previous / "log")]
        for events in carried:
            self.validator.check([e for e in events if e["op"] == "node"])
        return sum(map(len, carried))

    def pending(self) -> list[int]:
        done = self._committed()
        return [s for s in self.log.segments if s not in done]

    def lag(self) -> int:
        """Events acknowledged (in the log) but not applied yet (no delta for their segment)."""
        done, segments = self._committed(), self.log.segments
        return sum(end - first for first, end in zip(segments, segments[1:] + [self.log.end]) if first not in done)

    def apply(self, log=None) -> list[BatchStats]:
        """Apply every logged segment without a delta, in order; one stats row each."""
        out = []
        for first in self.pending():
            out.append(self._apply_segment(first))
            if log:
                log(out[-1])
        return out

    def embeddings(self) -> EmbeddingView:
        self.view.refresh()
        return self.view

    def stop(self) -> None:
        """Stop whatever applies the updates; the pool still takes submits."""

    def close(self) -> None:
        self.stop()
        self.log.close()

    def _committed(self) -> set[int]:
        deltas = self.dir / "deltas"
        return {int(p.stem) for p in deltas.glob("*.npz")} if deltas.is_dir() else set()

    def _apply_segment(self, first: int) -> BatchStats:
        raise NotImplementedError

    def _write_delta(self, first: int, rows: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Commit segment ``first``: ``rows[ntype] = (ids [n], rows [n, d])``, written atomically."""
        folder = self.dir / "deltas"
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{first:012d}.npz"
        if final.exists():                 # committed before a crash of the pool: keep it
            return
        arrays = {}
        for ntype, (ids, values) in rows.items():
            arrays[f"{ntype}.ids"], arrays[f"{ntype}.rows"] = ids, values
        tmp = folder / f".{final.name}.tmp"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, final)

    def _drift_stats(self, first: int, events: int, created: int, old: np.ndarray, new: np.ndarray, targets: int,
                     status: dict[str, int], unanchored: int, t0: float) -> BatchStats:
        """The stats row of an applied segment of ``events`` events, ``created`` of them new
        nodes: ``old``/``new``: re-solved trained rows before/after."""
        moved, cosine = _drift(old, new)
        self.view.refresh()
        added = sum(self.view.count(t) - self.view.base_counts[t] for t in self.view.base_counts)
        seconds = time.perf_counter() - t0
        return BatchStats(
            first=first, events=events, new_nodes=created, resolved=targets - created, status=status,
            unanchored=unanchored, moved=moved, cosine_to_base=cosine, new_fraction=added / max(1, self.base_nodes),
            reanchor_advised=bool(cosine < REANCHOR_MIN_COSINE or added > REANCHOR_NEW_FRACTION * self.base_nodes),
            seconds=seconds, nodes_per_s=targets / seconds)


class UpdatePool(LoggedPool):
    """Python API of the update stage (see the module doc). ``close()`` stops the actors.
    ``num_cpus`` and ``resources`` (custom Ray resources, e.g. ``{"updater": 1}``) per actor.
    ``actors=0`` solves in this process instead (one :class:`ShardUpdater`, no Ray actor):
    the same answer, without the seconds a Ray actor takes to start, for a batch job that
    applies a few batches and exits."""

    def __init__(self, run_dir: str | Path, actors: int = 2, cfg: ILLEConfig | None = None,
                 num_cpus: float = 1.0, resources: dict | None = None):
        if not isinstance(actors, int) or actors < 0:
            raise ConfigError(f"actors must be an int >= 0 (0: in this process), got {actors!r}")
        self.cfg = cfg or ILLEConfig()
        store = ShardStore(RunDir(run_dir).parts)
        super().__init__(run_dir, store.schema, store.counts)
        self.local = ShardUpdater(str(self.run_dir), 0, 1, self.cfg) if actors == 0 else None
        # an actor that dies is always restarted (it rebuilds its state from the log), and a
        # call in flight is retried on it
        actor = ray.remote(ShardUpdater).options(num_cpus=num_cpus, resources=resources or {}, max_restarts=-1,
                                                 max_task_retries=3)
        self.actors = [actor.remote(str(self.run_dir), i, actors, self.cfg) for i in range(actors)]
        self._each("new_edges")                                  # constructed: state rebuilt, ready

    def _each(self, method: str, *args) -> list:
        """``method(*args)`` on every updater (the actors, or the in-process one); the results."""
        if self.local is not None:
            return [getattr(self.local, method)(*args)]
        return ray.get([getattr(a, method).remote(*args) for a in self.actors])

    def stop(self) -> None:
        """Stop the actors; the pool still takes submits (applying needs a new pool)."""
        for a in self.actors:
            ray.kill(a)
        self.actors, self.local = [], None

    def _apply_segment(self, first: int) -> BatchStats:
        t0 = time.perf_counter()
        parts = self._each("prepare", first)                                 # each reads the segment
        targets = np.concatenate([p["targets"] for p in parts])
        offsets = np.cumsum([0] + [len(p["targets"]) for p in parts])
        rows = np.concatenate([p["rows"] + o for p, o in zip(parts, offsets)])
        order = np.argsort(targets)
        cols = np.concatenate([p["cols"] for p in parts])
        if len(cols):
            found = order[np.minimum(np.searchsorted(targets, cols, sorter=order), len(targets) - 1)]
            if (targets[found] != cols).any():
                raise RuntimeError(f"segment {first}: a neighbour new in the batch is no actor's target")
            cols = found
        w = np.concatenate([p["w"] for p in parts])
        b = np.concatenate([p["b"] for p in parts]) if len(targets) else np.zeros((0, self.view.dim))
        direct = np.concatenate([p["direct"] for p in parts])
        Y, anchored = solve_joint(rows, cols, w, b, direct)
        t_idx, ids = split_key(targets)
        self._write_delta(first, {self.types[t]: (ids[t_idx == t], Y[t_idx == t]) for t in np.unique(t_idx)})
        self._each("commit", first)
        status = np.concatenate([p["status"] for p in parts])
        old = np.concatenate([p["old"] for p in parts]) if len(targets) else np.zeros((0, self.view.dim))
        trained = ~np.isnan(old).any(1)
        return self._drift_stats(first, parts[0]["events"], parts[0]["created"], old[trained], Y[trained], len(targets),
                                 {STATUS_NAMES[s]: int((status == s).sum()) for s in np.unique(status)},
                                 int((~anchored).sum()), t0)


def open_pool(run_dir: str | Path, actors: int = 2, cfg: ILLEConfig | None = None, num_cpus: float = 1.0,
              resources: dict | None = None) -> LoggedPool:
    """The update pool of the run's model: ILLE's :class:`UpdatePool` (the arguments are
    its), or for a GFM run :class:`~trainers.gfm.updates.TowerPool` (its user tower, in
    this process)."""
    if RunDir(run_dir).model == "gfm":
        from trainers.gfm.updates import TowerPool      # GFM's module builds on this one
        return TowerPool(run_dir)
    return UpdatePool(run_dir, actors=actors, cfg=cfg, num_cpus=num_cpus, resources=resources)


def _drift(old: np.ndarray, new: np.ndarray) -> tuple[float, float]:
    """Mean relative movement and mean cosine of re-solved rows against their base rows."""
    if not len(old):
        return 0.0, 1.0
    old, new = old.astype(np.float64), new.astype(np.float64)
    norm_old, norm_new = np.linalg.norm(old, axis=1), np.linalg.norm(new, axis=1)
    moved = np.linalg.norm(new - old, axis=1) / np.maximum(norm_old, 1e-12)
    cosine = (old * new).sum(1) / np.maximum(norm_old * norm_new, 1e-12)
    return float(moved.mean()), float(cosine.mean())


def stats_json(stats: list[BatchStats]) -> list[dict]:
    return [asdict(s) for s in stats]


__all__ = ["Ack", "BatchStats", "EventError", "LoggedPool", "UpdatePool", "open_pool", "stats_json"]
