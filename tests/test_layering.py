"""Imports point down only (DESIGN.md section 2): experiments -> rlscale.cli -> rlscale.evaluate -> rlscale.policies ->
agents -> envs -> ilp_baseline -> the rlscale core.

Checked on the source with `ast`, so it holds for imports inside functions too. `experiments/` (scripts and their
results) sits on top and nothing imports it; `rlscale/cli/` is the composition root of the product and only the
scripts above it could import it (none does); `rlscale/` but `rlscale/cli/` must not import torch or pulp at module
import time. Strings that name a module (``"package.module:function"`` factories) are beyond `ast` and import-linter:
`test_no_product_module_names_experiments` greps for them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# DESIGN.md section 2, bottom up: the rlscale core, then every layer above it
LAYER = {
    "rlscale": 0,
    "ilp_baseline": 1,
    "envs": 2,
    "agents": 3,
    "rlscale.policies": 4,
    "rlscale.evaluate": 5,
    "rlscale.cli": 6,
    "experiments": 7,
}
PRODUCT = ("rlscale", "agents", "envs", "ilp_baseline")
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


def _layer(module: str) -> str | None:
    """The layer of a dotted module name (`LAYER`'s key), or None for a module outside the project."""
    parts = module.split(".")
    for key in (".".join(parts[:2]), parts[0]):
        if key in LAYER:
            return key
    return None


CLI = ROOT / "rlscale" / "cli"


SOURCES = [
    p
    for pkg in ("rlscale", "ilp_baseline", "envs", "agents", "experiments")
    for p in sorted((ROOT / pkg).rglob("*.py"))
]
PRODUCT_SOURCES = [p for pkg in PRODUCT for p in sorted((ROOT / pkg).rglob("*.py"))]


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_imports_point_down(path):
    own = _layer(".".join(path.relative_to(ROOT).with_suffix("").parts))
    for module, at_top in _imports(path, depth=2):
        layer = _layer(module)
        if layer is not None and layer != own:
            assert LAYER[layer] < LAYER[own], f"{path.relative_to(ROOT)} imports {module} (layer violation)"
        if path.parts[len(ROOT.parts)] == "rlscale" and not path.is_relative_to(CLI) and at_top:
            assert module.split(".")[0] not in HEAVY, f"{path.relative_to(ROOT)} imports {module} at module import time"


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_only_the_cli_imports_the_cli(path):
    """`rlscale.cli` is the composition root: the core (the sidecar's wiring included) is handed what it needs."""
    if path.is_relative_to(CLI):
        return
    assert "rlscale.cli" not in {m for m, _ in _imports(path, depth=2)}, f"{path.relative_to(ROOT)} imports rlscale.cli"


NAMES_EXPERIMENTS = re.compile(r"\bexperiments\b(?!/)")
"""`experiments` other than as a folder of the repository (``experiments/RESULTS.md``, a document a docstring may cite):
a module name (``experiments.compare``, ``"experiments.x:make"``, ``python -m experiments.x``) or the package itself."""


@pytest.mark.parametrize("path", PRODUCT_SOURCES, ids=[str(p.relative_to(ROOT)) for p in PRODUCT_SOURCES])
def test_no_product_module_names_experiments(path):
    """The product (rlscale, agents, envs, ilp_baseline) neither imports `experiments` nor names it in a string (an
    ``importlib`` factory name is invisible to import-linter): experiments/ is not installed, nor in the image."""
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if NAMES_EXPERIMENTS.search(line)
    ]
    assert not hits, "a product module names experiments:\n" + "\n".join(hits)


def test_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from experiments import demo\nimport torch\n")
    assert ("experiments", False) in _imports(bad)
    assert ("torch", True) in _imports(bad)
    assert _layer("rlscale.evaluate.compare") == "rlscale.evaluate" and _layer("rlscale.sim.runner") == "rlscale"
    assert _layer("numpy") is None


def test_the_grep_sees_a_name_in_a_string():
    assert NAMES_EXPERIMENTS.search('FACTORY = "experiments.compare:make_policy"')
    assert NAMES_EXPERIMENTS.search("importlib.import_module('experiments')")
    assert NAMES_EXPERIMENTS.search("python -m experiments.tune_headroom")
    assert not NAMES_EXPERIMENTS.search("(experiments/RESULTS.md section 10)")
