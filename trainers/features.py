"""Node attributes from a graph directory, gathered per batch as the model's TypeFeatures.

Each node type's feature columns are read once into numpy arrays indexed by node id
(dense ``[N, dim]`` float32 with NaN for null, categorical ``[N]`` int64 with -1,
token lists ``[N, L]`` int64 padded with -1), then gathered for the ids of a batch.
This holds one type's columns in memory: fine for attribute tables of millions of
nodes; a billion-node type would need the same arrays memory-mapped from disk.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from graphs.exceptions import ConfigError
from graphs.feature_rows import MAX_TOKENS, parse_value
from graphs.schema import FeatureSpec
from graphs.store import GraphDir
from trainers.hetsgformer.identity import TypeFeatures


def _column(values: pa.ChunkedArray, spec: FeatureSpec, count: int) -> np.ndarray:
    """One feature column as an array indexed by node id (the table is sorted by id)."""
    values = values.combine_chunks()
    if spec.kind == "categorical":
        return values.fill_null(-1).to_numpy().astype(np.int64)
    if spec.kind == "dense":
        if spec.dim == 1:
            return values.cast(pa.float32()).fill_null(np.nan).to_numpy(zero_copy_only=False)[:, None]
        out = np.full((count, spec.dim), np.nan, dtype=np.float32)
        valid = np.flatnonzero(values.is_valid().to_numpy(zero_copy_only=False))
        flat = pc.list_flatten(values.filter(values.is_valid())).to_numpy(zero_copy_only=False)
        out[valid] = flat.reshape(-1, spec.dim)
        return out
    out = np.full((count, MAX_TOKENS), -1, dtype=np.int64)  # token_list
    lengths = pc.list_value_length(values).fill_null(0).to_numpy()
    flat = pc.list_flatten(values).to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(count), lengths)
    pos = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    keep = pos < MAX_TOKENS
    out[rows[keep], pos[keep]] = flat[keep]
    return out


class FeatureStore:
    """Attribute arrays of every node type of a graph directory.

    ``gather(ntype, ids [B]) -> TypeFeatures``: ``{name: (values, present [B] bool)}``.
    """

    def __init__(self, gdir: GraphDir):
        self.specs: dict[str, list[FeatureSpec]] = {}
        self.arrays: dict[str, dict[str, np.ndarray]] = {}
        for ntype in gdir.schema.node_types:
            specs = [f for f in ntype.features if f.kind != "text"]
            self.specs[ntype.name] = specs
            if not specs:
                continue
            table = gdir.read_nodes(ntype.name, columns=["id"] + [f.name for f in specs])
            self.arrays[ntype.name] = {f.name: _column(table[f.name], f, ntype.count) for f in specs}

    def append(self, ntype: str, count: int, rows: list[dict]) -> None:
        """Attributes of new nodes of ``ntype`` with ids ``count .. count+len(rows)-1``.

        ``rows[i]``: ``{column: value}``, a missing or None value is a null. Raises
        ``ValueError`` naming the column and the bad value, before anything is stored.
        """
        specs = self.specs.get(ntype, [])
        names = {f.name for f in specs}
        new: dict[str, np.ndarray] = {}
        for row in rows:
            unknown = sorted(set(row) - names)
            if unknown:
                raise ConfigError(f"node type {ntype!r}: unknown attribute {unknown[0]!r}; "
                                 f"known: {sorted(names)}")
        for spec in specs:
            new[spec.name] = np.stack([parse_value(spec, row.get(spec.name)) for row in rows]) \
                if rows else np.zeros((0,) + parse_value(spec, None).shape, parse_value(spec, None).dtype)
        arrays = self.arrays.setdefault(ntype, {})
        for spec in specs:
            have = arrays.get(spec.name)
            if have is None:
                have = np.stack([parse_value(spec, None)] * count) if count else new[spec.name][:0]
            if len(have) != count:
                raise ConfigError(f"node type {ntype!r}: new ids must start at {len(have)}, got {count}")
            arrays[spec.name] = np.concatenate([have, new[spec.name]])

    def gather(self, ntype: str, ids: np.ndarray) -> TypeFeatures:
        out: TypeFeatures = {}
        for spec in self.specs.get(ntype, []):
            values = self.arrays[ntype][spec.name][ids]
            if spec.kind == "dense":
                present = ~np.isnan(values).any(axis=1)
                values = np.nan_to_num(values)
            elif spec.kind == "categorical":
                present = values >= 0
            else:
                present = (values >= 0).any(axis=1)
            out[spec.name] = (torch.from_numpy(values), torch.from_numpy(present))
        return out

    def batch(self, nodes: dict[str, np.ndarray]) -> dict[str, TypeFeatures]:
        """TypeFeatures of every type of a sampled subgraph, ``nodes[t]: [N_t]``."""
        return {t: self.gather(t, ids) for t, ids in nodes.items()}
