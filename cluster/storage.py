"""A durable copy of a pipeline's run root on any filesystem pyarrow reaches (``s3://``,
``gs://``, ``hdfs://``, ``file://``).

The stages work on ``ROOT``, a POSIX path every node can read (a shared filesystem: the
shards are memory-mapped, the event log is appended and fsynced). With a storage URI the
pipeline also *publishes* each stage's outputs there when the stage ends, and *restores*
a stage's missing inputs from there before it starts. So a cluster whose shared disk is
scratch (FSx scratch, a fresh NFS volume) can pick a run up where another left off.

Each published folder gets ``<name>.manifest.json`` (its files and sizes), written after
the copy: a folder without one is a copy that did not finish and is never restored. Runs
record absolute paths (``run/config.json`` names the graph and the shards), so a run is
restored under the same ``ROOT`` path it was made in.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.fs as pafs

from graphs.exceptions import ConfigError, NotFoundError
from graphs.store import temp_sibling


def _open(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(uri)
    except ValueError as err:  # pyarrow's ArrowInvalid
        raise ConfigError(f"storage URI {uri!r}: {err}") from err


def _manifest(local: Path) -> dict:
    files = sorted(p for p in local.rglob("*") if p.is_file())
    return {"files": {str(p.relative_to(local)): p.stat().st_size for p in files}}


def publish(root: str | Path, uri: str, name: str) -> dict:
    """Copy ``root/name`` to ``uri/name``, then write ``uri/name.manifest.json``; returns
    ``{"name", "files", "bytes"}``."""
    local = Path(root) / name
    if not local.is_dir():
        raise NotFoundError(f"cannot publish {local}: no such folder")
    fs, base = _open(uri)
    manifest = _manifest(local)
    if published(uri, name):          # an older copy: unpublish it before overwriting it
        fs.delete_file(f"{base}/{name}.manifest.json")
    fs.create_dir(f"{base}/{name}", recursive=True)
    pafs.copy_files(str(local), f"{base}/{name}", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)
    with fs.open_output_stream(f"{base}/{name}.manifest.json") as out:
        out.write(json.dumps(manifest).encode())
    return {"name": name, "files": len(manifest["files"]), "bytes": sum(manifest["files"].values())}


def published(uri: str, name: str) -> bool:
    fs, base = _open(uri)
    return fs.get_file_info(f"{base}/{name}.manifest.json").type == pafs.FileType.File


def restore(root: str | Path, uri: str, name: str) -> bool:
    """Copy ``uri/name`` to ``root/name`` if it is missing there and was published whole;
    returns whether it copied. Sizes are checked against the manifest before the rename."""
    local = Path(root) / name
    if local.exists() or not published(uri, name):
        return False
    fs, base = _open(uri)
    with fs.open_input_stream(f"{base}/{name}.manifest.json") as f:
        expected = json.loads(f.read())["files"]
    tmp = temp_sibling(local)
    try:
        tmp.mkdir(parents=True)
        pafs.copy_files(f"{base}/{name}", str(tmp), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
        got = _manifest(tmp)["files"]
        if got != expected:
            missing = sorted(set(expected) - set(got))[:5]
            raise OSError(f"restoring {uri}/{name}: files differ from its manifest (missing e.g. {missing})")
        tmp.rename(local)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True
