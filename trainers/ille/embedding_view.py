"""Embeddings as readers see them while ILLE updates run: a base version plus deltas.

Layout (DESIGN.md's embeddings contract, plus the update deltas of one base version)::

    <run>/embeddings/vNNNN/<ntype>.npy              base, float32 [count, d], memory-mapped
    <run>/updates/vNNNN/deltas/<offset>.npz         one per applied update batch:
                                                    <ntype>.ids int64 [n], <ntype>.rows float32 [n, d]

A delta's rows replace the base row (an existing node re-solved) or extend the type (a
new node, ids from ``count`` on). :meth:`EmbeddingView.refresh` reads the deltas written
since the last call, so a reader (the retrieval index, an updater actor) follows the
updates without copying the base. Memory is the updated rows only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trainers.run_dir import RunDir


class EmbeddingView:
    """Base embeddings (mmapped) overlaid with the update deltas.

    ``rows(ntype, ids [N]) -> [N, d]``; ``count(ntype)``; ``has(ntype, ids) -> [N] bool``;
    ``updated(ntype) -> [n]`` the ids the deltas wrote.
    """

    def __init__(self, run_dir: str | Path, version: Path | None = None):
        run = RunDir(run_dir)
        self.run_dir = run.path
        self.version = version or run.latest_embeddings()
        meta = json.loads((self.version / "meta.json").read_text())
        self.dim, self.base_counts = meta["dim"], meta["counts"]
        self.base = {t: np.load(self.version / f"{t}.npy", mmap_mode="r") for t in self.base_counts}
        self.deltas_dir = run.updates(self.version) / "deltas"
        d = self.dim
        # the overlay, as arrays: rows of new ids (id - count; ``_has`` marks those written)
        # and the re-solved trained rows (sorted ids)
        self._new = {t: np.zeros((0, d), np.float32) for t in self.base_counts}
        self._has = {t: np.zeros(0, bool) for t in self.base_counts}
        self._n_new = dict.fromkeys(self.base_counts, 0)
        self._fixed = {t: (np.zeros(0, np.int64), np.zeros((0, d), np.float32)) for t in self.base_counts}
        self.applied: list[int] = []                  # delta offsets read, in order
        self.refresh()

    def refresh(self) -> int:
        """Read deltas not seen yet; returns how many were read."""
        if not self.deltas_dir.is_dir():
            return 0
        seen = set(self.applied)
        new = sorted(int(p.stem) for p in self.deltas_dir.glob("*.npz") if int(p.stem) not in seen)
        for offset in new:
            self.apply(offset, self.load_delta(offset))
        return len(new)

    def load_delta(self, offset: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        with np.load(self.deltas_dir / f"{offset:012d}.npz") as z:
            return {k[:-4]: (z[k], z[k[:-4] + ".rows"]) for k in z.files if k.endswith(".ids")}

    def apply(self, offset: int, delta: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        for ntype, (ids, rows) in delta.items():
            ids, rows = np.asarray(ids, np.int64), np.asarray(rows, np.float32)
            base = self.base_counts[ntype]
            new = ids >= base
            if new.any():
                j = ids[new] - base
                need = int(j.max()) + 1
                if need > len(self._has[ntype]):                  # grow by doubling: amortised O(batch)
                    cap = max(need, 2 * len(self._has[ntype]))
                    grown = np.zeros((cap, self.dim), np.float32)
                    grown[:len(self._new[ntype])] = self._new[ntype]
                    has = np.zeros(cap, bool)
                    has[:len(self._has[ntype])] = self._has[ntype]
                    self._new[ntype], self._has[ntype] = grown, has
                self._new[ntype][j], self._has[ntype][j] = rows[new], True
                self._n_new[ntype] = max(self._n_new[ntype], need)
            if (~new).any():                                      # re-solved trained rows: the last wins
                old_ids, old_rows = self._fixed[ntype]
                all_ids = np.concatenate([ids[~new], old_ids])
                all_rows = np.concatenate([rows[~new], old_rows])
                keep = np.unique(all_ids, return_index=True)[1]
                self._fixed[ntype] = (all_ids[keep], all_rows[keep])
        self.applied.append(offset)

    def updated(self, ntype: str) -> np.ndarray:
        """``[n]`` sorted ids whose rows come from the deltas (new or re-solved)."""
        return np.concatenate([self._fixed[ntype][0], self.base_counts[ntype] + np.flatnonzero(self._has[ntype])])

    def count(self, ntype: str) -> int:
        return self.base_counts[ntype] + self._n_new[ntype]

    def has(self, ntype: str, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        j = ids - self.base_counts[ntype]
        out = j < 0
        new = (j >= 0) & (j < self._n_new[ntype])
        out[new] = self._has[ntype][j[new]]
        return out

    def rows(self, ntype: str, ids: np.ndarray) -> np.ndarray:
        """``[N, d]`` float32; raises KeyError naming the first id without an embedding."""
        ids = np.asarray(ids, np.int64)
        out = np.empty((len(ids), self.dim), np.float32)
        base = ids < self.base_counts[ntype]
        out[base] = self.base[ntype][ids[base]]
        fixed_ids, fixed_rows = self._fixed[ntype]
        if len(fixed_ids) and base.any():
            at = np.minimum(np.searchsorted(fixed_ids, ids), len(fixed_ids) - 1)
            hit = base & (fixed_ids[at] == ids)
            out[hit] = fixed_rows[at[hit]]
        missing = ~base & ~self.has(ntype, ids)
        if missing.any():
            n = int(np.flatnonzero(missing)[0])
            raise KeyError(f"{ntype} {ids[n]}: no embedding (not in base version "
                           f"{self.version.name} nor in any applied update)")
        out[~base] = self._new[ntype][ids[~base] - self.base_counts[ntype]]
        return out
