"""One ILLE updater: the state and work of one Ray actor of the update pool.

Actor ``i`` of ``A`` solves the nodes of the shards ``p`` with ``p % A == i`` (the owner
rule, so a node's actor is ``owner(g) % A``, computed, never looked up). It holds:

- a :class:`~graphs.delta.DeltaGraph`: the memory-mapped base shards plus every half-edge
  added or removed since the base (the delta is replicated in each actor, so all actors see
  the same graph and the answer does not depend on how many there are; it is bounded by the
  events since the last full training, which the pool advises to retrain past 20% new nodes);
- the attributes of every new node (small) and the embeddings as readers see them
  (:class:`~trainers.ille.embedding_view.EmbeddingView`: base mmapped + applied deltas);
- HetSGFormer's identity layer, for the input space of the reconstruction weights.

:meth:`prepare` turns one log segment into this actor's rows of the batch's ILLE system.
The batch's unknowns are the same for every actor (:meth:`ShardUpdater.targets`): the
nodes it creates and the nodes ILLE created earlier that it touches. Trained rows stay
fixed unless ``ILLEConfig.change_threshold`` asks otherwise;
the pool solves the batch and writes the delta; :meth:`commit` records the offset. A
restarted actor rebuilds its state from the log segments already committed (those with a
delta file), so nothing is applied twice and nothing acknowledged is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from graphs.delta import DeltaGraph
from graphs.events import EventLog
from graphs.samplers import NeighborSets, concat_neighbors, merge_neighbors, node_key, select_neighbors, split_key
from graphs.shards import ShardStore, owner
from graphs.store import GraphDir, write_json_atomic
from trainers.features import FeatureStore
from trainers.hetsgformer.identity import IdentityEmbedding
from trainers.hetsgformer.train import TrainConfig
from trainers.ille.embedding_view import EmbeddingView
from trainers.ille.inputs import InputSpace
from trainers.ille.weights import ILLEConfig, lle_weights
from trainers.ray_train import load_state
from trainers.run_dir import RunDir


def load_identity_layer(run: RunDir, view: EmbeddingView, schema) -> IdentityEmbedding:
    """The IEL of the checkpoint the base embeddings were exported from."""
    model_cfg = TrainConfig.from_json(run.train_config).model
    checkpoint = Path(json.loads((view.version / "meta.json").read_text())["checkpoint"])
    state = load_state(checkpoint)["model"]
    iel = IdentityEmbedding(schema, model_cfg)
    iel.load_state_dict({k[len("iel."):]: v for k, v in state.items() if k.startswith("iel.")})
    return iel.eval()


class ShardUpdater:
    """ILLE for the nodes of the shards this actor owns (see the module doc)."""

    def __init__(self, run_dir: str, index: int, num_actors: int, cfg: ILLEConfig):
        run = RunDir(run_dir)
        self.run_dir, self.index, self.num_actors, self.cfg = run.path, index, num_actors, cfg
        self.store = ShardStore(run.parts)
        self.graph = DeltaGraph(self.store)
        self.types = [n.name for n in self.store.schema.node_types]
        self.features = FeatureStore(GraphDir(run.graph, validate="none"))
        schema = self.store.schema
        target = schema.edge_type(schema.interaction_type(TrainConfig.from_json(run.train_config).target))
        self.target = (target.src, target.dst)
        self.view = EmbeddingView(self.run_dir)
        self.inputs = InputSpace(load_identity_layer(run, self.view, self.store.schema),
                                 self.features, self.graph, self.types, cfg.structure_weight)
        self.state_path = run.updates(self.view.version) / f"actor-{index:03d}.json"
        self.log = EventLog(run.updates(self.view.version) / "log", writer=False)
        self.applied = -1                      # last segment applied to the graph
        self._columns_of: tuple = (None, None)  # (segment, its _columns)
        self._catch_up()                       # replay what was committed before a restart

    def owns(self, ntype: str, ids: np.ndarray) -> np.ndarray:
        g = self.store.schema.offsets[ntype] + np.asarray(ids, np.int64)
        return owner(g, self.store.num_parts) % self.num_actors == self.index

    def _catch_up(self) -> None:
        """Apply the committed segments (those with a delta) this actor has not applied. A
        restart reads the deltas when it starts; one written after that (the actor died once
        its rows were sent, before the pool wrote the delta) is applied here, from the log."""
        self.view.refresh()
        for first in sorted(self.view.applied):
            if first > self.applied:
                self._apply_events(first, self.log.read(first))

    def _apply_events(self, first: int, events: list[dict]) -> None:
        if first <= self.applied:
            return
        nodes, edges = self._segment(first, events)
        for ntype, rows in nodes.items():
            self.features.append(ntype, self.graph.counts[ntype], rows)
            self.graph.add_nodes(ntype, len(rows))
        for (op, ekey), (src, dst, ts, weight) in edges.items():
            etype = self.graph.edge_types[ekey]
            for key, a, b in ((ekey, src, dst), (etype.reverse().key, dst, src)):
                if op == "edge":
                    self.graph.add_edges(key, a, b, ts, weight)
                else:
                    self.graph.remove_edges(key, a, b)
        self.applied = first

    def _segment(self, first: int, events: list[dict]) -> tuple[dict, dict]:
        """:func:`_columns` of segment ``first``, computed once."""
        if self._columns_of[0] != first:
            self._columns_of = (first, _columns(events))
        return self._columns_of[1]

    def targets(self, first: int, events: list[dict]) -> np.ndarray:
        """Keys of the batch's unknowns, sorted, the same on every actor: the nodes the batch
        creates, the nodes created by earlier batches that it touches (ILLE's own rows: any
        change matters), and, only with ``cfg.change_threshold`` set, trained nodes whose
        half-edges added or removed since the base reach that fraction of their base degree.
        Trained rows are otherwise left as training made them. ``first``: the segment's
        offset (its columns are those :meth:`_apply_events` built)."""
        created = np.array([node_key(self.types.index(e["ntype"]), e["id"]) for e in events if e["op"] == "node"],
                           np.int64)
        keys = [created]
        for (_, ekey), (src, dst, _, _) in self._segment(first, events)[1].items():
            etype = self.graph.edge_types[ekey]
            for ntype, ids in ((etype.src, src), (etype.dst, dst)):
                if self.cfg.change_threshold is None:
                    ids = ids[ids >= self.graph.base_counts[ntype]]
                keys.append(node_key(self.types.index(ntype), ids))
        keys = np.unique(np.concatenate(keys))
        if self.cfg.change_threshold is None or not len(keys):
            return keys
        t_idx, ids = split_key(keys)
        keep = np.ones(len(keys), bool)
        for t in np.unique(t_idx):
            ntype, sel = self.types[t], np.flatnonzero(t_idx == t)
            base = sel[ids[sel] < self.graph.base_counts[ntype]]
            base_deg = sum(self.store.degree(e.key, ids[base]) for e in self.graph.edge_types_from(ntype))
            changed = self.graph.changed(ntype, ids[base])
            keep[base] = changed >= np.maximum(1, self.cfg.change_threshold * base_deg)
        return keys[keep | np.isin(keys, created)]

    def prepare(self, first: int, events: list[dict] | None = None) -> dict:
        """Apply a segment (``events``; None: read from the log) to this actor's graph; return
        its targets' rows of the ILLE system.

        Returns ``targets [B]`` keys, ``status [B]``, ``b [B, D]`` (weighted sum over known
        neighbours), ``direct [B]`` (has a known neighbour), the unknown-neighbour weights
        ``rows [M]`` (index into targets), ``cols [M]`` (keys, new in this batch), ``w [M]``,
        ``old [B, D]`` the targets' embeddings before (NaN for new nodes), for drift, and the
        segment's ``events`` and ``created`` (new nodes) counts.
        """
        events = self.log.read(first) if events is None else events
        self._apply_events(first, events)
        unknown_keys = self.targets(first, events)
        t_idx, ids = split_key(unknown_keys)
        mine = np.zeros(len(unknown_keys), bool)
        for t in np.unique(t_idx):
            mine[t_idx == t] = self.owns(self.types[t], ids[t_idx == t])
        targets = unknown_keys[mine]
        sets = self._neighbours(targets)
        B, deg = len(targets), np.diff(sets.ptr)
        K = int(deg.max()) if B else 0
        owner_b = np.repeat(np.arange(B), deg)
        slot = np.arange(len(sets.keys)) - np.repeat(sets.ptr[:-1], deg)
        x = self.inputs(np.concatenate([targets, sets.keys]))
        nb = np.zeros((B, K, x.shape[1]))
        mask = np.zeros((B, K), bool)
        nb[owner_b, slot], mask[owner_b, slot] = x[B:], True
        degree = np.zeros((B, K))
        degree[owner_b, slot] = self._degree(sets.keys)
        w, status = lle_weights(x[:B], nb, mask, self.cfg.reg, degree)
        w_flat = w[owner_b, slot]
        unknown = np.isin(sets.keys, unknown_keys)
        b = np.zeros((B, self.view.dim))
        known = np.flatnonzero(~unknown)
        if len(known):
            np.add.at(b, owner_b[known], w_flat[known, None] * self._rows(sets.keys[known]))
        direct = np.bincount(owner_b[known], minlength=B) > 0
        old = np.full((B, self.view.dim), np.nan, np.float32)
        t_idx, ids = split_key(targets)
        trained = ids < np.array([self.graph.base_counts[t] for t in self.types])[t_idx]
        if trained.any():                                     # rows of the last full training
            old[trained] = self._rows(targets[trained])
        created = sum(map(len, self._segment(first, events)[0].values()))
        return {"targets": targets, "status": status, "b": b, "direct": direct, "old": old,
                "events": len(events), "created": created,
                "rows": owner_b[unknown], "cols": sets.keys[unknown], "w": w_flat[unknown]}

    def commit(self, first: int) -> int:
        """The pool wrote segment ``first``'s delta: read it (applying the segment's events if
        this actor restarted after preparing it) and record the offset."""
        self._catch_up()
        write_json_atomic(self.state_path, {"applied": first, "deltas_read": len(self.view.applied)})
        return first

    def new_edges(self) -> int:
        """Half-edges this actor has added since the base (a check for tests and stats)."""
        return sum(len(log.columns()[0]) for log in self.graph._added.values())

    def _neighbours(self, targets: np.ndarray) -> NeighborSets:
        """Each target's reconstruction neighbours (``targets`` sorted, so grouped by type): of
        the types ``cfg.neighbour_types`` allows for it; a target left with none by that
        rule takes them of any type."""
        cfg = self.cfg
        k = cfg.k_for if cfg.adaptive_k else cfg.k
        t_idx = split_key(targets)[0]
        parts = []
        for t in np.unique(t_idx):
            group = targets[t_idx == t]
            adjacent = {e.dst for e in self.graph.edge_types_from(self.types[t])}
            allowed = [self.types.index(n) for n in cfg.allowed(self.types[t], self.types, self.graph.counts, adjacent,
                                                                 self.target)]
            usable = (lambda keys, a=np.array(allowed): np.isin(split_key(keys)[0], a))
            sets = select_neighbors(self.graph, self.types, group, k, cfg.scan, cfg.expand, cfg.scan2, usable,
                                    cfg.walk_all)
            empty = np.flatnonzero(np.diff(sets.ptr) == 0)
            if len(empty) and len(allowed) < len(self.types):
                sets = merge_neighbors(sets, empty, select_neighbors(self.graph, self.types, group[empty], k,
                                                                     cfg.scan, cfg.expand, cfg.scan2))
            parts.append(sets)
        return concat_neighbors(parts)

    def _rows(self, keys: np.ndarray) -> np.ndarray:
        t_idx, ids = split_key(keys)
        out = np.empty((len(keys), self.view.dim), np.float32)
        for t in np.unique(t_idx):
            sel = np.flatnonzero(t_idx == t)
            out[sel] = self.view.rows(self.types[t], ids[sel])
        return out

    def _degree(self, keys: np.ndarray) -> np.ndarray:
        t_idx, ids = split_key(keys)
        out = np.zeros(len(keys))
        for t in np.unique(t_idx):
            sel = np.flatnonzero(t_idx == t)
            out[sel] = sum(self.graph.degree(e.key, ids[sel]) for e in self.graph.edge_types_from(self.types[t]))
        return out


def _columns(events: list[dict]) -> tuple[dict[str, list[dict]], dict[tuple[str, str], tuple]]:
    """One pass over a segment: the new nodes' attributes per type, in order, and the
    edges per ``(op, etype)`` as columns ``(src [E], dst [E], ts [E], weight [E])``."""
    nodes: dict[str, list[dict]] = {}
    edges: dict[tuple[str, str], list[tuple]] = {}
    for ev in events:
        if ev["op"] == "node":
            nodes.setdefault(ev["ntype"], []).append(ev.get("attrs") or {})
        else:
            edges.setdefault((ev["op"], ev["etype"]), []).append(
                (ev["src"], ev["dst"], ev.get("ts", 0), ev.get("weight", 1.0)))
    columns = {}
    for key, rows in sorted(edges.items()):
        src, dst, ts, weight = zip(*rows)
        columns[key] = (np.array(src, np.int64), np.array(dst, np.int64), np.array(ts, np.int64),
                        np.array(weight, np.float32))
    return nodes, columns
