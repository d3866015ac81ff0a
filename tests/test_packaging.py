"""What the wheel (and so the sidecar's image, `pip install .`) carries: every bundled data file."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rlscale", "agents")


def _bundled_files(package: str) -> list[Path]:
    data = ROOT / package / "data"
    return sorted(p for p in data.rglob("*") if p.is_file() and "__pycache__" not in p.parts) if data.exists() else []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_bundled_data_file_is_package_data(package):
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"].get(package, [])
    files = _bundled_files(package)
    assert files, f"{package} has no data folder"
    missing = [
        str(f.relative_to(ROOT))
        for f in files
        if not any(fnmatch.fnmatch(str(f.relative_to(ROOT / package)), g) for g in globs)
    ]
    assert not missing, f"not in [tool.setuptools.package-data] {package}: {missing}"


PRODUCT = ("rlscale", "envs", "agents", "ilp_baseline")  # [tool.setuptools.packages.find] include


@pytest.mark.slow
def test_the_wheel_packages_only_product_code_and_none_of_it_imports_the_tests():
    """Test support (the twin, fake servers) lives under tests/, which is not packaged: no product module may
    import it, or the installed sidecar would fail to start."""
    import ast

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(g.rstrip("*") for g in include) == sorted(PRODUCT)
    assert not (ROOT / "rlscale" / "kube" / "twin.py").exists()  # moved to tests/integration/twin.py
    offenders = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "tests"]
    assert not offenders


def test_research_stays_out_of_the_wheel_and_the_image():
    """experiments/ (scripts, 262 result files) is neither a package of the wheel nor in the Docker build context
    (`COPY . .`), and no bundled data file of the product lies under it."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not any(fnmatch.fnmatch("experiments", g) or fnmatch.fnmatch("experiments.results", g) for g in include)
    assert "experiments" not in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"].get(
        "package-data", {}
    )
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert "experiments" in ignored
    assert not (ROOT / "experiments" / "data").exists()  # the bundled tunings live in rlscale/data
