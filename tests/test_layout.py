"""The layout rules of DESIGN.md, checked by syntax over every source file: imports flow
``graphs <- trainers <- serve <- cluster``, and no file grows past about 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("graphs", "trainers", "serve", "cluster")
# what each package may import from the project (itself included)
ALLOWED = {"graphs": {"graphs"}, "trainers": {"graphs", "trainers"}, "serve": {"graphs", "trainers", "serve"},
           "cluster": set(PACKAGES)}


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def project_imports(path: Path) -> set[str]:
    """Top-level project packages that ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES}
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_flow_one_way(package):
    bad = {str(p.relative_to(ROOT)): sorted(project_imports(p) - ALLOWED[package]) for p in sources(package)}
    assert not {k: v for k, v in bad.items() if v}


def test_ille_lives_in_one_sub_package():
    mentions = [p for package in PACKAGES for p in sources(package)
                if "lle_weights" in p.read_text() and "trainers/ille" not in str(p.relative_to(ROOT))]
    assert not mentions, mentions


def test_no_source_file_passes_400_lines():
    long = {str(p.relative_to(ROOT)): n for package in (*PACKAGES, "tests", "benchmarks")
            for p in sources(package) if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
