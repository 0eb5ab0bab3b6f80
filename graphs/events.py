"""Graph-change events: their format, their validation, and the durable log they go to.

An event is a dict (one row of an events parquet file):

===============  ==========================================================================
``op``           ``"node"`` (a new node), ``"edge"`` (a new edge), ``"remove_edge"``
``ntype``        node: its type
``id``           node: its id, which must be the type's next id (ids stay dense)
``attrs``        node: ``{column: value}`` or its JSON text; missing columns are nulls
``raw_id``       node, optional: its id in the source data (kept in the log for serving)
``etype``        edge: ``src__rel__dst`` of a schema edge type (the reverse is implied)
``src, dst``     edge: ids within the src / dst types; may name nodes created in the same batch
``ts, weight``   edge: optional timestamp in seconds, ``0 <= ts < MAX_TS``, and float weight
===============  ==========================================================================

:class:`EventLog` appends accepted events to ``<dir>/<first offset>.jsonl`` segments, one
per submitted batch, written to a temporary name, fsynced, renamed and the directory
fsynced: when :meth:`EventLog.append` returns the events survive a crash. Offsets
number events from 0 in log order. :meth:`EventLog.carry_from` copies another log's
segments, with their offsets, so a log can take over from an older one (a new embeddings
version takes over the events logged on the one before it).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from pathlib import Path

import pyarrow.parquet as pq

from graphs.exceptions import EventError, NotFoundError, RunDirError
from graphs.feature_rows import parse_value
from graphs.schema import GraphSchema

OPS = ("node", "edge", "remove_edge")
MAX_TS = 2**40          # seconds (about the year 36,800): rejects milli/nanosecond clocks


def read_events(path: str | Path) -> list[dict]:
    """Rows of an events parquet file as dicts (see the module doc for the columns)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{path}: events file not found")
    table = pq.read_table(path)
    missing = [c for c in ("op",) if c not in table.column_names]
    if missing:
        raise EventError(f"{path}: missing column {missing[0]!r}; columns: {table.column_names}")
    return table.to_pylist()


class EventValidator:
    """Checks events against the schema and the node counts so far (base + accepted).

    ``check(events) -> (accepted, errors)``: nodes are checked first, so an edge may name
    a node created anywhere in the same batch; an edge to a node that neither exists nor
    is created in the batch is rejected. Accepted events are normalised (ints, floats,
    attrs as a dict); rejected ones are never applied, and do not stop the others.
    """

    def __init__(self, schema: GraphSchema, counts: dict[str, int]):
        self.schema = schema
        self.counts = dict(counts)
        self.forward = {e.key: e for e in schema.edge_types if not e.rel.startswith("rev_")}
        self.specs = {n.name: {f.name: f for f in n.features if f.kind != "text"} for n in schema.node_types}

    def check(self, events: list[dict]) -> tuple[list[dict], list[EventError]]:
        accepted: dict[int, dict] = {}
        errors: list[EventError] = []
        counts = dict(self.counts)
        for i, ev in enumerate(events):
            if not isinstance(ev, dict):
                errors.append(EventError(f"an event must be an object, got {type(ev).__name__} {ev!r:.80}", index=i))
            elif ev.get("op") not in OPS:
                errors.append(EventError(f"field 'op' is {ev.get('op')!r:.80}, expected one of {OPS}", index=i))
            elif ev["op"] == "node":
                try:
                    accepted[i] = self._node(ev, counts)
                    counts[ev["ntype"]] += 1
                except ValueError as e:           # EventError, or a bad attribute value
                    errors.append(EventError(str(e), index=i))
        for i, ev in enumerate(events):
            if isinstance(ev, dict) and ev.get("op") in ("edge", "remove_edge"):
                try:
                    accepted[i] = self._edge(ev, counts)
                except ValueError as e:           # EventError, or a bad attribute value
                    errors.append(EventError(str(e), index=i))
        self.counts = counts
        return [accepted[i] for i in sorted(accepted)], sorted(errors, key=lambda e: e.index)

    def _node(self, ev: dict, counts: dict[str, int]) -> dict:
        ntype = ev.get("ntype")
        if ntype not in counts:
            raise EventError(f"node type {ntype!r} is unknown; known: {sorted(counts)}")
        nid = _int(ev.get("id"), "id")
        if nid != counts[ntype]:
            raise EventError(f"node id {nid} of type {ntype!r}: expected the next id, {counts[ntype]}")
        attrs = ev.get("attrs") or {}
        if isinstance(attrs, str):
            try:
                attrs = json.loads(attrs)
            except json.JSONDecodeError as e:
                raise EventError(f"field 'attrs' is not JSON ({e})") from None
        if not isinstance(attrs, dict):
            raise EventError(f"field 'attrs' must be an object, got {attrs!r}")
        specs = self.specs[ntype]
        for name, value in attrs.items():
            if name not in specs:
                raise EventError(f"node type {ntype!r} has no attribute {name!r}; known: {sorted(specs)}")
            parse_value(specs[name], value)
        out = {"op": "node", "ntype": ntype, "id": nid, "attrs": attrs}
        if ev.get("raw_id") is not None:
            out["raw_id"] = str(ev["raw_id"])
        return out

    def _edge(self, ev: dict, counts: dict[str, int]) -> dict:
        etype = self.forward.get(ev.get("etype"))
        if etype is None:
            raise EventError(f"edge type {ev.get('etype')!r} is unknown; known: {sorted(self.forward)}")
        out = {"op": ev["op"], "etype": etype.key}
        for field, ntype in (("src", etype.src), ("dst", etype.dst)):
            nid = _int(ev.get(field), field)
            if not 0 <= nid < counts[ntype]:
                raise EventError(f"field {field!r}: {ntype} {nid} does not exist ({counts[ntype]} {ntype} nodes) "
                                 "and is not created in this batch")
            out[field] = nid
        if ev.get("ts") is not None:
            out["ts"] = _int(ev["ts"], "ts")
            if not 0 <= out["ts"] < MAX_TS:
                raise EventError(f"field 'ts': {out['ts']} is not a time in seconds in [0, {MAX_TS})")
        if ev.get("weight") is not None:
            weight = ev["weight"]
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise EventError(f"field 'weight' must be a finite number, got {weight!r}")
            out["weight"] = float(weight)
        return out


def _int(value, field: str) -> int:
    if isinstance(value, bool) or value is None or (isinstance(value, float) and not value.is_integer()):
        raise EventError(f"field {field!r} must be an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise EventError(f"field {field!r} must be an integer, got {value!r}") from None


class EventLog:
    """Durable, append-only log of accepted events, in segments of one batch each."""

    def __init__(self, folder: str | Path, writer: bool = True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if writer:                                        # one writer: the pool
            self._lock = open(self.folder / ".writer.lock", "w")
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock.close()
                raise RunDirError(f"{self.folder}: another process is writing this event log "
                                   "(an update pool or a served Updater); stop it first") from None
            for stale in self.folder.glob(".*.tmp"):      # a crash mid-append: never acknowledged
                stale.unlink()
        self.segments = sorted(int(p.stem) for p in self.folder.glob("*.jsonl"))
        self.end = self.segments[-1] + len(self.read(self.segments[-1])) if self.segments else 0

    def append(self, events: list[dict]) -> int:
        """Write ``events`` durably as one segment; returns its first offset."""
        if not events:
            raise EventError("EventLog.append: no events")
        first = self.end
        final = self.folder / f"{first:012d}.jsonl"
        tmp = self.folder / f".{final.name}.tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(ev, separators=(",", ":")) + "\n" for ev in events)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, final)                               # fails, never overwrites, if it exists
        os.unlink(tmp)
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.segments.append(first)
        self.end = first + len(events)
        return first

    def carry_from(self, folder: str | Path) -> list[int]:
        """Append the segments of the log in ``folder`` from this log's end on, one segment
        each, so offsets stay the same in both; returns their first offsets. This log must
        be a copy of the other up to its end (only carried segments, or none, so far)."""
        other = EventLog(folder, writer=False)
        carried = []
        for first in other.segments:
            if first < self.end:
                continue
            if first != self.end:
                raise EventError(f"{self.folder}: ends at offset {self.end}, but {other.folder} has no segment "
                                 f"there (next one at {first}); the logs have diverged and cannot be carried")
            carried.append(self.append(other.read(first)))
        return carried

    def close(self) -> None:
        """Release the writer's lock (a reader holds none)."""
        lock = getattr(self, "_lock", None)
        if lock is not None and not lock.closed:
            lock.close()

    def tail(self, offset: int, max_segments: int | None = None) -> tuple[int, list[dict]]:
        """A reader's catch-up: the events of the segments from ``offset`` on (at most
        ``max_segments``), and the offset after them. Segments are contiguous, so with
        nothing new this costs one ``stat``."""
        events: list[dict] = []
        read = 0
        while (max_segments is None or read < max_segments) and (self.folder / f"{offset:012d}.jsonl").is_file():
            read += 1
            segment = self.read(offset)
            events.extend(segment)
            offset += len(segment)
        return offset, events

    def read(self, first: int) -> list[dict]:
        """The events of the segment starting at offset ``first``."""
        with open(self.folder / f"{first:012d}.jsonl") as f:     # one event per line: one parse
            return json.loads("[" + ",".join(f.read().splitlines()) + "]")
