"""What the wheel (and so the sidecar's image, `pip install .`) carries: every bundled data file."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rlscale", "agents", "experiments")


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
