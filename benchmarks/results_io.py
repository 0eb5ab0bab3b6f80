"""Writing a benchmark's JSON: its figures plus the machine and the command that made them."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np


def write_result(out: str | Path, doc: dict) -> Path:
    """Write ``doc`` with ``machine`` and ``command`` added, atomically (temp + rename)."""
    doc = {**doc, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                              "python": platform.python_version()},
           "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")
    return out


def mean_std(docs: list[Any]) -> Any:
    """Documents of one shape (e.g. one per seed) -> that shape with every number replaced by
    ``{"mean", "std"}`` over the documents (population std); keys missing from any document,
    and values that are neither numbers nor dicts, are left out."""
    first = docs[0]
    if isinstance(first, dict):
        return {k: mean_std([d[k] for d in docs]) for k, v in first.items()
                if all(k in d for d in docs) and isinstance(v, (dict, int, float)) and not isinstance(v, bool)}
    return {"mean": float(np.mean(docs)), "std": float(np.std(docs))}
