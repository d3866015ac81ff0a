"""PPO training (`agents.training`): a training run's folder, training on training windows only, the policies of a
trained agent, the environments and the PPO it builds.

Training needs torch and stable-baselines3 (the ``train`` extra): without them this module is skipped; the numpy
inference is tested in test_inference.py and test_actor.py, the torch-free commands in tests/test_no_torch.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("stable_baselines3", reason="training needs the train extra (torch, stable-baselines3)")

import agents.inference as inference  # noqa: E402
import agents.training as training  # noqa: E402
from agents.actor import AgentMismatch, load_actor  # noqa: E402
from agents.inference import ACTOR_FILE, PPOPolicy  # noqa: E402
from agents.train_config import TrainConfig  # noqa: E402
from agents.training import build_ppo, make_env, make_vec_env, train  # noqa: E402
from ilp_baseline.safety import SafetyLayer  # noqa: E402
from rlscale.control import Controller  # noqa: E402
from rlscale.errors import RlscaleError  # noqa: E402
from rlscale.model import is_feasible  # noqa: E402
from rlscale.sim.runner import run_episode  # noqa: E402
from rlscale.spec import load_spec  # noqa: E402
from rlscale.types import PipelineState  # noqa: E402
from rlscale.workload import Trace, load_trace  # noqa: E402


@pytest.mark.e2e
def test_training_run_folder(tiny_run):
    assert tiny_run.name.startswith("video__ppo__0__")
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["pipeline"] == "video" and config["timesteps"] == 256 and config["spec_name"] == "video"
    assert (tiny_run / "model.zip").stat().st_size > 1000
    actor = load_actor(tiny_run / ACTOR_FILE)  # the run's numpy actor, with its codec settings inside
    assert actor.pipeline == "video" and actor.load_scale_rps == config["load_scale_rps"]
    assert actor.training["timesteps"] == 256
    assert list((tiny_run / "checkpoints").glob("ppo_*_steps.zip"))
    assert list((tiny_run / "tb").rglob("events.out.tfevents.*"))
    report = json.loads((tiny_run / "eval.json").read_text())
    assert set(report["eval"]) == {"bursty", "steady_low", "steady_high", "fluctuating"}
    # checkpoints selected on the validation gap against IPA: the checkpoint at 128 steps and the final model
    gaps = report["checkpoint_gaps"]
    assert set(gaps) == {"ppo_128_steps.zip", "ppo_256_steps.zip", "model.zip"}
    assert gaps[report["selected"]] == max(gaps.values())
    assert report["validation_score"] == pytest.approx(gaps[report["selected"]], abs=1e-4)
    # cells: 1 window x 2 weight settings x 3 load scales, IPA's records beside the agent's
    assert len(report["validation"]) == len(report["validation_ipa"]) == 6


@pytest.mark.e2e
def test_learning_reads_the_training_split_only(tmp_path, monkeypatch):
    """With the evaluation windows unreadable, training still runs: they feed nothing but the final report."""
    import rlscale.workload as workload

    def forbidden(*_a, **_k):
        raise AssertionError("an evaluation window was read while learning")

    monkeypatch.setattr(workload, "_eval_windows", forbidden)
    monkeypatch.setattr(workload, "load_trace", forbidden)
    monkeypatch.setattr(training, "evaluate", lambda *a, **k: {})  # the report-only evaluation, after learning
    cfg = TrainConfig(timesteps=128, n_envs=1, n_steps=64, batch_size=32, out=str(tmp_path), validation_windows=1)
    run = train(cfg, progress_bar=False)
    assert (run / "model.zip").exists() and (run / ACTOR_FILE).exists()


@pytest.mark.e2e
def test_policies_from_a_trained_model(tiny_run):
    spec = load_spec("video")
    trace = Trace("ramp", load_trace("bursty").rps[300:600].copy())
    raw = PPOPolicy(spec, tiny_run / ACTOR_FILE)
    safe = Controller(raw, SafetyLayer(spec))  # what the policy name `ppo` means (rlscale.policies.registry)
    assert (safe.name, safe.guard_name, Controller(raw).guard_name) == ("ppo", "safety", "none")
    result = run_episode(spec, trace, safe)
    assert result.record["guard"] == "safety"
    assert result.record["requests"] == int(trace.rps.sum())
    # with safety, every decision is feasible at the load floor it was made for
    for i, config in enumerate(result.configs[1:], start=1):
        hist = trace.rps[: 10 * i]
        load = float(hist[-10:].max())
        assert is_feasible(spec, config, load), (i, config)
    state = PipelineState(10.0, 10.0, np.full(10, 30.0), result.configs[0], None)
    assert safe.decide(state) == SafetyLayer(spec).project(raw.decide(state), state)[0]


@pytest.mark.e2e
def test_missing_or_wrong_agent_is_one_clear_error(tmp_path, tiny_run):
    spec = load_spec("video")
    with pytest.raises(RlscaleError, match="no agent at"):
        PPOPolicy(spec, tmp_path / "nothing.zip")
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(RlscaleError, match="cannot load the agent"):
        PPOPolicy(spec, bad)
    with pytest.raises(AgentMismatch, match="not pipeline nlp"):  # a video agent cannot drive another pipeline
        PPOPolicy(load_spec("nlp"), tiny_run / ACTOR_FILE)
    # a run's model.zip is a pickle: never an agent file (python -m agents.ppo converts one you trained)
    with pytest.raises(RlscaleError, match=r"not an agent file; pass the run's actor\.npz.*python -m agents\.ppo"):
        PPOPolicy(spec, tiny_run / "model.zip")


@pytest.mark.e2e
def test_bundle_copies_the_actor_file(tmp_path, tiny_run, monkeypatch, capsys):
    """``rlscale train --bundle`` copies the run's actor.npz (and nothing else) into agents/data."""
    from rlscale import cli

    monkeypatch.setattr(inference, "BUNDLED_DIR", tmp_path / "data")
    monkeypatch.setattr(training, "train", lambda cfg, **_: tiny_run)
    assert cli.main(["train", "--pipeline", "video", "--out", str(tmp_path / "runs"), "--bundle"]) == 0
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ppo_video.npz"]
    assert (tmp_path / "data" / "ppo_video.npz").read_bytes() == (tiny_run / ACTOR_FILE).read_bytes()
    assert "bundled as" in capsys.readouterr().out


@pytest.mark.e2e
def test_environments_in_subprocesses_train_the_same_agent(tmp_path):
    """``--vec-env subproc`` steps each environment in its own process: the agent is the one ``dummy`` trains."""
    actors = {}
    for kind in ("dummy", "subproc"):
        cfg = TrainConfig(
            timesteps=128,
            n_envs=2,
            n_steps=32,
            batch_size=32,
            out=str(tmp_path / kind),
            vec_env=kind,
            validation_windows=1,
            checkpoint_every=10**5,
            eval_every=10**5,
        )
        run = train(cfg, progress_bar=False)
        actors[kind] = load_actor(run / ACTOR_FILE)
        actors[kind + "-eval"] = json.loads((run / "eval.json").read_text())
    for (w1, b1), (w2, b2) in zip(actors["dummy"].layers, actors["subproc"].layers, strict=True):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(b1, b2)
    assert actors["dummy-eval"]["validation"] == actors["subproc-eval"]["validation"]


@pytest.mark.e2e
def test_training_keeps_the_validation_day_out(tiny_run):
    """The windows trained on lie in days 0-12; the validation windows (day 13) are scored after training (the
    shared tiny run's report)."""
    from envs.pipeline_env import PipelineEnv
    from rlscale.workload import SECONDS_PER_DAY

    cfg = TrainConfig()
    env = make_env(cfg, 0)().unwrapped
    assert isinstance(env, PipelineEnv) and env.training_days == (0, 13)
    for i in range(50):
        env.reset(seed=i)
        start = int(env.trace.name.split("@")[1].split(":")[0])
        assert start + env.trace.duration_s <= 13 * SECONDS_PER_DAY
    report = json.loads((tiny_run / "eval.json").read_text())
    assert sorted(report["validation"]) and all(name.startswith("val@") for name in report["validation"])
    # the score a run is selected by: the mean gap to IPA on the same cells, in units of beta (one core)
    beta = load_spec("video").objective.beta
    gaps = [(r["score"] - report["validation_ipa"][k]["score"]) / beta for k, r in report["validation"].items()]
    assert report["validation_score"] == pytest.approx(np.mean(gaps))


@pytest.mark.e2e
def test_training_on_own_traffic_end_to_end(tmp_path):
    """A user's CSV: training windows from its first part, validation windows from its held-out last part (the
    score a sweep selects by), eval.json reporting the traces asked for (issue 14)."""
    from envs.pipeline_env import PipelineEnv

    rps = 10 + (np.arange(2400) % 300) // 30
    path = tmp_path / "ours.csv"
    path.write_text("rps\n" + "\n".join(str(int(x)) for x in rps) + "\n")
    cfg = TrainConfig(
        timesteps=64,
        n_envs=1,
        n_steps=64,
        batch_size=32,
        out=str(tmp_path / "runs"),
        traces=str(path),
        eval_traces=f"steady_low,{path}",
        window_s=300,
        validation_fraction=0.25,
        validation_windows=3,
    )
    env = make_env(cfg, 0)().unwrapped
    assert isinstance(env, PipelineEnv)
    for i in range(30):
        env.reset(seed=i)
        name, start = env.trace.name.split(":")[0].rsplit("@", 1)
        assert name == "ours.csv" and int(start) + 300 <= 1800 and env.trace.duration_s == 300
    run = train(cfg, progress_bar=False)
    report = json.loads((run / "eval.json").read_text())
    windows = {name.split("|")[0].split("@x")[0] for name in report["validation"]}
    assert windows == {"val:ours.csv@1800", "val:ours.csv@1950", "val:ours.csv@2100"}
    assert len(report["validation"]) == 3 * 2 * 3  # windows x weight settings x load scales
    assert list(report["eval"]) == ["steady_low", str(path)]
    assert json.loads((run / "config.json").read_text())["traces"] == str(path)


@pytest.mark.slow
def test_one_ppo_builder_for_training_and_the_benchmark():
    """`build_ppo` is the PPO `train` trains and the training throughput benchmark measures: seeded, so two builds
    are one policy; the benchmark's start is SB3's uniform one, a training's the prior it resolved."""
    import torch

    from agents.priors import ipa_action

    cfg = TrainConfig(pipeline="video", n_envs=1)
    venv = make_vec_env(cfg)
    try:
        uniform, again, prior = build_ppo(venv, cfg), build_ppo(venv, cfg), build_ppo(venv, cfg, "ipa")
        for a, b in zip(uniform.policy.parameters(), again.policy.parameters(), strict=True):
            assert torch.equal(a, b)
        assert (uniform.n_steps, uniform.batch_size, uniform.n_epochs, uniform.gamma) == (512, 256, 10, 0.95)
        obs = venv.reset()
        expected = ipa_action(venv.action_space.nvec)
        assert list(prior.predict(obs, deterministic=True)[0][0]) == expected
        shift = (prior.policy.action_net.bias - uniform.policy.action_net.bias).detach().numpy()
        assert np.count_nonzero(shift) == len(expected)  # one logit per sub-action: the prior's choice
    finally:
        venv.close()
