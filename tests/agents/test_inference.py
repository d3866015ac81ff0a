"""The PPO agent's numpy inference (`agents.inference`): `PPOPolicy` on the bundled agents, refused agent files,
and no gymnasium, torch or stable-baselines3 behind it."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from agents.actor import AgentMismatch, load_actor
from agents.inference import PPOPolicy, bundled_agent, load_agent
from rlscale.errors import RlscaleError
from rlscale.spec import load_spec
from rlscale.types import PipelineState

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ("video", "sum-qa", "sponge")  # sponge: the observation with the budget features
TRAINING_ONLY = ("gymnasium", "torch", "stable_baselines3", "tensorboard")

PROBE = """
import json, sys
import numpy as np
import agents.actor, agents.inference, envs.codecs
from agents.inference import PPOPolicy
from agents.static import StaticPolicy
from rlscale.spec import load_spec
from rlscale.types import PipelineState

def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in {names!r})

imported = loaded()
spec = load_spec("video")
state = PipelineState(10.0, 10.0, np.full(10, 10.0), StaticPolicy(spec, "min", 10.0).config, None)
PPOPolicy(spec).decide(state)
print(json.dumps({{"imported": imported, "decided": loaded()}}))
"""


@pytest.mark.subprocess
def test_inference_imports_no_gymnasium_torch_or_stable_baselines3():
    """A fresh interpreter imports the inference modules, and the bundled agent's policy decides: none of the
    training packages is in ``sys.modules`` (import-linter's ``inference`` contract checks the import graph
    statically)."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(names=TRAINING_ONLY)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"imported": [], "decided": []}, report


@pytest.mark.parametrize("pipeline", BUNDLED)
def test_bundled_policy_decides_with_numpy_only(pipeline):
    spec = load_spec(pipeline)
    policy = PPOPolicy(spec)
    assert policy.codec.load_scale_rps == 50.0
    from agents.static import StaticPolicy

    config = StaticPolicy(spec, "min", 10.0).config
    state = PipelineState(10.0, 10.0, np.full(10, 10.0), config, None)
    decided = policy.decide(state)
    assert len(decided.stages) == len(spec.stages)


def test_another_pipelines_agent_is_a_mismatch():
    with pytest.raises(AgentMismatch, match="trained for pipeline sum-qa, not pipeline video"):
        PPOPolicy(load_spec("video"), bundled_agent("sum-qa"))
    with pytest.raises(AgentMismatch, match="not pipeline nlp"):
        PPOPolicy(load_spec("nlp"), bundled_agent("video"))


def test_missing_agent_names_the_fix(tmp_path):
    with pytest.raises(RlscaleError, match="no agent at .*rlscale train --pipeline video"):
        PPOPolicy(load_spec("video"), tmp_path / "nothing.npz")
    with pytest.raises(RlscaleError, match="is a folder"):
        load_agent(tmp_path)


def test_a_model_zip_is_refused_with_or_without_stable_baselines3(tmp_path, monkeypatch):
    """--agent never unpickles: a model.zip gets the one line naming the run's actor.npz and the converter."""
    model = tmp_path / "model.zip"
    with zipfile.ZipFile(model, "w") as zf:
        zf.writestr("data", "{}")
        zf.writestr("policy.pth", b"")
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)  # import raises ImportError
    with pytest.raises(RlscaleError, match=r"not an agent file; pass the run's actor\.npz.*train extra"):
        PPOPolicy(load_spec("video"), model)


def test_bundled_agents_exist():
    for pipeline in ("video", "sum-qa"):
        assert bundled_agent(pipeline).exists(), "run `make agent` to train and bundle the agents"


def test_an_agent_for_another_shape_is_refused(tmp_path):
    """A spec edited from a bundled one (same name, another number of stages) must not silently reuse the bundled
    agent. Fewer variants are fine for the planner action (it sets headrooms, the planner picks among the spec's
    variants); the direct action's refusal of them is tested in test_actor."""
    import yaml

    from rlscale.spec import data_dir

    raw = yaml.safe_load((data_dir() / "pipelines" / "video.yaml").read_text())
    raw["stages"][0]["variants"] = raw["stages"][0]["variants"][:3]
    path = tmp_path / "video.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    bundled = load_actor(bundled_agent("video"))
    assert PPOPolicy(load_spec(path)).codec.action_nvec() == bundled.nvec
    raw["stages"] = raw["stages"][:1]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(RlscaleError, match=r"agent observes \(43,\), pipeline video needs \(35,\)"):
        PPOPolicy(load_spec(path))
