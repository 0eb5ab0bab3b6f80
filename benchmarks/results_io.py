"""Writing a benchmark's JSON: its figures plus the machine and the command that made them."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path


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
