"""Shared fixtures: a small valid spec and profile written to a temp folder, so validation tests can mutate it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest_plugins = ["tests.cli_inprocess"]  # the cli_main fixture: rlscale run in this process

PROFILE_ROWS = [
    # variant, batch, cores, latency_s (l = 0.02*b/c + 0.005*b + 0.01/c + 0.002 for "fast", x3 for "slow")
    (v, b, c, round(k * (0.02 * b / c + 0.005 * b + 0.01 / c + 0.002), 6))
    for v, k in (("fast", 1.0), ("slow", 3.0))
    for b in (1, 2, 4)
    for c in (1, 2)
]


def base_spec_dict() -> dict[str, Any]:
    return {
        "name": "toy",
        "description": "two-stage toy pipeline for tests",
        "sla_s": 1.0,
        "drop_limit_s": 2.0,
        "interval_s": 10,
        "batch_timeout_s": 0.1,
        "core_budget": 16,
        "objective": {"alpha": 2, "beta": 1, "gamma": 1e-6, "accuracy_method": "sum"},
        "stages": [
            {
                "name": "first",
                "task": "toy",
                "profile": "toy.csv",
                "batch_sizes": [1, 2, 4],
                "cores": [1, 2],
                "min_replicas": 1,
                "max_replicas": 4,
                "variants": [
                    {"name": "fast", "accuracy": 0.5, "startup_s": 5},
                    {"name": "slow", "accuracy": 0.8, "startup_s": 7},
                ],
            },
            {
                "name": "second",
                "task": "toy",
                "profile": "toy.csv",
                "batch_sizes": [1],
                "cores": [1],
                "max_replicas": 2,
                "variants": [{"name": "slow", "accuracy": 0.9, "startup_s": 6}],
            },
        ],
    }


def write_profile(folder: Path, rows=PROFILE_ROWS, name: str = "toy.csv") -> Path:
    path = folder / name
    lines = ["variant,batch,cores,latency_s,source,kind"]
    lines += [f"{v},{b},{c},{lat},test,measured" for v, b, c, lat in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def toy_dir(tmp_path: Path) -> Path:
    write_profile(tmp_path)
    return tmp_path


@pytest.fixture
def write_spec(toy_dir: Path):
    """Write a (mutated) copy of the base spec into the temp folder and return its path."""

    def _write(mutate=None, name: str = "toy.yaml") -> Path:
        data = copy.deepcopy(base_spec_dict())
        if mutate is not None:
            mutate(data)
        path = toy_dir / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return _write


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The run folder of one tiny PPO training (video, 256 steps: model.zip, actor.npz, config.json, eval.json,
    checkpoints, TensorBoard logs), trained once for the whole test run, for the tests that need *a* trained agent
    and not a particular one. Read it, never change it. Under pytest-xdist a session is a worker: ``make test``
    sends each test file to one worker (``--dist loadfile``), so the tests of one file share one training. Needs the
    train extra."""
    pytest.importorskip("stable_baselines3", reason="training needs the train extra (torch, stable-baselines3)")
    from agents.train_config import TrainConfig
    from agents.training import train

    out = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(
        timesteps=256, n_envs=1, n_steps=128, batch_size=64, out=str(out), checkpoint_every=128, validation_windows=1
    )
    return train(cfg, progress_bar=False)


# lines tests hand to the end-of-run summary, as ``item.user_properties`` entries ("summary: SECTION", line): they
# come back from pytest-xdist's workers with the reports (tests/integration/conftest.py fills one section)
_SUMMARY: dict[str, list[str]] = {}


def pytest_runtest_logreport(report):
    if report.when == "call":
        for name, value in report.user_properties:
            if name.startswith("summary: "):
                _SUMMARY.setdefault(name.removeprefix("summary: "), []).append(value)


def pytest_terminal_summary(terminalreporter):
    for section, lines in _SUMMARY.items():
        terminalreporter.section(section)
        for line in lines:
            terminalreporter.write_line(line)
