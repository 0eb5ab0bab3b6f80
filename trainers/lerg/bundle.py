"""The LERG device bundle: one ``.npz`` (no pickles) that a device loads with numpy alone.

Arrays (E = users + items, R retained, P = E - R pruned, C codes, K placeholders, D dims)::

    header            uint8 [*]      UTF-8 JSON: format, version, num_users, num_items, dim, bits, layers, anchor
    codebook          int8/int16 [C, D] (bits 8/16) or uint8 [C, D/2] (bits 4, two per byte); float32 if bits is None
    codebook_scale    float32 [C]
    index             uint8/uint16/uint32 [R, t]   the retained entities' codes, in entity order
    weight            float16 [R, t]               only when the composition weights were trained
    retained          uint8 [ceil(E/8)]            np.packbits of the retained mask
    placeholders      as ``codebook``, [K, D];  placeholder_scale float32 [K]
    placeholder_of    uint8/uint16/uint32 [P]      each pruned entity's placeholder
    degree            uint32 [E]                   degrees of the full graph (the normalisation)
    graph_indptr      uint32 [E + 1], graph_indices uint32 [nnz]   the rewired graph: row j lists the retained
                                                   entities j receives from

Optionally, for a device that cannot propagate a large catalogue (:func:`scoring_arrays`)::

    pq_centroids      float16 [M, 256, D / M]    faiss ProductQuantizer sub-centroids of the items' propagated rows
    pq_codes          uint8 [N, M]               every item's propagated row, M bytes

``table bytes`` (what the size ratio counts, against the float32 table E x D x 4) are every
array but the graph, its degrees and the PQ codes, which are stated apart (:func:`bundle_sizes`).
"""

from __future__ import annotations

import functools
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphs.exceptions import ConfigError, HetrecError
from graphs.store import atomic_file
from trainers.lerg.codebook import quantise

FORMAT, VERSION = "hetrec-lerg-device", 1
GRAPH_KEYS = ("degree", "graph_indptr", "graph_indices")
SCORING_KEYS = ("pq_centroids", "pq_codes")


class BundleError(HetrecError):
    """A device bundle that cannot be read: names the file and what is wrong."""


def smallest_uint(limit: int) -> type:
    return np.uint8 if limit <= 1 << 8 else np.uint16 if limit <= 1 << 16 else np.uint32


def pack(x: np.ndarray, bits: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Quantise rows of x [C, D] and pack 4-bit values two per byte."""
    q, scale = quantise(x, bits)
    if bits == 4:
        nib = (q.astype(np.int16) & 0xF).astype(np.uint8)  # two's complement nibbles
        if nib.shape[1] % 2:
            nib = np.pad(nib, ((0, 0), (0, 1)))
        q = nib[:, 0::2] | (nib[:, 1::2] << 4)
    return q, scale


def unpack(q: np.ndarray, scale: np.ndarray, bits: int | None, dim: int) -> np.ndarray:
    """Rows back to float32 [C, D]."""
    if bits == 4:
        nib = np.stack([q & 0xF, q >> 4], axis=2).reshape(len(q), -1)[:, :dim].astype(np.int8)
        q = np.where(nib > 7, nib - 16, nib)
    return q.astype(np.float32) * scale[:, None]


def bundle_arrays(state) -> dict[str, np.ndarray]:
    """The arrays of :class:`trainers.lerg.model.LERGState` ``state``'s bundle (module doc)."""
    table, n = state.table, len(state.retained)
    codebook = table.codebook.detach().numpy()
    weight = table.weight.detach().numpy()
    keep = state.retained
    header = {"format": FORMAT, "version": VERSION, "num_users": state.num_users,
              "num_items": n - state.num_users, "dim": int(codebook.shape[1]), "bits": state.bits,
              "layers": state.layers, "anchor": weight[0].tolist()}
    arrays = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    arrays["codebook"], arrays["codebook_scale"] = pack(codebook, state.bits)
    arrays["index"] = table.index.numpy()[keep].astype(smallest_uint(len(codebook)))
    if table.weight.requires_grad:
        arrays["weight"] = weight[keep].astype(np.float16)
    arrays["retained"] = np.packbits(keep)
    arrays["placeholders"], arrays["placeholder_scale"] = pack(state.placeholders, state.bits)
    arrays["placeholder_of"] = state.placeholder_of[~keep].astype(smallest_uint(len(state.placeholders)))
    adj = state.adj
    arrays["degree"] = np.asarray(state.degree, dtype=np.uint32)
    arrays["graph_indptr"], arrays["graph_indices"] = adj.indptr.astype(np.uint32), adj.indices.astype(np.uint32)
    return arrays


def scoring_arrays(state, subvectors: int = 16) -> dict[str, np.ndarray]:
    """The items' propagated rows [N, D] as faiss product-quantiser codes, ``subvectors`` bytes
    an item, so a device scores a large catalogue without propagating (``pq_*`` above)."""
    import faiss

    items = np.ascontiguousarray(state.final().numpy()[state.num_users:], dtype=np.float32)  # [N, D]
    n, dim = items.shape
    if n < 256 or dim % subvectors:
        raise ConfigError(f"PQ scoring needs at least 256 items and dim ({dim}) divisible by subvectors "
                          f"({subvectors}); got {n:,} items")
    pq = faiss.ProductQuantizer(dim, subvectors, 8)
    pq.cp.min_points_per_centroid = 1   # small catalogues train on what they have
    rows = items[np.random.default_rng(0).permutation(n)[:256 * 256]]
    pq.train(rows)
    centroids = faiss.vector_to_array(pq.centroids).reshape(subvectors, 256, dim // subvectors)
    return {"pq_centroids": centroids.astype(np.float16), "pq_codes": pq.compute_codes(items)}


def write_bundle(state, out: str | Path, pq_subvectors: int = 0) -> Path:
    """Write ``state``'s bundle to ``out`` (a ``.npz``), atomically (a temporary file in the
    same folder, then renamed); ``pq_subvectors`` > 0 adds the PQ scoring codes."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = bundle_arrays(state)
    if pq_subvectors:
        arrays.update(scoring_arrays(state, pq_subvectors))
    with atomic_file(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)  # a file object: np.savez would add ".npz" to a path
    return out


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: ``header`` (dict) and its arrays."""

    path: Path
    header: dict
    arrays: Mapping[str, np.ndarray]

    @property
    def num_entities(self) -> int:
        return self.header["num_users"] + self.header["num_items"]

    @functools.cached_property
    def retained(self) -> np.ndarray:
        """The retained mask [E] bool, unpacked once."""
        return np.unpackbits(self.arrays["retained"], count=self.num_entities).astype(bool)

    def layer0(self, ids: np.ndarray | None = None) -> np.ndarray:
        """Layer-0 rows of entities ``ids`` [K] (None: all): [K, D] float32."""
        h, a = self.header, self.arrays
        meta = unpack(a["codebook"], a["codebook_scale"], h["bits"], h["dim"])
        keep = self.retained
        # each entity's position among the retained (codes) or the pruned (placeholders)
        if ids is None:
            ids = np.arange(self.num_entities)
            slot = np.where(keep, np.cumsum(keep) - 1, np.cumsum(~keep) - 1)
        else:  # a few rows: count without an [E] index array
            ids = np.asarray(ids, dtype=np.int64)
            before = np.array([np.count_nonzero(keep[:i]) for i in ids], dtype=np.int64)
            slot = np.where(keep[ids], before, ids - before)
        out = np.empty((len(ids), h["dim"]), dtype=np.float32)
        kept = keep[ids]
        idx = a["index"][slot[kept]].astype(np.int64)  # [R', t]
        weight = a["weight"][slot[kept]].astype(np.float32) if "weight" in a else \
            np.broadcast_to(np.asarray(h["anchor"], dtype=np.float32), idx.shape)
        out[kept] = np.einsum("rt,rtd->rd", weight, meta[idx])
        ph = unpack(a["placeholders"], a["placeholder_scale"], h["bits"], h["dim"])
        out[~kept] = ph[a["placeholder_of"][slot[~kept]].astype(np.int64)]
        return out

REQUIRED = ("header", "codebook", "codebook_scale", "index", "retained", "placeholders", "placeholder_scale",
            "placeholder_of", *GRAPH_KEYS)


class LazyArrays(Mapping):
    """A bundle's arrays, each read from the open ``.npz`` when first used (a device that
    scores from PQ codes never reads the graph); :meth:`info` reads a shape and dtype only."""

    def __init__(self, npz: np.lib.npyio.NpzFile):
        self._npz, self._cache = npz, {}

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = self._npz[key]
        return self._cache[key]

    def __contains__(self, key) -> bool:  # Mapping's default would read the array
        return key in self._npz.files

    def __iter__(self):
        return iter(self._npz.files)

    def __len__(self) -> int:
        return len(self._npz.files)

    def info(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        with self._npz.zip.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
        return shape, dtype


def _rows(arrays: Mapping, key: str) -> int:
    return arrays.info(key)[0][0] if isinstance(arrays, LazyArrays) else len(arrays[key])


def _nbytes(arrays: Mapping, key: str) -> int:
    if isinstance(arrays, LazyArrays):
        shape, dtype = arrays.info(key)
        return int(np.prod(shape)) * dtype.itemsize
    return arrays[key].nbytes


def read_bundle(path: str | Path) -> Bundle:
    """Open and check a bundle (arrays are read when used); :class:`BundleError` names the
    file and the bad field."""
    path = Path(path)
    try:
        arrays = LazyArrays(np.load(path, allow_pickle=False))
        missing = [k for k in REQUIRED if k not in arrays]
        if missing:
            raise BundleError(f"{path}: missing arrays {missing}")
        header = json.loads(arrays["header"].tobytes().decode())
        rows = {k: _rows(arrays, k) for k in arrays if k != "header"}
    except FileNotFoundError:
        raise BundleError(f"{path}: no such bundle") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        raise BundleError(f"{path}: not a readable LERG bundle ({err})") from None
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise BundleError(f"{path}: format {header.get('format')!r} v{header.get('version')}, "
                          f"expected {FORMAT!r} v{VERSION}")
    bundle = Bundle(path, header, arrays)
    e, keep = bundle.num_entities, int(bundle.retained.sum())
    checks = {"index": keep, "placeholder_of": e - keep, "degree": e, "graph_indptr": e + 1,
              "codebook_scale": rows["codebook"], "pq_codes": header["num_items"]}
    for key, want in checks.items():
        if key in rows and rows[key] != want:
            raise BundleError(f"{path}: {key} has {rows[key]} rows, expected {want}")
    if rows["index"] and int(arrays["index"].max()) >= rows["codebook"]:
        raise BundleError(f"{path}: index refers to code {int(arrays['index'].max())}, "
                          f"the codebook has {rows['codebook']}")
    if ("pq_codes" in rows) != ("pq_centroids" in rows):
        raise BundleError(f"{path}: pq_codes and pq_centroids come together; one is missing")
    return bundle


def bundle_sizes(arrays: Mapping) -> dict[str, float]:
    """``table_bytes`` (every array but the graph and the PQ codes), ``graph_bytes``,
    ``scoring_bytes`` (PQ), ``float_bytes`` (the float32 table, E x D x 4), ``size_ratio`` =
    table_bytes / float_bytes and ``scoring_ratio`` = (table_bytes + scoring_bytes) / float_bytes,
    what a device that scores from PQ codes downloads."""
    header = json.loads(arrays["header"].tobytes().decode())
    table = sum(_nbytes(arrays, k) for k in arrays if k not in GRAPH_KEYS + SCORING_KEYS)
    graph = sum(_nbytes(arrays, k) for k in GRAPH_KEYS)
    scoring = sum(_nbytes(arrays, k) for k in SCORING_KEYS if k in arrays)
    full = (header["num_users"] + header["num_items"]) * header["dim"] * 4
    return {"table_bytes": table, "graph_bytes": graph, "scoring_bytes": scoring, "float_bytes": full,
            "size_ratio": table / full, "scoring_ratio": (table + scoring) / full}
