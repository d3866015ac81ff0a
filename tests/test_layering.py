"""Imports point down only (DESIGN.md section 2): experiments -> agents -> envs -> ilp_baseline -> rlscale.

Checked on the source with `ast`, so it holds for imports inside functions too. The `rlscale/cli/` package is the
composition root and may import every layer; nothing else in `rlscale/` may import the layers above it (nor
`rlscale.cli`), and `rlscale/` (but `rlscale/cli/`) must not import torch or pulp at module import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# DESIGN.md section 2: rlscale.cli -> experiments -> agents -> envs -> ilp_baseline -> the rlscale core
LAYER = {"rlscale": 0, "ilp_baseline": 1, "envs": 2, "agents": 3, "experiments": 4}
# Same-level packages that may import each other: none since every package has a layer of its own.
ALLOWED_SIDEWAYS: set[tuple[str, str]] = set()
HEAVY = {"torch", "pulp", "stable_baselines3"}


def _imports(path: Path, depth: int = 1) -> list[tuple[str, bool]]:
    """(module, at module level?) for every import in a file, the module cut to its first ``depth`` parts."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module_level = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(".".join(a.name.split(".")[:depth]), id(node) in module_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((".".join(node.module.split(".")[:depth]), id(node) in module_level))
    return found


CLI = ROOT / "rlscale" / "cli"
POLICIES = ROOT / "rlscale" / "policies"
EVALUATE = ROOT / "rlscale" / "evaluate"


SOURCES = [p for pkg in LAYER for p in sorted((ROOT / pkg).rglob("*.py"))]


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_imports_point_down(path):
    pkg = path.relative_to(ROOT).parts[0]
    if path.is_relative_to(CLI) or path.is_relative_to(POLICIES) or path.is_relative_to(EVALUATE):
        return
    for module, at_top in _imports(path):
        if module in LAYER and module != pkg:
            upward = LAYER[module] > LAYER[pkg]
            sideways = LAYER[module] == LAYER[pkg] and (pkg, module) not in ALLOWED_SIDEWAYS
            assert not (upward or sideways), f"{path.relative_to(ROOT)} imports {module} (layer violation)"
        if pkg == "rlscale" and at_top:
            assert module not in HEAVY, f"{path.relative_to(ROOT)} imports {module} at module import time"


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_only_the_cli_imports_the_cli(path):
    """`rlscale.cli` is the composition root: the core (the sidecar's wiring included) is handed what it needs."""
    if path.is_relative_to(CLI):
        return
    assert "rlscale.cli" not in {m for m, _ in _imports(path, depth=2)}, f"{path.relative_to(ROOT)} imports rlscale.cli"


def test_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from experiments import demo\nimport torch\n")
    assert ("experiments", False) in _imports(bad)
    assert ("torch", True) in _imports(bad)
