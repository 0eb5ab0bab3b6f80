"""No file the product reads can run code: every ``torch.load`` passes ``weights_only=True``,
no ``np.load`` allows pickles, and nothing unpickles (checked on the source, by its syntax)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cluster", "graphs", "trainers", "serve", "benchmarks")


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name):
            yield node, f"{node.func.value.id}.{node.func.attr}"


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def unsafe_loads() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for call, name in _calls(ast.parse(path.read_text(), filename=str(path))):
                where = f"{path.relative_to(ROOT)}:{call.lineno} {name}"
                if name == "torch.load":
                    value = _kw(call, "weights_only")
                    if not (isinstance(value, ast.Constant) and value.value is True):
                        found.append(where + " without weights_only=True")
                elif name == "np.load" and isinstance(_kw(call, "allow_pickle"), ast.Constant) \
                        and _kw(call, "allow_pickle").value:
                    found.append(where + " with allow_pickle=True")
                elif name in ("pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads"):
                    found.append(where)
    return found


def test_no_loader_can_run_code():
    assert unsafe_loads() == []


def test_the_check_finds_an_unsafe_load(tmp_path):
    bad = ast.parse("import torch\nstate = torch.load(path)\nok = torch.load(path, weights_only=True)\n")
    names = [name for call, name in _calls(bad) if name == "torch.load" and _kw(call, "weights_only") is None]
    assert names == ["torch.load"]       # the unsafe call is seen, the safe one is not
