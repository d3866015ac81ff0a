"""One contract for every policy: valid configurations, conservation, determinism; plus the flags."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.errors import RlscaleError
from rlscale.interfaces import Policy
from rlscale.model import is_feasible, objective_value
from rlscale.policies.registry import PolicyOptions, make_policy, policy_names, tuned_headroom
from rlscale.sim.runner import run_episode, warm_state
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig
from rlscale.workload import Trace, load_trace


@pytest.fixture(scope="module")
def spec():
    return load_spec("video")


@pytest.fixture(scope="module")
def ramp():
    """The bursty window's first 600 s: calm, then the ramp to 30 rps."""
    return Trace("bursty-600", load_trace("bursty").rps[:600].copy())


def _valid(spec, config: PipelineConfig) -> None:
    assert isinstance(config, PipelineConfig)
    assert len(config.stages) == len(spec.stages)
    for st, sc in zip(spec.stages, config.stages, strict=True):
        assert len(sc.pools) <= st.max_pools
        for pool in sc.pools:
            assert pool.variant in st.variant_names
            assert pool.batch in st.batch_sizes
            assert pool.cores in st.cores
            assert st.min_replicas <= pool.replicas <= st.max_replicas


SINGLE_STAGE = {"infadapter": "infadapter", "ms-plus": "infadapter", "sponge": "sponge", "fa2": "sponge"}
"""Policies of single-stage pipelines (InfAdapter's, Sponge's): their contract is checked on that pipeline and its
trace's first 600 s (the ``sponge`` pipeline as bundled: one replica at most, so ``fa2`` stays within it)."""


@pytest.mark.parametrize("name", policy_names())
@pytest.mark.slow
def test_every_policy_keeps_the_contract(spec, ramp, name):
    if name in SINGLE_STAGE:
        spec = load_spec(SINGLE_STAGE[name])
        ramp = Trace(f"{spec.name}-600", load_trace(spec.name).rps[:600].copy())
        with pytest.raises(RlscaleError, match="single-stage"):
            make_policy(name, load_spec("video"), ramp)
    policy = make_policy(name, spec, ramp)
    assert isinstance(policy, Policy)
    assert policy.name == name
    _valid(spec, policy.decide(warm_state(spec, ramp)))
    result = run_episode(spec, ramp, policy, seed=1)
    r = result.record
    assert r["requests"] == int(ramp.rps.sum())
    assert r["completed"] + r["dropped"] + r["in_flight"] == r["requests"]
    assert r["in_flight"] == 0
    assert 0 <= r["sla_violation_rate"] <= 1
    assert len(result.configs) == r["intervals"] == 600 / spec.interval_s
    for cfg in result.configs:
        _valid(spec, cfg)
    again = run_episode(spec, ramp, make_policy(name, spec, ramp), seed=1).record
    for key in ("completed", "dropped", "late", "accuracy", "cost_cores", "reconfigurations"):
        assert again[key] == r[key], key


def test_planner_flags_change_the_plan(spec, ramp):
    low = make_policy("ipa", spec, ramp, PolicyOptions(predictor="reactive", headroom=1.0))
    high = make_policy("ipa", spec, ramp, PolicyOptions(predictor="reactive", headroom=2.0))
    state = warm_state(spec, ramp)
    state = state.__class__(**{**state.__dict__, "arrival_rps": np.full(10, 20.0)})
    assert high.decide(state).total_cores > low.decide(state).total_cores
    cbc = make_policy("ipa", spec, ramp, PolicyOptions(solver="cbc", predictor="reactive", headroom=1.0))
    chosen = cbc.decide(state)
    assert cbc.policy.solver == "cbc" and cbc.policy.last_load_rps == pytest.approx(20.0)
    assert is_feasible(spec, chosen, cbc.policy.last_load_rps)
    # CBC solves the program the DP solves: an equally good plan (a tie may pick another configuration)
    assert objective_value(spec, chosen) == pytest.approx(objective_value(spec, low.decide(state)), rel=1e-9)


@pytest.mark.parametrize(
    "options,problem",
    [
        (PolicyOptions(solver="gurobi"), "unknown solver"),
        (PolicyOptions(predictor="crystal-ball"), "unknown predictor"),
        (PolicyOptions(headroom=0), "headroom must be > 0"),
    ],
)
def test_bad_options(spec, ramp, options, problem):
    with pytest.raises(RlscaleError, match=problem):
        make_policy("ipa", spec, ramp, options)


def test_oracle_refuses_another_predictor_and_unknown_policy(spec, ramp):
    with pytest.raises(RlscaleError, match="oracle"):
        make_policy("oracle", spec, ramp, PolicyOptions(predictor="lstm"))
    with pytest.raises(RlscaleError, match="unknown policy 'ipa2'"):
        make_policy("ipa2", spec, ramp)


def test_ipa_tuned_uses_the_training_sweep(spec):
    h = tuned_headroom(spec)
    assert 1.0 <= h <= 2.0


@pytest.mark.parametrize(("score", "expected"), [(None, "ppo"), (0.4, "ppo"), (-0.7, "ipa")])
def test_default_live_policy_skips_an_agent_that_trails_ipa(tmp_path, monkeypatch, score, expected):
    """A bundled agent whose recorded validation margin over IPA is negative is not the default; one without a
    record (bundled before it was kept) still is; no bundled agent: ipa."""
    import dataclasses

    from agents import inference
    from agents.actor import random_actor
    from rlscale.policies.registry import default_live_policy
    from rlscale.spec import load_spec

    spec = load_spec("video")
    monkeypatch.setattr(inference, "BUNDLED_DIR", tmp_path)
    assert default_live_policy(spec) == "ipa"
    actor = random_actor(spec, hidden=(4,), observation="conditioned", action="planner")
    training = {} if score is None else {"validation_score": score}
    dataclasses.replace(actor, training=training).save(tmp_path / "ppo_video.npz")
    assert default_live_policy(spec) == expected


def test_vpa_flags_reach_the_policy():
    from rlscale.cli import build_parser
    from rlscale.cli.args import policy_options

    argv = ["simulate", "--pipeline", "infadapter", "--trace", "infadapter", "--policy", "vpa"]
    pins = ["--vpa-updater", "infadapter", "--vpa-variant", "resnet152", "--vpa-cores", "20"]
    args = build_parser().parse_args([*argv, *pins])
    opts = policy_options(args, ["vpa"])
    assert (opts.vpa_updater, opts.vpa_variant, opts.vpa_cores) == ("infadapter", ("resnet152",), (20,))
    policy = make_policy("vpa", load_spec("infadapter"), None, opts).policy
    assert (policy.updater, policy.pinned_variants, policy.pinned_cores) == ("infadapter", ["resnet152"], [20])
    # without flags: the spec's vpa section (infadapter: InfAdapter's vpa-152 start), else the VPA's defaults
    no_flags = policy_options(build_parser().parse_args(argv))
    default = make_policy("vpa", load_spec("infadapter"), None, no_flags).policy
    assert (default.updater, default.pinned_variants, default.pinned_cores) == ("infadapter", ["resnet152"], [20])
    plain = make_policy("vpa", load_spec("video"), None, no_flags).policy
    assert (plain.updater, plain.pinned_variants, plain.pinned_cores) == ("kubernetes", None, None)


def test_vpa_flags_override_the_spec_section_one_by_one():
    from rlscale.cli import build_parser
    from rlscale.cli.args import policy_options

    argv = ["simulate", "--pipeline", "infadapter", "--trace", "infadapter", "--policy", "vpa"]
    args = build_parser().parse_args([*argv, "--vpa-variant", "resnet50"])
    policy = make_policy("vpa", load_spec("infadapter"), None, policy_options(args, ["vpa"])).policy
    assert (policy.updater, policy.pinned_variants, policy.pinned_cores) == ("infadapter", ["resnet50"], [20])
    args = build_parser().parse_args([*argv, "--vpa-updater", "kubernetes", "--vpa-min-replicas", "1"])
    policy = make_policy("vpa", load_spec("infadapter"), None, policy_options(args, ["vpa"])).policy
    assert (policy.updater, policy.min_replicas) == ("kubernetes", 1)
    # the section makes the infadapter updater the default, which has no min_replicas condition
    args = build_parser().parse_args([*argv, "--vpa-min-replicas", "1"])
    with pytest.raises(RlscaleError, match="--vpa-min-replicas is for --vpa-updater kubernetes"):
        make_policy("vpa", load_spec("infadapter"), None, policy_options(args, ["vpa"]))
