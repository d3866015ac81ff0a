"""The import-linter contracts (.importlinter, run by `make test`): they pass, they cover every core module, and
they do bite (a violation in a throwaway package tree fails them)."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _contracts() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    return config


def _lines(value: str) -> list[str]:
    """The modules of a contract's list, one a line; a layer of independent siblings (``a | b``) gives each."""
    lines = [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [m.strip() for line in lines for m in line.split("|")]


def test_the_project_keeps_its_contracts():
    result = subprocess.run([str(LINT)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_every_core_module_is_under_the_core_contract():
    listed = set(_lines(_contracts()["importlinter:contract:core"]["source_modules"]))
    core = {
        f"rlscale.{p.stem if p.is_file() else p.name}"
        for p in (ROOT / "rlscale").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())
    } - {"rlscale.cli", "rlscale.evaluate", "rlscale.calibrate", "rlscale.policies"}
    assert core == listed, f"add to or remove from .importlinter's core contract: {core ^ listed}"


def test_the_contracts_catch_an_upward_import_and_torch(tmp_path):
    """The same contract types over a throwaway tree: a core module importing a layer above it, the registry importing
    evaluate, calibrate importing its sibling evaluate, the simulator importing calibrate, torch, mlserver, a product
    module importing experiments, a cycle (in agents too: none is ignored), the agent's inference reaching gymnasium
    through another module."""
    contracts = _contracts()
    modules = {
        m
        for section in contracts.sections()
        for key in ("source_modules", "layers")
        for m in _lines(contracts[section].get(key, ""))
    }
    for module in modules | {"rlscale", "experiments", "agents", "envs", "ilp_baseline"}:
        folder = tmp_path.joinpath(*module.split("."))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text("")
    (tmp_path / "rlscale" / "cli" / "train.py").write_text("import stable_baselines3\n")  # the ignored import
    (tmp_path / "rlscale" / "evaluate" / "train_throughput.py").write_text("import stable_baselines3\nimport torch\n")
    (tmp_path / "agents" / "training.py").write_text("import agents.validation\n")  # a cycle in agents
    (tmp_path / "agents" / "validation.py").write_text("def f():\n    import agents.training\n")
    (tmp_path / "agents" / "inference" / "__init__.py").write_text("import envs.pipeline_env\n")  # gym, indirectly
    (tmp_path / "envs" / "pipeline_env.py").write_text("import gymnasium\n")
    (tmp_path / "rlscale" / "examples" / "resnet.py").write_text("def build(v):\n    import torch\n")  # too
    (tmp_path / "rlscale" / "serve" / "runtime.py").write_text("import mlserver\n")  # the ignored import
    (tmp_path / "rlscale" / "serve" / "model.py").write_text("import mlserver\n")  # mlserver outside the runtime
    for package in ("stable_baselines3", "mlserver", "gymnasium"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "rlscale" / "model" / "__init__.py").write_text("import envs\n")  # upward
    (tmp_path / "envs" / "env.py").write_text("import torch\n")  # torch outside training
    (tmp_path / "rlscale" / "policies" / "registry.py").write_text("import rlscale.evaluate\n")  # upward
    (tmp_path / "rlscale" / "calibrate" / "run.py").write_text("import rlscale.evaluate\n")  # a sibling
    (tmp_path / "rlscale" / "sim" / "runner.py").write_text("import rlscale.calibrate\n")  # upward
    (tmp_path / "ilp_baseline" / "plan.py").write_text("def f():\n    import experiments\n")  # the scripts
    (tmp_path / "rlscale" / "sim" / "a.py").write_text("import rlscale.sim.b\n")  # a cycle
    (tmp_path / "rlscale" / "sim" / "b.py").write_text("def f():\n    import rlscale.sim.a\n")
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("")
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([str(LINT)], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode != 0
    assert "rlscale.model -> envs" in result.stdout
    assert "envs.env -> torch" in result.stdout
    assert "rlscale.serve.model -> mlserver" in result.stdout
    assert "rlscale.serve.runtime -> mlserver" not in result.stdout
    assert "rlscale.policies.registry -> rlscale.evaluate" in result.stdout
    assert "rlscale.calibrate.run -> rlscale.evaluate" in result.stdout
    assert "rlscale.sim.runner -> rlscale.calibrate" in result.stdout
    assert "ilp_baseline.plan -> experiments" in result.stdout
    assert "No cycles are allowed in rlscale.sim" in result.stdout
    assert "No cycles are allowed in agents" in result.stdout
    assert "agents.inference is not allowed to import gymnasium" in result.stdout
