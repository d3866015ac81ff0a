"""The codecs (`envs.codecs`), chiefly the conditioned codec (issue 15): weights in the observation, no absolute
load, the planner action."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from agents.actor import load_actor, random_actor
from envs.codecs import HEADROOMS, HISTORY_STEPS, HOLDS, ConditionedCodec, objective_features
from envs.pipeline_env import PipelineEnv, TrainingTraces, reward_terms
from ilp_baseline.dp import solve_dp
from ilp_baseline.problem import planning_data
from rlscale.errors import RlscaleError
from rlscale.model import stage_capacity_rps
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, PipelineState


@pytest.fixture(scope="module")
def spec():
    return load_spec("video")


def weighted(spec, **changes):
    return dataclasses.replace(spec, objective=dataclasses.replace(spec.objective, **changes))


def state(spec, load: float, config: PipelineConfig) -> PipelineState:
    rps = np.full(HISTORY_STEPS * 10, load)
    rps[-30:] = load * 1.2
    return PipelineState(0.0, 10.0, rps, config, None, 0)


def test_observation_holds_the_weights_and_ignores_their_scale(spec):
    o = spec.objective
    config = solve_dp(planning_data(spec, 20.0)).config
    s = state(spec, 20.0, config)
    obs = ConditionedCodec(spec).observe(s, 21.0)
    scaled = weighted(spec, alpha=o.alpha * 7, beta=o.beta * 7, gamma=o.gamma * 7, sla_penalty=o.sla_penalty * 7)
    np.testing.assert_allclose(ConditionedCodec(scaled).observe(s, 21.0), obs, rtol=1e-6)
    richer = ConditionedCodec(weighted(spec, alpha=o.alpha * 10)).observe(s, 21.0)
    assert richer[-8] > obs[-8]  # ln(alpha/beta) / ln(250), before the four plan features
    assert objective_features(weighted(spec, sla_mode="hard"))[3] == 1.0


def test_load_is_observed_relative_to_capacity(spec):
    """Twice the load on twice the replicas looks the same, but for the load relative to the pipeline's maximum."""
    config = solve_dp(planning_data(spec, 15.0)).config
    double = PipelineConfig(tuple(sc.with_(replicas=2 * sc.replicas) for sc in config.stages))
    codec = ConditionedCodec(spec)
    a = codec.observe(state(spec, 15.0, config), 16.0)
    b = codec.observe(state(spec, 30.0, double), 32.0)
    np.testing.assert_allclose(a[: HISTORY_STEPS + 1], b[: HISTORY_STEPS + 1], rtol=1e-6)
    assert b[HISTORY_STEPS + 1] == pytest.approx(2 * a[HISTORY_STEPS + 1], rel=1e-5)


def test_planner_hold_keeps_variant_batch_cores(spec):
    codec = ConditionedCodec(spec)
    config = solve_dp(planning_data(spec, 10.0)).config
    s = state(spec, 10.0, config)
    k = HEADROOMS.index(1.0)
    held = codec.decode(np.array([k, k, 0, 1]), s, 25.0)
    for old, new in zip(config.stages, held.stages, strict=True):
        assert (old.variant, old.batch, old.cores) == (new.variant, new.batch, new.cores)
    assert all(stage_capacity_rps(st, sc, 1.0) >= 25.0 for st, sc in zip(spec.stages, held.stages, strict=True))


def test_planner_replan_is_the_dp_optimum_at_each_stages_headroom(spec):
    codec = ConditionedCodec(spec)
    config = solve_dp(planning_data(spec, 10.0)).config
    s = state(spec, 10.0, config)
    k0, k1 = HEADROOMS.index(1.0), HEADROOMS.index(2.0)
    planned = codec.decode(np.array([k0, k1, 1, 1]), s, 20.0)
    assert planned == solve_dp(planning_data(spec, [20.0, 40.0])).config
    tilted = codec.decode(np.array([k0, k0, 1, 2]), s, 20.0)  # alpha x 2
    assert tilted == solve_dp(planning_data(weighted(spec, alpha=2 * spec.objective.alpha), 20.0)).config


def test_planner_hold_unless_gain_is_ipa_holds_rule(spec):
    """The third hold choice keeps the configuration in force while re-planning gains at most hold_delta x beta, and
    re-plans beyond it; agents without hold_delta have two choices only."""
    from rlscale.model import objective_value, resize_replicas

    rich = weighted(spec, alpha=30.0)
    cheap = solve_dp(planning_data(weighted(spec, alpha=0.0), 20.0)).config
    plan = solve_dp(planning_data(rich, 20.0)).config
    held = resize_replicas(rich, cheap, 20.0)
    gain = (objective_value(rich, plan) - objective_value(rich, held)) / rich.objective.beta
    assert gain > 0 and plan != held
    k = HEADROOMS.index(1.0)
    action = np.array([k, k, HOLDS.index("hold-unless-gain"), 1])
    s = state(rich, 20.0, cheap)
    assert ConditionedCodec(rich, hold_delta=gain * 1.01).decode(action, s, 20.0) == held
    assert ConditionedCodec(rich, hold_delta=gain * 0.99).decode(action, s, 20.0) == plan
    assert ConditionedCodec(rich).decode(np.array([k, k, HOLDS.index("hold"), 1]), s, 20.0) == held
    assert list(ConditionedCodec(rich).action_nvec()) == [len(HEADROOMS)] * 2 + [3, 3]
    assert list(ConditionedCodec(rich, hold_delta=None).action_nvec()) == [len(HEADROOMS)] * 2 + [2, 3]


def test_rewards_per_load_divide_by_the_episodes_load_scale(spec):
    env = PipelineEnv(spec, action_design="planner", load_scales=(0.25, 3.0), reward_per_load=True)
    factors = []
    for seed in range(6):
        env.reset(seed=seed)
        factor = float(env.trace.name.rsplit("@x", 1)[1])
        factors.append(factor)
        _, reward, _, _, info = env.step(env.action_space.sample())
        offset, scale = reward_terms(env.episode_spec)
        shaping = 0.05 * info["projection_distance"] + 0.05 * float(info["reconfigured"])
        assert reward == pytest.approx((info["score"] - offset) / (scale * env._traces.factor) - shaping)
        assert env._traces.factor == pytest.approx(factor, abs=0.005)  # the name shows it to 2 decimals
    assert max(factors) > 1.05 and min(factors) < 0.8
    env.reset(seed=0, options={"trace": "steady_low"})  # a given trace is not scaled: nothing divided
    _, reward, _, _, info = env.step(env.action_space.sample())
    offset, scale = reward_terms(env.episode_spec)
    shaping = 0.05 * info["projection_distance"] + 0.05 * float(info["reconfigured"])
    assert reward == pytest.approx((info["score"] - offset) / scale - shaping)
    with pytest.raises(RlscaleError, match="reward_per_load needs a conditioned codec"):
        PipelineEnv(spec, action_design=None, reward_per_load=True)


def test_env_samples_weights_and_load_scales_and_scales_rewards(spec):
    env = PipelineEnv(spec, action_design="planner", sample_objective=True, load_scales=(0.25, 3.0))
    alphas, factors = set(), []
    for seed in range(12):
        env.reset(seed=seed)
        alphas.add(env.episode_spec.objective.alpha)
        factors.append(float(env.trace.name.rsplit("@x", 1)[1]))
        _, reward, _, _, info = env.step(env.action_space.sample())
        offset, scale = reward_terms(env.episode_spec)
        shaping = 0.05 * info["projection_distance"] + 0.05 * float(info["reconfigured"])
        assert reward == pytest.approx((info["score"] - offset) / scale - shaping)
    assert len(alphas) >= 4
    assert all(0.25 <= f <= 3.0 for f in factors) and max(factors) > 1.2 and min(factors) < 0.8
    env.reset(seed=0, options={"trace": "bursty", "objective": {"alpha": 30.0}})
    assert env.episode_spec.objective.alpha == 30.0 and env.codec.spec is env.episode_spec


def test_load_scales_multiply_training_windows():
    plain = TrainingTraces(np.random.default_rng(3)).sample()
    scaled = TrainingTraces(np.random.default_rng(3), load_scales=(2.0, 2.0)).sample()
    np.testing.assert_array_equal(scaled.rps, np.floor(plain.rps * 2.0 + 0.5))


def test_conditioning_needs_the_conditioned_codec(spec):
    with pytest.raises(RlscaleError, match="conditioned codec"):
        PipelineEnv(spec, action_design=None, sample_objective=True)
    with pytest.raises(RlscaleError, match="unknown action design"):
        ConditionedCodec(spec, action="both")


@pytest.mark.parametrize("action", ["planner", "direct"])
def test_actor_file_keeps_the_codec(tmp_path, spec, action):
    actor = random_actor(spec, hidden=(8,), observation="conditioned", action=action)
    back = load_actor(actor.save(tmp_path / "a.npz"))
    assert (back.observation, back.action, back.headrooms) == ("conditioned", action, HEADROOMS)
    codec = back.codec(spec)
    assert isinstance(codec, ConditionedCodec) and codec.action == action
    obs = codec.observe(state(spec, 10.0, solve_dp(planning_data(spec, 10.0)).config), 11.0)
    assert back.act(obs).shape == (len(codec.action_nvec()),)


def test_actor_without_codec_keys_is_a_pre_issue_15_agent(tmp_path, spec):
    old = random_actor(spec, hidden=(8,))
    path = old.save(tmp_path / "old.npz")
    back = load_actor(path)
    assert (back.observation, back.action) == ("absolute", "direct")
    assert not isinstance(back.codec(spec), ConditionedCodec)


def test_actor_file_from_before_issue_15_reads_as_absolute_direct(tmp_path, spec):
    """Files written before the codec keys existed (no observation/action/headrooms/tilts) still load."""
    import json

    path = random_actor(spec, hidden=(8,)).save(tmp_path / "new.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["meta"]))
    for key in ("observation", "action", "headrooms", "tilts"):
        del meta["codec"][key]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "legacy.npz", **arrays)
    back = load_actor(tmp_path / "legacy.npz")
    assert (back.observation, back.action) == ("absolute", "direct")
    meta["codec"]["action"] = "planner"  # a planner action needs conditioned observations
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(RlscaleError, match="codec.action"):
        load_actor(tmp_path / "bad.npz")


def test_plan_features_are_ipa_holds_signal(spec):
    """The gain of re-planning over holding at the predicted load, in cores: zero when the configuration in force is
    the plan, positive when it is not, and no hold when the configuration cannot carry the load."""
    from rlscale.model import objective_value, resize_replicas

    codec = ConditionedCodec(spec)
    optimum = solve_dp(planning_data(spec, 20.0)).config
    gain, feasible, accuracy, extra = codec.plan_features(state(spec, 20.0, optimum), 20.0)
    assert (gain, feasible, accuracy, extra) == pytest.approx((0.0, 1.0, 0.0, 0.0), abs=1e-9)
    cheap = solve_dp(planning_data(weighted(spec, alpha=0.0), 20.0)).config
    rich = weighted(spec, alpha=30.0)
    gain, feasible, accuracy, _ = ConditionedCodec(rich).plan_features(state(rich, 20.0, cheap), 20.0)
    plan = solve_dp(planning_data(rich, 20.0)).config
    held = resize_replicas(rich, cheap, 20.0)
    assert feasible == 1.0 and gain == pytest.approx(objective_value(rich, plan) - objective_value(rich, held))
    assert gain > 0 and accuracy > 0
    assert codec.plan_features(state(spec, 20.0, optimum), 1e5)[1] == 0.0  # nothing holds 100,000 rps
    assert codec.plan_features(state(spec, 20.0, optimum), float("nan")) == [0.0] * 4


@pytest.mark.parametrize("pipeline", ["video", "sum-qa"])
@pytest.mark.slow
def test_the_planners_ipa_action_plans_exactly_as_ipa(pipeline):
    """An agent that always proposes IPA's action (headroom 1, replan, no tilt) and runs unguarded scores what ``ipa``
    scores, interval for interval: the planner design can represent IPA, so the IPA prior starts at IPA."""
    from agents.inference import PPOPolicy
    from agents.priors import fixed_actor, ipa_action
    from rlscale.policies.registry import make_policy
    from rlscale.sim.runner import run_episode
    from rlscale.workload import load_trace, scale_trace

    spec = load_spec(pipeline)
    actor = fixed_actor(spec, ipa_action(ConditionedCodec(spec).action_nvec()), 50.0)
    trace = scale_trace(load_trace("steady_high"), 2.0)
    records = {
        "ipa": run_episode(spec, trace, make_policy("ipa", spec, trace), seed=0).record,
        "ppo-raw": run_episode(spec, trace, PPOPolicy(spec, actor), seed=0).record,  # a bare policy: no guard
    }
    for key in ("score", "cost_cores", "accuracy", "sla_violation_rate", "reconfigurations"):
        assert records["ppo-raw"][key] == pytest.approx(records["ipa"][key], abs=1e-9), key


def test_budget_distribution_is_observed_only_with_per_request_slos(spec):
    from envs.codecs import BUDGET_FEATURES
    from rlscale.types import IntervalMetrics, StageMetrics

    sponge = load_spec("sponge")
    config = solve_dp(planning_data(sponge, 10.0)).config
    codec = ConditionedCodec(sponge)
    n = codec.observation_shape()[0]
    plain = ConditionedCodec(dataclasses.replace(sponge, request_slo=None))
    assert n == plain.observation_shape()[0] + BUDGET_FEATURES
    first = codec.observe(state(sponge, 10.0, config), 10.0)
    assert first.shape == (n,) and list(first[-3:]) == [1.0, 1.0, 1.0]  # before any interval: the whole SLA
    stage = StageMetrics(10, 0, 0.05, 0.08, 0, 0.5, 1, 1.0)
    last = IntervalMetrics(0.0, 1.0, 10, 10, 0, 0, 0.0, 0.1, 0.2, 0.3, 1.0, 0.3, 0.3, (stage,), 10.0, 0.3, 0.4, 0.8)
    s = dataclasses.replace(state(sponge, 10.0, config), last=last)
    obs = codec.observe(s, 10.0)
    sla = sponge.sla_s
    np.testing.assert_allclose(obs[-3:], [0.4 / sla, 0.8 / sla, 0.3 / sla], rtol=1e-6)
    no_arrivals = dataclasses.replace(last, arrivals=0, budget_min_s=np.nan, budget_p5_s=np.nan, budget_p50_s=np.nan)
    assert list(codec.observe(dataclasses.replace(s, last=no_arrivals), 10.0)[-3:]) == [1.0, 1.0, 1.0]
    # pipelines without per-request SLOs keep their observation (the bundled agents' shape)
    video = ConditionedCodec(spec).observe(state(spec, 20.0, solve_dp(planning_data(spec, 20.0)).config), 21.0)
    assert video.shape == ConditionedCodec(spec).observation_shape()
