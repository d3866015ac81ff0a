"""The lock files: every dependency pinned exactly, with hashes, inside pyproject.toml's ranges; the image's lock
agrees with make's; both install paths use them with --require-hashes; and this environment is what they lock."""

from __future__ import annotations

import os
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
RUNTIME = ROOT / "requirements" / "runtime.txt"
SERVE = ROOT / "requirements" / "serve.txt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def _pins(path: Path) -> dict[str, tuple[Version, int]]:
    """name -> (version, number of hashes) of every pinned requirement of a pip-compile output."""
    pins: dict[str, tuple[Version, int]] = {}
    name = None
    for line in path.read_text().splitlines():
        if m := _PIN.match(line):
            name = canonicalize_name(m.group(1))
            pins[name] = (Version(m.group(2)), 0)
        elif name and line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[name]
            pins[name] = (version, hashes + 1)
        elif line and not line.startswith(" "):
            name = None
    return pins


def _requirements(extras: tuple[str, ...]) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in PYPROJECT["optional-dependencies"][extra]]
    return reqs


LOCKS = {  # the file and the extras it locks besides the runtime dependencies
    "lock": (LOCK, ("test", "train", "ray", "serve")),  # what make installs
    "runtime": (RUNTIME, ()),  # the sidecar image
    "serve": (SERVE, ("serve",)),  # the stage image (docker/stage.Dockerfile)
}


@pytest.mark.parametrize("lock", list(LOCKS))
def test_every_dependency_is_pinned_with_hashes_inside_its_range(lock):
    path, extras = LOCKS[lock]
    pins = _pins(path)
    assert pins, f"{path} pins nothing"
    assert all(hashes for _, hashes in pins.values()), "a pin without --hash"
    for req in _requirements(extras):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in {path.name}"
        assert req.specifier.contains(pins[name][0], prereleases=True), f"{name}=={pins[name][0]} outside {req}"
    if "train" in extras:
        assert str(pins["torch"][0]) == "2.13.0+cpu"  # the CPU build, never a CUDA one


def test_runtime_lock_is_the_lock_without_test_and_training_tools():
    lock, runtime = _pins(LOCK), _pins(RUNTIME)
    assert {n: v for n, (v, _) in runtime.items()} == {n: lock[n][0] for n in runtime}
    training = ("torch", "stable-baselines3", "tensorboard")
    serving = ("mlserver",)  # the stage image's model server (the serve extra), not the sidecar's
    for tool in ("pytest", "kmock", "hypothesis", "ruff", "import-linter", *training, *serving):
        assert tool in lock and tool not in runtime


def test_serve_lock_is_the_runtime_lock_and_the_model_server():
    lock, runtime, serve = _pins(LOCK), _pins(RUNTIME), _pins(SERVE)
    assert {n: v for n, (v, _) in serve.items()} == {n: lock[n][0] for n in serve}
    assert set(runtime) <= set(serve) and "mlserver" in serve
    for tool in ("pytest", "ruff", "torch", "stable-baselines3", "tensorboard", "ray"):
        assert tool not in serve


def test_installs_use_the_locks_with_hashes():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install .*--no-deps --require-hashes -r \$\(LOCK\)", makefile)
    assert "LOCK := requirements/lock.txt" in makefile
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"pip install .*--no-deps --require-hashes .*-r requirements/runtime.txt", dockerfile)
    stage = (ROOT / "docker" / "stage.Dockerfile").read_text()  # the stage image: runtime + MLServer
    assert re.search(r"pip install .*--no-deps --require-hashes .*-r requirements/serve.txt", stage)
    assert "SERVE_LOCK := requirements/serve.txt" in makefile


@pytest.mark.skipif(os.environ.get("RLSCALE_TEST_LATEST") == "1", reason="make test-latest runs unlocked versions")
def test_this_environment_is_the_lock():
    """What `make` installed is exactly the lock: a package installed by hand at another version shows here."""
    wrong = {}
    for name, (version, _) in _pins(LOCK).items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            wrong[name] = (str(version), None)
            continue
        if installed != version:
            wrong[name] = (str(version), str(installed))
    assert not wrong, f"locked vs installed: {wrong}"
