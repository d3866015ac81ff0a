"""The PPO agent: a training run's folder, training on training windows only, and the ppo / ppo-raw policies."""

from __future__ import annotations

import json

import numpy as np
import pytest

import agents.ppo as ppo
from agents.ppo import PPOPolicy, TrainConfig, bundled_agent, train
from rlscale.errors import RlscaleError
from rlscale.feasibility import is_feasible
from rlscale.sim.runner import run_episode
from rlscale.spec import load_spec
from rlscale.types import PipelineState
from rlscale.workload import Trace, load_trace


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(timesteps=256, n_envs=1, n_steps=128, batch_size=64, out=str(out), checkpoint_every=128)
    return train(cfg, progress_bar=False)


def test_training_run_folder(tiny_run):
    assert tiny_run.name.startswith("video__ppo__0__")
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["pipeline"] == "video" and config["timesteps"] == 256
    assert (tiny_run / "model.zip").stat().st_size > 1000
    assert list((tiny_run / "checkpoints").glob("ppo_*_steps.zip"))
    assert list((tiny_run / "tb").rglob("events.out.tfevents.*"))
    report = json.loads((tiny_run / "eval.json").read_text())
    assert set(report["eval"]) == {"bursty", "steady_low", "steady_high", "fluctuating"}


def test_learning_reads_the_training_split_only(tmp_path, monkeypatch):
    """With the evaluation windows unreadable, training still runs: they feed nothing but the final report."""
    import rlscale.workload as workload

    def forbidden(*_a, **_k):
        raise AssertionError("an evaluation window was read while learning")

    monkeypatch.setattr(workload, "_eval_windows", forbidden)
    monkeypatch.setattr(workload, "load_trace", forbidden)
    monkeypatch.setattr(ppo, "evaluate", lambda *a, **k: {})  # the report-only evaluation, after learning
    run = train(TrainConfig(timesteps=128, n_envs=1, n_steps=64, batch_size=32, out=str(tmp_path)), progress_bar=False)
    assert (run / "model.zip").exists()


def test_policies_from_a_trained_model(tiny_run):
    spec = load_spec("video")
    trace = Trace("ramp", load_trace("bursty").rps[300:600].copy())
    safe = PPOPolicy(spec, tiny_run / "model.zip")
    raw = PPOPolicy(spec, tiny_run / "model.zip", safety=False)
    assert (safe.name, raw.name) == ("ppo", "ppo-raw")
    result = run_episode(spec, trace, safe)
    assert result.record["requests"] == int(trace.rps.sum())
    # with safety, every decision is feasible at the load floor it was made for
    for i, config in enumerate(result.configs[1:], start=1):
        hist = trace.rps[: 10 * i]
        load = float(hist[-10:].max())
        assert is_feasible(spec, config, load), (i, config)
    state = PipelineState(10.0, 10.0, np.full(10, 30.0), result.configs[0], None)
    assert raw.decide(state) == raw.propose(state)


def test_missing_or_wrong_agent_is_one_clear_error(tmp_path, tiny_run):
    spec = load_spec("video")
    with pytest.raises(RlscaleError, match="no agent at"):
        PPOPolicy(spec, tmp_path / "nothing.zip")
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(RlscaleError, match="cannot load the agent"):
        PPOPolicy(spec, bad)
    with pytest.raises(RlscaleError, match="needs"):
        PPOPolicy(load_spec("nlp"), tiny_run / "model.zip")  # a video agent cannot drive a 3-stage pipeline


def test_bundled_agent_exists_for_video():
    assert bundled_agent("video").exists(), "run `make agent` to train and bundle the video agent"


def test_numpy_actor_equals_sb3_predict():
    """The torch-free forward pass picks exactly SB3's deterministic action."""
    from envs.pipeline_env import PipelineEnv

    policy = PPOPolicy(load_spec("video"))
    assert policy._mlp is not None
    env = PipelineEnv("video")
    for i in range(200):
        obs = env.observation_space.sample() if i % 2 else env.reset(seed=i)[0]
        expected, _ = policy.model.predict(obs, deterministic=True)
        np.testing.assert_array_equal(policy.act(obs), expected)


def test_an_agent_for_other_action_choices_is_refused(tmp_path):
    """A spec edited from a bundled one (same name, fewer variants) must not silently reuse the bundled agent."""
    import yaml

    from rlscale.spec import data_dir

    raw = yaml.safe_load((data_dir() / "pipelines" / "video.yaml").read_text())
    raw["stages"][0]["variants"] = raw["stages"][0]["variants"][:3]
    path = tmp_path / "video.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(RlscaleError, match=r"agent chooses among \[5, .*needs \[3, "):
        PPOPolicy(load_spec(path))
