"""Hard limits (issue 14): the core budget is a hard cap for every policy, ``objective.sla_mode: hard`` ranks by
violations first and keeps the guard from trading capacity for cost, and the spec's ``damping`` (the
reconfiguration budget) holds rollouts back in the control step for every policy, never delaying a scale-up."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ilp_baseline.safety import SafetyLayer
from rlscale import control
from rlscale.control import Controller, Damper, Limits, is_rollout, rolled_out, rollout_key, step
from rlscale.errors import SpecError
from rlscale.model import (
    fit_budget,
    max_capacity,
    pipeline_capacity_rps,
    pool_capacity_rps,
    rank_key,
    rank_records,
    stage_capacity_rps,
)
from rlscale.policies.registry import make_policy
from rlscale.sim.runner import run_episode
from rlscale.spec import DampingSpec, load_spec
from rlscale.types import IntervalMetrics, PipelineConfig, PipelineState, StageConfig, VariantPool
from rlscale.workload import Trace, load_trace

VIDEO = load_spec("video")
RECOMMENDED = [
    "damping.min_dwell_s=60",
    "damping.max_rollouts=3",
    "damping.rollout_window_s=600",
    "damping.scale_down_stabilization_s=300",
]

# ---------------------------------------------------------------------------------------------- spec fields


def test_defaults_are_off_and_priced():
    assert VIDEO.objective.sla_mode == "priced"
    assert VIDEO.damping == DampingSpec() and not VIDEO.damping.enabled
    assert "damping" not in VIDEO.to_document() and "sla_mode" not in VIDEO.to_document()["objective"]


def test_damping_and_sla_mode_are_set_by_overrides_and_round_trip(tmp_path):
    from rlscale.spec import dump_spec

    spec = load_spec("video", [*RECOMMENDED, "objective.sla_mode=hard"])
    assert spec.damping == DampingSpec(60.0, 3, 600.0, 300.0) and spec.damping.enabled
    assert spec.objective.sla_mode == "hard"
    path = tmp_path / "s.yaml"
    path.write_text(dump_spec(spec))
    back = load_spec(path)
    assert back.damping == spec.damping and back.objective == spec.objective


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("damping.max_rollouts=3", "rollout_window_s: must be > 0"),
        ("damping.min_dwell_s=-1", "min_dwell_s: must be >= 0"),
        ("damping.max_rollouts=1.5", "max_rollouts: must be an integer"),
        ("damping.colour=1", "unknown field"),
        ("objective.sla_mode=strict", "must be one of priced, hard"),
    ],
)
def test_bad_limits_are_one_spec_error(override, fragment):
    with pytest.raises(SpecError, match=fragment.replace("(", r"\(")):
        load_spec("video", [override])


# ------------------------------------------------------------------------------------------------ ranking


def test_rank_key_priced_by_score_hard_by_violations_first():
    records = [
        {"name": "cheap-late", "sla_violation_rate": 0.21, "score": 10.0},
        {"name": "safe", "sla_violation_rate": 0.0, "score": -5.0},
        {"name": "safe-better", "sla_violation_rate": 0.0, "score": -1.0},
        {"name": "broken", "sla_violation_rate": math.nan, "score": 99.0},
    ]
    priced = [r["name"] for r in sorted(records, key=lambda r: rank_key("priced", r["sla_violation_rate"], r["score"]))]
    hard = [r["name"] for r in rank_records(load_spec("video", ["objective.sla_mode=hard"]), records)]
    assert priced[0] == "broken" and priced[1] == "cheap-late"  # the score alone, whatever the violations
    assert hard == ["safe-better", "safe", "cheap-late", "broken"]


# ------------------------------------------------------------------------------------------- budget: a cap


def _over(spec, load):
    """A configuration far over any small budget: every stage at max replicas of its largest cores."""
    return PipelineConfig(
        tuple(
            StageConfig.one(s.variant_names[-1], s.batch_sizes[-1], s.max_replicas, max(s.cores)) for s in spec.stages
        )
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(budget=st.integers(min_value=2, max_value=400), load=st.floats(min_value=0, max_value=1e4))
def test_fit_budget_never_exceeds_the_budget(budget, load):
    spec = load_spec("video", [f"core_budget={budget}"])
    fitted = fit_budget(spec, _over(spec, load), load)
    assert fitted.total_cores <= budget
    # within the budget, nothing has more capacity than the fallback
    assert pipeline_capacity_rps(spec, fitted) == pytest.approx(max_capacity(spec).capacity_rps)
    small = fit_budget(spec, fitted, load)
    assert small is fitted  # a configuration within the budget passes unchanged


BUDGET_POLICIES = ("hpa", "vpa", "static-max", "static-min", "ipa", "ipa-hold", "fa2-high", "rim", "ppo", "ppo-raw")


@pytest.fixture(scope="module")
def peak_trace() -> Trace:
    """120 s of the InfAdapter trace's busiest stretch (~100-270 rps): far beyond what 5 cores carry."""
    rps = load_trace("infadapter").rps
    start = int(np.argmax(np.convolve(rps, np.ones(120), "valid")))
    return Trace("infadapter-peak", rps[start : start + 120].copy(), "busiest 120 s of the infadapter trace")


@pytest.mark.parametrize("policy", BUDGET_POLICIES)
def test_budget_of_5_holds_for_every_policy(policy, peak_trace):
    spec = load_spec("video", ["core_budget=5"])
    result = run_episode(spec, peak_trace, make_policy(policy, spec, peak_trace))
    assert max(c.total_cores for c in result.configs) <= 5
    record = result.record
    assert record["budget_breaches"] == 0
    assert record["budget_limited_intervals"] == len(result.configs)  # every interval's load exceeds 5 cores'
    assert record["rollouts"] + record["scalings"] == record["reconfigurations"]


def test_budget_cap_is_reported_when_a_policy_asks_for_more():
    spec = load_spec("video", ["core_budget=5"])
    trace = Trace("hot", np.full(60, 200.0), "flat 200 rps")
    record = run_episode(spec, trace, make_policy("static-max", load_spec("video"), trace)).record
    assert record["budget_capped_decisions"] > 0 and record["budget_breaches"] == 0


def test_within_budget_runs_are_unchanged_by_the_cap():
    trace = Trace("w", load_trace("bursty").rps[300:600].copy(), "bursty window")
    a = run_episode(VIDEO, trace, make_policy("ipa", VIDEO, trace)).record
    b = run_episode(VIDEO, trace, make_policy("ipa", VIDEO, trace)).record
    assert a["budget_capped_decisions"] == 0 and a["damped_decisions"] == 0
    assert a["score"] == b["score"]


# ------------------------------------------------------------------------------------------------- damping


def _state(spec, t, config, violation=0.0, load=10.0):
    last = None
    if violation:
        last = IntervalMetrics(
            t - 10, t, 100, 100, 0, int(violation * 100), violation, 1.0, 1.0, 0.5, 4.0, 0.0, 0.0, (), load
        )
    return PipelineState(t, 10.0, np.full(10, load), config, last)


def _cfg(*stages):
    return PipelineConfig(tuple(StageConfig.one(*s) for s in stages))


A = _cfg(("yolov5n", 1, 2, 1), ("resnet18", 1, 2, 1))
B = _cfg(("yolov5s", 1, 2, 1), ("resnet18", 1, 2, 1))  # a rollout of the first stage


def test_min_dwell_holds_a_rollout_then_lets_it_through():
    spec = load_spec("video", ["damping.min_dwell_s=60"])
    d = Damper(spec)
    got, damped, _ = d.apply(_state(spec, 0.0, B), A)  # a rollout at t=0 (B -> A)
    assert got == A and not damped
    got, damped, _ = d.apply(_state(spec, 30.0, A), B)  # 30 s later: held
    assert damped == ["crop"] and got.stages[0].variant == "yolov5n"
    got, damped, _ = d.apply(_state(spec, 60.0, A), B)  # the dwell is over
    assert got == B and not damped


def test_max_rollouts_per_window():
    spec = load_spec("video", ["damping.max_rollouts=2", "damping.rollout_window_s=600"])
    d = Damper(spec)
    config, t, held = A, 0.0, []
    for _ in range(6):
        target = B if config == A else A
        got, damped, _ = d.apply(_state(spec, t, config), target)
        held.append(bool(damped))
        config, t = got, t + 100
    assert held == [False, False, True, True, True, True]
    got, damped, _ = d.apply(_state(spec, 650.0, config), B if config == A else A)  # the first left the window
    assert not damped


def test_a_held_rollout_still_scales_up_to_the_proposed_capacity():
    spec = load_spec("video", ["damping.min_dwell_s=600"])
    d = Damper(spec)
    d.apply(_state(spec, 0.0, B), A)
    big = _cfg(("yolov5s", 1, 6, 1), ("resnet18", 1, 6, 1))  # a rollout and more replicas
    got, damped, _ = d.apply(_state(spec, 10.0, A), big)
    assert damped == ["crop"] and got.stages[0].variant == "yolov5n"
    rho = spec.objective.rho_max
    for stage, g, b in zip(spec.stages, got.stages, big.stages, strict=True):
        held = g.replicas * stage.latency.throughput_rps(g.variant, g.batch, g.cores) * rho
        wanted = b.replicas * stage.latency.throughput_rps(b.variant, b.batch, b.cores) * rho
        assert held >= wanted - 1e-9  # never less capacity than the proposal: scaling up is not delayed


def test_scale_down_stabilisation_keeps_the_recent_maximum_and_never_delays_scale_up():
    spec = load_spec("video", ["damping.scale_down_stabilization_s=300"])
    d = Damper(spec)
    five = _cfg(("yolov5n", 1, 5, 1), ("resnet18", 1, 5, 1))
    two = _cfg(("yolov5n", 1, 2, 1), ("resnet18", 1, 2, 1))
    assert d.apply(_state(spec, 0.0, two), five)[0] == five  # up: at once
    got, damped, _ = d.apply(_state(spec, 100.0, five), two)
    assert got == five and set(damped) == {"crop", "classification"}
    got, damped, _ = d.apply(_state(spec, 301.0, five), two)  # the 5 left the window
    assert got == two and not damped


def test_damping_off_changes_nothing():
    limits = Limits(VIDEO)
    assert limits.damper is None
    for t, target in enumerate([A, B, A, B]):
        got, report = limits.apply(_state(VIDEO, 10.0 * t, B if target == A else A), target)
        assert got == target and not report.damped


def test_the_controller_owns_its_limits_and_no_module_keeps_any():
    """The runner, the env and the sidecar each hold their `Limits` (a `Controller`'s): the damping remembers the
    controller's own rollouts, and `step` without limits applies none (no module-global state to fall back on)."""
    spec = load_spec("video", ["damping.min_dwell_s=600"])

    class Cluster:
        def __init__(self):
            self.spec, self.config, self.t, self.applied = spec, A, 0.0, []

        def observe(self):
            return _state(spec, self.t, self.config)

        def apply(self, config):
            self.applied.append(config)
            self.config = config

    class Flip:
        name = "flip"

        def decide(self, state):
            return B if state.config == A else A

    assert not any(type(v).__name__ == "WeakKeyDictionary" for v in vars(control).values())
    assert not hasattr(control, "limits_for")
    cluster, controller = Cluster(), Controller(Flip(), limits=Limits(spec))
    for t in range(5):
        cluster.t = 10.0 * t
        controller.step(cluster)
    # the first rollout goes through; then the dwell holds every flip back (the stage in force scales to the
    # capacity the flip would have had, a scaling, once)
    rollouts = [b for a, b in zip([A, *cluster.applied], cluster.applied, strict=False) if is_rollout(a, b)]
    assert len(rollouts) == 1 and len(cluster.applied) <= 2
    # without limits, nothing holds the flips back: every decision is applied
    bare = Cluster()
    for t in range(5):
        bare.t = 10.0 * t
        step(bare, Flip())
    assert len(bare.applied) == 5


def test_damping_cuts_rollouts_in_a_run():
    trace = Trace("w", load_trace("bursty").rps[:600].copy(), "bursty, first 600 s")
    off = run_episode(VIDEO, trace, make_policy("ipa", VIDEO, trace)).record
    spec = load_spec("video", RECOMMENDED)
    on = run_episode(spec, trace, make_policy("ipa", spec, trace)).record
    assert on["rollouts"] < off["rollouts"] and on["damped_decisions"] > 0
    # per stage, at most 3 rollouts in 600 s: 2 stages
    assert on["rollouts"] <= 2 * 3 + 1
    assert on["budget_breaches"] == 0


def test_is_rollout():
    assert is_rollout(A, B) and not is_rollout(A, A)
    assert not is_rollout(A, _cfg(("yolov5n", 1, 7, 1), ("resnet18", 1, 2, 1)))


def _mix(*pools):
    """A pooled stage from (variant, batch, replicas, cores, share) tuples."""
    return StageConfig.of_pools([VariantPool(*p) for p in pools])


CROP = StageConfig.one("yolov5n", 1, 2, 1)
MIX = _mix(("resnet50", 1, 2, 1, 0.4), ("resnet18", 1, 3, 1, 0.6))


def test_rollouts_with_pools_are_per_pool():
    # shares and replicas move: no rollout
    shifted = _mix(("resnet50", 1, 4, 1, 0.7), ("resnet18", 1, 1, 1, 0.3))
    assert rolled_out(MIX, shifted) == () and not is_rollout(
        PipelineConfig((CROP, MIX)), PipelineConfig((CROP, shifted))
    )
    # the same pools listed in another order: no rollout, the same key
    swapped = _mix(("resnet18", 1, 3, 1, 0.6), ("resnet50", 1, 2, 1, 0.4))
    assert rolled_out(MIX, swapped) == () and rollout_key(swapped) == rollout_key(MIX)
    # a pool leaves: not a rollout, though the key changes
    alone = StageConfig.one("resnet18", 1, 4, 1)
    assert rolled_out(MIX, alone) == () and rollout_key(MIX) != rollout_key(alone)
    # a pool appears: a rollout of that pool (from one pool to a mix, or a third pool)
    assert rolled_out(alone, MIX) == ("resnet50",)
    # a pool's batch or cores change: a rollout of that pool only
    assert rolled_out(MIX, _mix(("resnet50", 2, 2, 1, 0.4), ("resnet18", 1, 3, 1, 0.6))) == ("resnet50",)
    assert rolled_out(MIX, _mix(("resnet50", 1, 2, 1, 0.4), ("resnet18", 1, 3, 2, 0.6))) == ("resnet18",)
    # single pools: as before (the variant, batch or cores)
    assert rolled_out(StageConfig.one("a", 1, 1, 1), StageConfig.one("b", 1, 1, 1)) == ("b",)
    assert rollout_key(CROP) == (("yolov5n", 1, 1),)


def test_a_held_pooled_rollout_keeps_the_pools_and_scales_each_by_share():
    spec = load_spec("video", ["damping.min_dwell_s=600", "stages.1.max_pools=2"])
    d = Damper(spec)
    start = PipelineConfig((CROP, StageConfig.one("resnet18", 1, 2, 1)))
    now = PipelineConfig((CROP, MIX))
    got, damped, _ = d.apply(_state(spec, 0.0, start), now)  # a pool appears: the first rollout goes through
    assert got == now and not damped
    big = PipelineConfig((CROP, StageConfig.one("resnet34", 1, 9, 1)))  # a rollout with more capacity
    got, damped, _ = d.apply(_state(spec, 10.0, now), big)
    assert damped == ["classification"]
    held = got.stages[1]
    assert [(p.variant, p.share) for p in held.pools] == [(p.variant, p.share) for p in MIX.pools]
    stage, rho = spec.stages[1], spec.objective.rho_max
    wanted = stage_capacity_rps(stage, big.stages[1], rho)
    for p, before in zip(held.pools, MIX.pools, strict=True):
        assert p.replicas >= before.replicas
        assert pool_capacity_rps(stage, p, rho) >= p.share * wanted - 1e-9


def test_scale_down_stabilisation_per_pool():
    spec = load_spec("video", ["damping.scale_down_stabilization_s=300", "stages.1.max_pools=2"])
    d = Damper(spec)
    wide = PipelineConfig((CROP, _mix(("resnet50", 1, 5, 1, 0.4), ("resnet18", 1, 5, 1, 0.6))))
    narrow = PipelineConfig((CROP, _mix(("resnet50", 1, 2, 1, 0.5), ("resnet18", 1, 2, 1, 0.5))))
    assert d.apply(_state(spec, 0.0, narrow), wide)[0] == wide  # up: at once
    got, damped, _ = d.apply(_state(spec, 100.0, wide), narrow)
    assert damped == ["classification"]
    assert [p.replicas for p in got.stages[1].pools] == [5, 5]
    assert [p.share for p in got.stages[1].pools] == [0.5, 0.5]  # the shares move
    got, damped, _ = d.apply(_state(spec, 301.0, wide), narrow)  # the 5s left the window
    assert got == narrow and not damped


# ------------------------------------------------------------------------------------- sla_mode: hard guard


def test_hard_mode_guard_does_not_trade_capacity_for_cost_while_violating():
    hard = load_spec("video", ["objective.sla_mode=hard"])
    big = _cfg(("yolov5n", 1, 6, 1), ("resnet18", 1, 6, 1))
    small = _cfg(("yolov5n", 1, 3, 1), ("resnet18", 1, 3, 1))
    state = _state(hard, 100.0, big, violation=0.05, load=5.0)
    assert pipeline_capacity_rps(hard, small) >= 5.0  # the cheaper proposal is feasible at the load
    got, projection = SafetyLayer(hard).project(small, state)
    assert got == big and not projection.feasible_input
    priced, _ = SafetyLayer(VIDEO).project(small, _state(VIDEO, 100.0, big, violation=0.05, load=5.0))
    assert priced == small  # priced: a feasible proposal passes unchanged
    calm, _ = SafetyLayer(hard).project(small, _state(hard, 100.0, big, violation=0.0, load=5.0))
    assert calm == small  # hard, no violation: the scale-down passes


def test_a_cores_only_change_is_no_rollout_for_the_damping_with_in_place_resize():
    """With ``in_place_resize`` a cores change resizes pods in place: the dwell does not hold it."""
    more_cores = _cfg(("yolov5n", 1, 2, 4), ("resnet18", 1, 2, 1))
    for in_place, held in ((False, ["crop"]), (True, [])):
        spec = load_spec("video", ["damping.min_dwell_s=60", f"in_place_resize={str(in_place).lower()}"])
        d = Damper(spec)
        d.apply(_state(spec, 0.0, B), A)  # a rollout at t=0
        got, damped, _ = d.apply(_state(spec, 30.0, A), more_cores)
        assert damped == held and (got == more_cores) == in_place
