"""Paths handed across process boundaries.

Ray tasks, actors and Ray Train workers do not run in the driver's working directory, so
every path a user hands in is made absolute once, where it enters (a CLI command, a typed
entry point, a config dataclass), and travels absolute from there.
"""

from __future__ import annotations

from pathlib import Path


def absolute(path: str | Path | None) -> str | None:
    """``path`` resolved against the current directory, as a string; None stays None and a
    URI (``s3://...``) is left as it is."""
    if path is None:
        return None
    if "://" in str(path):
        return str(path)
    return str(Path(path).expanduser().resolve())


def absolute_fields(config: object, *names: str) -> None:
    """Make the named path fields of a (frozen) dataclass absolute, in ``__post_init__``."""
    for name in names:
        object.__setattr__(config, name, absolute(getattr(config, name)))
