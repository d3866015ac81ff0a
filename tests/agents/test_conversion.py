"""A stable-baselines3 model to its actor file (`agents.conversion`) and the command around it,
``python -m agents.ppo MODEL.zip OUT.npz`` (`agents.ppo`): the numpy actor picks SB3's actions.

Needs the train extra (torch, stable-baselines3): without it this module is skipped.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("stable_baselines3", reason="converting a model needs the train extra (torch, stable-baselines3)")

from agents import ppo  # noqa: E402
from agents.actor import load_actor  # noqa: E402
from agents.conversion import actor_from_model_zip, agreement  # noqa: E402
from agents.inference import ACTOR_FILE  # noqa: E402
from envs.codecs import HOLD_DELTA  # noqa: E402
from rlscale.errors import RlscaleError  # noqa: E402
from rlscale.spec import load_spec  # noqa: E402


@pytest.mark.e2e
def test_a_model_zip_needs_its_training_settings(tmp_path, tiny_run):
    """No silent load_scale_rps default: converting a model.zip alone (no config.json, no .json beside it) is
    refused (`actor_from_model_zip`, the trusted converter's path; ``--agent`` refuses every model.zip)."""
    alone = tmp_path / "model.zip"
    shutil.copy(tiny_run / "model.zip", alone)

    def convert(spec, path):  # the converted actor's codec for the spec, as a policy built on it would check
        return actor_from_model_zip(path).codec(spec, path)

    with pytest.raises(RlscaleError, match="no training settings beside it.*actor.npz"):
        convert(load_spec("video"), alone)
    (tmp_path / "config.json").write_text(json.dumps({"pipeline": "video"}))
    with pytest.raises(RlscaleError, match="lack load_scale_rps"):
        convert(load_spec("video"), alone)
    settings = {"pipeline": "video", "load_scale_rps": 40.0, "action_design": "planner"}
    # a planner run that records no action levels is one of the first (6 headrooms, hold or replan): not this model
    (tmp_path / "config.json").write_text(json.dumps(settings))
    with pytest.raises(RlscaleError, match=r"options per action.*\[6, 6, 2, 3\]"):
        convert(load_spec("video"), alone)
    settings["codec"] = json.loads((tiny_run / "config.json").read_text())["codec"]
    assert settings["codec"]["hold_delta"] == HOLD_DELTA and 0.9 in settings["codec"]["headrooms"]
    (tmp_path / "config.json").write_text(json.dumps(settings))
    codec = convert(load_spec("video"), alone)
    assert codec.load_scale_rps == 40.0 and codec.hold_delta == HOLD_DELTA
    # settings without action_design are a run from before issue 15: absolute observations, which this model lacks
    (tmp_path / "config.json").write_text(json.dumps({"pipeline": "video", "load_scale_rps": 40.0}))
    with pytest.raises(RlscaleError, match="observes"):
        convert(load_spec("video"), alone)


@pytest.mark.e2e
def test_numpy_actor_equals_sb3_predict(tiny_run):
    """The run's actor.npz (numpy) picks exactly SB3's deterministic action on 400 observations."""
    from stable_baselines3 import PPO

    spec = load_spec("video")
    # actor.npz is the checkpoint validation selected (the final model's when it is the best)
    model = PPO.load(selected_model(tiny_run), device="cpu")
    actor = load_actor(tiny_run / ACTOR_FILE)
    assert agreement(model, actor, spec, n=400) == 400
    checkpoint = sorted((tiny_run / "checkpoints").glob("ppo_*_steps.zip"))[-1]  # a checkpoint reads as well
    exported = actor_from_model_zip(checkpoint)
    assert agreement(PPO.load(checkpoint, device="cpu"), exported, spec, n=100) == 100


def selected_model(run):
    """The model file of the checkpoint validation selected for ``actor.npz`` (the final model's when best)."""
    selected = json.loads((run / "eval.json").read_text())["selected"]
    return run / "model.zip" if selected == "model.zip" else run / "checkpoints" / selected


@pytest.mark.e2e
def test_converting_a_model_zip_checks_and_writes_the_actor(tmp_path, tiny_run, capsys):
    out = tmp_path / "converted.npz"
    assert ppo.main([str(selected_model(tiny_run)), str(out), "--check", "50"]) == 0
    assert "identical actions to SB3 on 50 observations" in capsys.readouterr().out
    rng = np.random.default_rng(0)
    converted, trained = load_actor(out), load_actor(tiny_run / ACTOR_FILE)
    for obs in rng.uniform(0, 2, size=(50, converted.obs_size)).astype(np.float32):
        np.testing.assert_array_equal(converted.act(obs), trained.act(obs))
