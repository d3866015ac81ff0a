"""Imports point down only (DESIGN.md section 2): experiments -> agents, ilp_baseline, envs -> rlscale.

Checked on the source with `ast`, so it holds for imports inside functions too. `rlscale/cli.py` is the
composition root and may import every layer; nothing else in `rlscale/` may import the layers above it, and
`rlscale/` (but cli.py) must not import torch or pulp at module import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYER = {"rlscale": 0, "envs": 1, "agents": 1, "ilp_baseline": 1, "experiments": 2}
# Same-level packages that may import each other (DESIGN.md: ilp_baseline.safety may use ilp_baseline; the env may
# run agents' policies as baselines).
ALLOWED_SIDEWAYS = {("agents", "ilp_baseline"), ("envs", "agents"), ("agents", "envs")}
HEAVY = {"torch", "pulp", "stable_baselines3"}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level module, at module level?) for every import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module_level = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name.split(".")[0], id(node) in module_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module.split(".")[0], id(node) in module_level))
    return found


SOURCES = [p for pkg in LAYER for p in sorted((ROOT / pkg).rglob("*.py"))]


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_imports_point_down(path):
    pkg = path.relative_to(ROOT).parts[0]
    if path == ROOT / "rlscale" / "cli.py":
        return
    for module, at_top in _imports(path):
        if module in LAYER and module != pkg:
            upward = LAYER[module] > LAYER[pkg]
            sideways = LAYER[module] == LAYER[pkg] and (pkg, module) not in ALLOWED_SIDEWAYS
            assert not (upward or sideways), f"{path.relative_to(ROOT)} imports {module} (layer violation)"
        if pkg == "rlscale" and at_top:
            assert module not in HEAVY, f"{path.relative_to(ROOT)} imports {module} at module import time"


def test_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from experiments import demo\nimport torch\n")
    assert ("experiments", False) in _imports(bad)
    assert ("torch", True) in _imports(bad)
