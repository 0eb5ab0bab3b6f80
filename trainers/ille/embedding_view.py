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

    ``rows(ntype, ids [N]) -> [N, d]``; ``count(ntype)``; ``has(ntype, ids) -> [N] bool``.
    """

    def __init__(self, run_dir: str | Path, version: Path | None = None):
        run = RunDir(run_dir)
        self.run_dir = run.path
        self.version = version or run.latest_embeddings()
        meta = json.loads((self.version / "meta.json").read_text())
        self.dim, self.base_counts = meta["dim"], meta["counts"]
        self.base = {t: np.load(self.version / f"{t}.npy", mmap_mode="r") for t in self.base_counts}
        self.deltas_dir = run.updates(self.version) / "deltas"
        self.overlay: dict[str, dict[int, np.ndarray]] = {t: {} for t in self.base_counts}
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
            self.overlay[ntype].update(zip(ids.tolist(), rows))
        self.applied.append(offset)

    def count(self, ntype: str) -> int:
        new = [i for i in self.overlay[ntype] if i >= self.base_counts[ntype]]
        return max([self.base_counts[ntype] - 1, *new]) + 1

    def has(self, ntype: str, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        over = self.overlay[ntype]
        return (ids < self.base_counts[ntype]) | np.fromiter((int(i) in over for i in ids), bool, len(ids))

    def rows(self, ntype: str, ids: np.ndarray) -> np.ndarray:
        """``[N, d]`` float32; raises KeyError naming the first id without an embedding."""
        ids = np.asarray(ids, np.int64)
        out = np.empty((len(ids), self.dim), np.float32)
        base, over = ids < self.base_counts[ntype], self.overlay[ntype]
        out[base] = self.base[ntype][ids[base]]
        for n in np.flatnonzero(~base | np.fromiter((int(i) in over for i in ids), bool, len(ids))):
            row = over.get(int(ids[n]))
            if row is None:
                raise KeyError(f"{ntype} {ids[n]}: no embedding (not in base version "
                               f"{self.version.name} nor in any applied update)")
            out[n] = row
        return out
