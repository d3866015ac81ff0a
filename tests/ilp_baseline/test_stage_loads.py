"""Per-stage planning loads and the hold move (`rlscale.model.resize_replicas`)."""

from __future__ import annotations

import pytest

from ilp_baseline.dp import solve_dp
from ilp_baseline.ilp import solve
from ilp_baseline.problem import planning_data
from rlscale.errors import RlscaleError
from rlscale.model import is_feasible, pipeline_capacity_rps, resize_replicas, stage_capacity_rps
from rlscale.spec import load_spec


@pytest.fixture(scope="module")
def spec():
    return load_spec("video")


def test_uniform_stage_loads_plan_as_one_load(spec):
    one = solve_dp(planning_data(spec, 20.0))
    same = solve_dp(planning_data(spec, [20.0, 20.0]))
    assert same.config == one.config


def test_each_stage_carries_its_own_load(spec):
    plan = solve_dp(planning_data(spec, [10.0, 40.0]))
    rho = spec.objective.rho_max
    first, second = (stage_capacity_rps(st, sc, rho) for st, sc in zip(spec.stages, plan.config.stages, strict=True))
    assert first >= 10.0 - 1e-9 and second >= 40.0 - 1e-9
    # the second stage needs more than a plan at the lower load gives it
    low = solve_dp(planning_data(spec, 10.0)).config
    assert plan.config.stages[1].replicas * plan.config.stages[1].cores >= low.stages[1].replicas * low.stages[1].cores


def test_ilp_agrees_with_dp_on_stage_loads(spec):
    data = planning_data(spec, [12.0, 30.0])
    assert solve(data, "cbc").objective == pytest.approx(solve_dp(data).objective, abs=1e-6)


@pytest.mark.parametrize("bad", [[10.0], [10.0, float("nan")], [10.0, -1.0]])
def test_bad_stage_loads_are_refused(spec, bad):
    with pytest.raises(RlscaleError):
        planning_data(spec, bad)


def test_resize_keeps_variant_batch_cores_and_carries_the_load(spec):
    config = solve_dp(planning_data(spec, 10.0)).config
    resized = resize_replicas(spec, config, 25.0)
    assert resized is not None
    for old, new in zip(config.stages, resized.stages, strict=True):
        assert (old.variant, old.batch, old.cores) == (new.variant, new.batch, new.cores)
    assert pipeline_capacity_rps(spec, resized) >= 25.0 - 1e-9
    assert is_feasible(spec, resized, 25.0)
    # fewest replicas: one fewer on any stage would not carry the load
    for s, sc in enumerate(resized.stages):
        if sc.replicas > spec.stages[s].min_replicas:
            fewer = list(resized.stages)
            fewer[s] = sc.with_(replicas=sc.replicas - 1)
            assert stage_capacity_rps(spec.stages[s], fewer[s], spec.objective.rho_max) < 25.0


def test_resize_answers_none_when_the_hold_cannot_carry_the_load(spec):
    config = solve_dp(planning_data(spec, 5.0)).config
    assert resize_replicas(spec, config, 1e6) is None
