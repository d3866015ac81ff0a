"""The PPO agent: a training run's folder, training on training windows only, and the ppo / ppo-raw policies.

Training needs torch and stable-baselines3 (the ``train`` extra): without them this module is skipped; the numpy
actor is tested in test_actor.py and the torch-free commands in tests/test_no_torch.py.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("stable_baselines3", reason="training needs the train extra (torch, stable-baselines3)")

import agents.ppo as ppo  # noqa: E402
from agents.actor import AgentMismatch, load_actor  # noqa: E402
from agents.ppo import ACTOR_FILE, PPOPolicy, TrainConfig, bundled_agent, train  # noqa: E402
from ilp_baseline.safety import SafetyLayer
from rlscale.control import Controller
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
    monkeypatch.setattr(ppo, "evaluate", lambda *a, **k: {})  # the report-only evaluation, after learning
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
def test_a_model_zip_needs_its_training_settings(tmp_path, tiny_run):
    """No silent load_scale_rps default: converting a model.zip alone (no config.json, no .json beside it) is
    refused (`actor_from_model_zip`, the trusted converter's path; ``--agent`` refuses every model.zip)."""
    alone = tmp_path / "model.zip"
    shutil.copy(tiny_run / "model.zip", alone)

    def convert(spec, path):  # the converted actor's codec for the spec, as a policy built on it would check
        return ppo.actor_from_model_zip(path).codec(spec, path)

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
    assert settings["codec"]["hold_delta"] == ppo.HOLD_DELTA and 0.9 in settings["codec"]["headrooms"]
    (tmp_path / "config.json").write_text(json.dumps(settings))
    codec = convert(load_spec("video"), alone)
    assert codec.load_scale_rps == 40.0 and codec.hold_delta == ppo.HOLD_DELTA
    # settings without action_design are a run from before issue 15: absolute observations, which this model lacks
    (tmp_path / "config.json").write_text(json.dumps({"pipeline": "video", "load_scale_rps": 40.0}))
    with pytest.raises(RlscaleError, match="observes"):
        convert(load_spec("video"), alone)


def test_bundled_agents_exist():
    for pipeline in ("video", "sum-qa"):
        assert bundled_agent(pipeline).exists(), "run `make agent` to train and bundle the agents"


@pytest.mark.e2e
def test_numpy_actor_equals_sb3_predict(tiny_run):
    """The run's actor.npz (numpy) picks exactly SB3's deterministic action on 400 observations."""
    from stable_baselines3 import PPO

    spec = load_spec("video")
    # actor.npz is the checkpoint validation selected (the final model's when it is the best)
    model = PPO.load(selected_model(tiny_run), device="cpu")
    actor = load_actor(tiny_run / ACTOR_FILE)
    assert ppo.agreement(model, actor, spec, n=400) == 400
    checkpoint = sorted((tiny_run / "checkpoints").glob("ppo_*_steps.zip"))[-1]  # a checkpoint reads as well
    exported = ppo.actor_from_model_zip(checkpoint)
    assert ppo.agreement(PPO.load(checkpoint, device="cpu"), exported, spec, n=100) == 100


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


@pytest.mark.e2e
def test_bundle_copies_the_actor_file(tmp_path, tiny_run, monkeypatch, capsys):
    """``rlscale train --bundle`` copies the run's actor.npz (and nothing else) into agents/data."""
    from rlscale import cli

    monkeypatch.setattr(ppo, "BUNDLED_DIR", tmp_path / "data")
    monkeypatch.setattr(ppo, "train", lambda cfg, **_: tiny_run)
    assert cli.main(["train", "--pipeline", "video", "--out", str(tmp_path / "runs"), "--bundle"]) == 0
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ppo_video.npz"]
    assert (tmp_path / "data" / "ppo_video.npz").read_bytes() == (tiny_run / ACTOR_FILE).read_bytes()
    assert "bundled as" in capsys.readouterr().out


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
    env = ppo.make_env(cfg, 0)().unwrapped
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
    env = ppo.make_env(cfg, 0)().unwrapped
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
def test_the_ipa_prior_starts_the_policy_at_ipas_action():
    from stable_baselines3 import PPO

    from agents.ppo import PRIOR_LOGIT, ipa_action, make_vec_env, prior_action, set_prior
    from envs.codecs import HEADROOMS, TILTS

    venv = make_vec_env(TrainConfig(pipeline="video", n_envs=1))
    nvec = venv.action_space.nvec
    expected = ipa_action(nvec)
    assert expected == [HEADROOMS.index(1.0), HEADROOMS.index(1.0), 1, TILTS.index(1.0)]  # headroom 1, replan, tilt 1
    obs = venv.reset()
    rng = np.random.default_rng(0)
    samples = np.vstack([obs, rng.uniform(-3, 3, size=(31, obs.shape[1])).astype(np.float32)])
    fresh = PPO("MlpPolicy", venv, seed=0, device="cpu")
    assert not all(list(a) == expected for a in fresh.predict(samples, deterministic=True)[0])
    set_prior(fresh.policy, nvec)
    assert all(list(a) == expected for a in fresh.predict(samples, deterministic=True)[0])
    drawn = fresh.predict(np.repeat(obs, 400, axis=0), deterministic=False)[0]
    share = np.mean([list(a) == expected for a in drawn])  # still explores: about 0.67^2 x 0.86 x 0.86
    assert 0.2 < share < 0.5
    assert PRIOR_LOGIT > 0
    with pytest.raises(RlscaleError, match="not a planner action space"):
        ipa_action([4, 3, 2])
    hold = prior_action(nvec, "ipa-hold")
    assert hold == [HEADROOMS.index(0.9), HEADROOMS.index(0.9), 2, TILTS.index(1.0)]  # 0.9, hold unless gain
    other = PPO("MlpPolicy", venv, seed=0, device="cpu")
    set_prior(other.policy, nvec, "ipa-hold")
    assert all(list(a) == hold for a in other.predict(samples, deterministic=True)[0])
    venv.close()


def test_a_bad_prior_is_refused():
    with pytest.raises(RlscaleError, match="--prior must be one of"):
        train(TrainConfig(prior="imitate"), progress_bar=False)


@pytest.mark.slow
def test_prior_auto_starts_from_the_better_baseline_on_validation():
    from agents.ppo import choose_prior, fixed_actor, prior_action, source_validation_windows, sources
    from agents.validation import agent_records, gap_vs_ipa, ipa_reference, validation_cells

    cfg = TrainConfig(pipeline="video", validation_windows=1, prior="auto")
    spec = load_spec("video")
    windows = source_validation_windows(sources(cfg), cfg.validation_windows, cfg.window_s)
    nvec = [7, 7, 3, 3]
    memo: dict = {}
    chosen = choose_prior(cfg, spec, windows, nvec, memo)
    assert set(chosen["gaps"]) == {"ipa", "ipa-hold"}
    assert chosen["gaps"][chosen["prior"]] == max(chosen["gaps"].values())
    # the margin is the fixed action's, behind the safety layer, on the validation cells
    cells = validation_cells(spec, windows, True, (cfg.min_load_scale, cfg.max_load_scale))
    hold = fixed_actor(spec, prior_action(nvec, "ipa-hold"), cfg.load_scale_rps)
    assert hold.act(np.zeros(hold.obs_size, np.float32)).tolist() == prior_action(nvec, "ipa-hold")
    ipa = ipa_reference(cells)
    assert memo["ipa"] == ipa and len(memo["cells"]) == len(cells)  # kept for the checkpoints' selection
    gap = gap_vs_ipa(cells, agent_records(hold, cells), ipa)
    assert chosen["gaps"]["ipa-hold"] == pytest.approx(gap, abs=1e-4)
    assert choose_prior(cfg, spec, [], nvec) == {"prior": "ipa", "gaps": {}}
