"""A node's feature values in row form, as graph-change events carry them and the feature
store holds them: ``dense`` float32 ``[dim]`` (NaN: missing), ``categorical`` int64 (-1:
missing), ``token_list`` int64 ``[MAX_TOKENS]`` padded with -1."""

from __future__ import annotations

import numpy as np

from graphs.exceptions import EventError
from graphs.schema import FeatureSpec

MAX_TOKENS = 16  # token lists are cut to this many tokens per node


def parse_value(spec: FeatureSpec, value) -> np.ndarray:
    """One node's value of a column, in row format (above); None is a null."""
    where = f"attribute {spec.name!r} ({spec.kind})"

    def code(v) -> int:                     # a category or token id: an int in [0, cardinality)
        if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
            raise ValueError("not an integer")
        v = int(v)
        if v < 0 or (spec.cardinality and v >= spec.cardinality):
            raise ValueError(f"outside [0, {spec.cardinality or 'inf'})")
        return v

    try:
        if spec.kind == "categorical":
            return np.asarray(-1 if value is None else code(value), np.int64)
        if spec.kind == "dense":
            if value is None:
                return np.full(spec.dim, np.nan, np.float32)
            with np.errstate(over="ignore"):
                out = np.asarray(value, np.float32)
            if out.shape == () and spec.dim == 1:            # one number for a dim-1 attribute
                out = out.reshape(1)
            if out.shape != (spec.dim,):                    # else a flat list: [[1, 2]] is not one
                raise ValueError(f"expected a list of {spec.dim} number(s)")
            if not np.isfinite(out).all():
                raise ValueError("not finite in float32 (send null for a missing value)")
            return out
        if not isinstance(value, (list, tuple, type(None))):
            raise ValueError("expected a list of token ids")
        out = np.full(MAX_TOKENS, -1, np.int64)
        tokens = [code(v) for v in (value or [])][:MAX_TOKENS]
        out[:len(tokens)] = tokens
        return out
    except (TypeError, ValueError, OverflowError) as e:
        raise EventError(f"{where}: bad value {str(repr(value))[:80]} ({e})") from None
