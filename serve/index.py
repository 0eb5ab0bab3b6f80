"""Item retrieval: a faiss index over item embeddings that takes live updates.

Scores are cosine similarities (rows L2-normalised, inner-product metric), the way the
evaluation harness scores. :func:`index_spec` picks the faiss index from the catalogue
size, one factory string for :func:`faiss.index_factory`:

- up to ``exact_max`` items: ``Flat``, exact;
- up to ``ivf_max``: ``IVF{nlist},Flat`` with ``nlist ~ 4 sqrt(N)``, probing ``nprobe`` lists;
- beyond: ``HNSW{m}``, graph search, no training.

Updates (new items, or items ILLE re-solved) go to a small exact side index; the main
index's copies of those ids are tombstoned, and searches merge both, fetching past the
tombstones. :meth:`ItemIndex.compact` rebuilds one index, automatically once the side
index holds ``compact_at`` rows, which bounds that over-fetch (``compact=False``: the
owner rebuilds aside instead, as the Serve replicas do with :mod:`serve.versions`).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from graphs.exceptions import ConfigError


@dataclass(frozen=True)
class IndexConfig:
    """Index choice and search settings (see the module doc)."""

    exact_max: int = 200_000
    ivf_max: int = 5_000_000
    nprobe: int = 32
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    compact_at: int = 10_000
    train_per_list: int = 40

    def __post_init__(self) -> None:
        for name in ("exact_max", "ivf_max", "nprobe", "hnsw_m", "hnsw_ef_search", "compact_at", "train_per_list"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"IndexConfig.{name} must be an int >= 1, got {getattr(self, name)!r}")


def index_spec(count: int, cfg: IndexConfig = IndexConfig()) -> str:
    """The faiss factory string for a catalogue of ``count`` items."""
    if count <= cfg.exact_max:
        return "Flat"
    if count <= cfg.ivf_max:
        return f"IVF{int(4 * np.sqrt(count))},Flat"
    return f"HNSW{cfg.hnsw_m}"


def _unit(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    """Validated, L2-normalised, C-contiguous float32 ``[N, dim]`` (faiss crashes on less)."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ConfigError(f"{what}: expected shape [N, {dim}], got {list(vectors.shape)}")
    if not np.isfinite(vectors).all():
        raise ConfigError(f"{what}: contains NaN or infinite values")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12))


def _build(vectors: np.ndarray, ids: np.ndarray, spec: str, cfg: IndexConfig) -> faiss.Index:
    dim = vectors.shape[1]
    index = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    if spec.startswith("HNSW"):
        index.hnsw.efSearch = cfg.hnsw_ef_search
    if not index.is_trained:                      # IVF: coarse centroids from a sample
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(len(vectors), min(len(vectors), cfg.train_per_list * index.nlist), replace=False)]
        index.train(sample)
        index.nprobe = cfg.nprobe
        index.make_direct_map()                   # so compact() can read rows back
    mapped = faiss.IndexIDMap2(index)
    if len(ids):
        mapped.add_with_ids(vectors, ids.astype(np.int64))
    return mapped


class ItemIndex:
    """Top-k cosine search over items, with upserts.

    ``ItemIndex(vectors [N, d], ids [N] or None)``; ``search(queries [B, d], k, exclude)``
    returns ``(ids [B, k] int64, scores [B, k] float32)``, -1 / -inf where fewer than k
    items are left; ``upsert(ids [M], vectors [M, d])``; ``version`` names the embeddings
    the index was built from and is moved by updates.
    """

    def __init__(self, vectors: np.ndarray, ids: np.ndarray | None = None, cfg: IndexConfig = IndexConfig(),
                 version: str = "", compact: bool = True):
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] < 1:
            raise ConfigError(f"vectors: expected shape [N, d], got {list(vectors.shape)}")
        self.dim, self.cfg, self.version, self.auto_compact = vectors.shape[1], cfg, version, compact
        ids = np.arange(len(vectors), dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        if ids.shape != (len(vectors),) or len(np.unique(ids)) != len(ids):
            raise ConfigError(f"ids: expected {len(vectors)} distinct ids, got shape {list(ids.shape)}")
        vectors = _unit(vectors, self.dim, "vectors")
        self.spec = index_spec(len(vectors), cfg)
        self.main, self.main_ids = _build(vectors, ids, self.spec, cfg), np.sort(ids)
        self.side = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self.stale: set[int] = set()          # ids whose main-index row is out of date
        self.deltas: set[int] = set()         # update deltas folded in (see follow)

    @classmethod
    def from_view(cls, view, ntype: str, cfg: IndexConfig = IndexConfig(), compact: bool = True,
                  shared: bool = False) -> ItemIndex:
        """Index every ``ntype`` row of an :class:`~trainers.ille.embedding_view.EmbeddingView`
        (base plus applied updates); :meth:`follow` then keeps it current. ``shared``: an
        approximate (IVF/HNSW) index of the base rows is built once per version and kept in
        ``<version>/index/`` for every other replica to read (:func:`shared_main`); the
        update deltas go on top of it, into the side index."""
        view.refresh()
        count = view.base_counts[ntype]
        spec = index_spec(count, cfg)
        if not shared or spec == "Flat":                  # exact: building costs less than reading
            index = cls(view.rows(ntype, np.arange(view.count(ntype))), cfg=cfg, version=_version(view),
                        compact=compact)
            index.deltas = set(view.applied)
            return index
        index = cls(np.zeros((0, view.dim), np.float32), cfg=cfg, version=_version(view), compact=compact)
        index.main = shared_main(view.base[ntype], view.version / "index" / f"{ntype}-{spec}-t{cfg.train_per_list}.faiss",
                                 spec, cfg)
        index.spec, index.main_ids = spec, np.arange(count, dtype=np.int64)
        index.follow(view, ntype)
        return index

    def follow(self, view, ntype: str) -> int:
        """Upsert the ``ntype`` rows of the view's update deltas not seen yet; returns the count."""
        view.refresh()
        new = [off for off in view.applied if off not in self.deltas]
        rows = 0
        for off in new:
            ids, vectors = view.load_delta(off).get(ntype, (np.zeros(0, np.int64), None))
            if len(ids):
                self.upsert(ids, vectors)
                rows += len(ids)
            self.deltas.add(off)
        self.version = _version(view)
        return rows

    def __len__(self) -> int:
        return self.main.ntotal - len(self.stale) + self.side.ntotal

    def upsert(self, ids: np.ndarray, vectors: np.ndarray, version: str | None = None) -> None:
        """New or changed items: searchable on return."""
        ids = np.asarray(ids, np.int64).ravel()
        vectors = _unit(vectors, self.dim, "upsert vectors")
        if len(ids) != len(vectors):
            raise ConfigError(f"upsert: {len(ids)} ids for {len(vectors)} vectors")
        self.side.remove_ids(ids)
        self.side.add_with_ids(vectors, ids)
        self.stale.update(ids[np.isin(ids, self.main_ids)].tolist())
        if version is not None:
            self.version = version
        if self.auto_compact and self.side.ntotal >= self.cfg.compact_at:
            self.compact()

    def compact(self) -> None:
        """Fold the side index into a rebuilt main index (type chosen again by size)."""
        ids, vectors = self._rows(self.main, exclude=self.stale)
        side_ids, side_vectors = self._rows(self.side)
        ids, vectors = np.concatenate([ids, side_ids]), np.concatenate([vectors, side_vectors])
        self.spec = index_spec(len(ids), self.cfg)
        self.main, self.main_ids = _build(vectors, ids, self.spec, self.cfg), np.sort(ids)
        self.side.reset()
        self.stale.clear()

    def search(self, queries: np.ndarray, k: int, exclude: list[set[int]] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` items per query, none of ``exclude[b]`` (e.g. the user's history)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be an int >= 1, got {k!r}")
        queries = _unit(queries, self.dim, "queries")
        B = len(queries)
        if exclude is not None and len(exclude) != B:
            raise ConfigError(f"exclude: {len(exclude)} sets for {B} queries")
        skip = max((len(e) for e in exclude), default=0) if exclude else 0
        fetch = k + skip + len(self.stale)
        out_ids = np.full((B, k), -1, np.int64)
        out_scores = np.full((B, k), -np.inf, np.float32)
        parts = []
        for index, stale in ((self.main, self.stale), (self.side, ())):
            if index.ntotal:
                scores, ids = index.search(queries, min(fetch, index.ntotal))
                if stale:
                    ids = np.where(np.isin(ids, np.fromiter(stale, np.int64, len(stale))), -1, ids)
                parts.append((ids, scores))
        if not parts:
            return out_ids, out_scores
        ids, scores = (np.concatenate(p, axis=1) for p in zip(*parts))       # [B, fetched]
        for b in range(B):
            keep = ids[b] != -1
            if exclude and exclude[b]:
                keep &= ~np.isin(ids[b], np.fromiter(exclude[b], np.int64, len(exclude[b])))
            got_ids, got_scores = ids[b][keep], scores[b][keep]
            if len(parts) > 1:                                                 # main and side: merge
                order = np.argsort(-got_scores, kind="stable")
                got_ids, got_scores = got_ids[order], got_scores[order]
            out_ids[b, :min(k, len(got_ids))], out_scores[b, :min(k, len(got_ids))] = got_ids[:k], got_scores[:k]
        return out_ids, out_scores

    def _rows(self, index: faiss.IndexIDMap2, exclude: set[int] = frozenset()):
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        keep = np.array([i not in exclude for i in ids.tolist()], bool)
        vectors = np.stack([index.reconstruct(int(i)) for i in ids[keep]]) if keep.any() \
            else np.zeros((0, self.dim), np.float32)
        return ids[keep], vectors


def shared_main(base: np.ndarray, path: Path, spec: str, cfg: IndexConfig) -> faiss.Index:
    """The index of ``base`` ``[N, d]`` (ids 0..N-1) kept at ``path``: read when it is there
    and whole, else built by one process while the others wait on a lock, written to a
    temporary name and renamed. A version's rows never change, and the build is seeded, so
    every replica gets the same index (and on a filesystem without locks, each builds it)."""
    def read() -> faiss.Index | None:
        try:
            main = faiss.read_index(str(path))
        except (RuntimeError, OSError):                   # missing, or cut short
            return None
        if main.ntotal != len(base) or main.d != base.shape[1]:
            return None
        inner = faiss.downcast_index(main.index)
        if spec.startswith("HNSW"):
            inner.hnsw.efSearch = cfg.hnsw_ef_search
        else:
            inner.nprobe = cfg.nprobe
            inner.make_direct_map()
        return main

    main = read()
    if main is not None:
        return main
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)                  # one builder; the others read its file
        main = read()
        if main is None:
            main = _build(_unit(base, base.shape[1], "vectors"), np.arange(len(base), dtype=np.int64), spec, cfg)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            faiss.write_index(main, str(tmp))
            os.replace(tmp, path)
    return main


def _version(view) -> str:
    """``v0003`` for a base version, ``v0003+12`` once 12 update deltas are applied."""
    return view.version.name + (f"+{len(view.applied)}" if view.applied else "")
