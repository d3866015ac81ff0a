"""``ipa-hold`` (issue 15): `ILPPolicy` with ``hold_delta`` keeps variant, batch and cores and resizes replicas, unless
the hold is infeasible or the re-plan gains more than δ x beta in objective."""

from __future__ import annotations

import numpy as np
import pytest

from ilp_baseline.policy import ILPPolicy, plan
from rlscale.errors import RlscaleError
from rlscale.model import objective_value, resize_replicas
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, PipelineState


class _Fixed:
    """A predictor that always predicts ``load_rps``."""

    name = "fixed"

    def __init__(self, load_rps: float) -> None:
        self.load_rps = load_rps

    def predict(self, state: PipelineState) -> float:
        return self.load_rps


def _state(config: PipelineConfig) -> PipelineState:
    return PipelineState(0.0, 10.0, np.full(10, 5.0), config, None)


def _shape(config: PipelineConfig) -> list[tuple[str, int, int]]:
    return [(s.variant, s.batch, s.cores) for s in config.stages]


def _a_costly_hold(spec):
    """(config in force, planned load): the optimum at another load, whose resize at the planned load is feasible
    and strictly worse than the optimum there (so holding and re-planning differ)."""
    loads = [2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0]
    for before in loads:
        config = plan(spec, before).config
        for load in loads:
            hold = resize_replicas(spec, config, load)
            best = plan(spec, load).config
            if hold is not None and objective_value(spec, best) > objective_value(spec, hold) + 1e-9:
                return config, load
    raise AssertionError("no load pair where holding costs objective")


@pytest.mark.parametrize("pipeline", ["video", "sum-qa"])
def test_holds_below_delta_and_replans_above_it_in_core_equivalents(pipeline):
    spec = load_spec(pipeline)
    config, load = _a_costly_hold(spec)
    hold = resize_replicas(spec, config, load)
    best = plan(spec, load).config
    gain = objective_value(spec, best) - objective_value(spec, hold)
    in_cores = gain / spec.objective.beta  # δ is in core-equivalents: the same rule whatever beta is
    held = ILPPolicy(spec, _Fixed(load), hold_delta=in_cores * 1.01).decide(_state(config))
    assert held == hold and _shape(held) == _shape(config)  # variant, batch and cores unchanged
    assert _shape(held) != _shape(best)
    replanned = ILPPolicy(spec, _Fixed(load), hold_delta=in_cores * 0.99).decide(_state(config))
    assert replanned == best
    assert ILPPolicy(spec, _Fixed(load), hold_delta=0.0).decide(_state(config)) == best  # δ = 0: any gain re-plans


def test_replans_when_the_hold_is_infeasible_whatever_delta():
    spec = load_spec("video")
    config = plan(spec, 2.0).config
    load = next(x for x in (60.0, 90.0, 120.0, 160.0, 200.0) if resize_replicas(spec, config, x) is None)
    assert plan(spec, load).config != config  # a re-plan exists where holding is infeasible
    policy = ILPPolicy(spec, _Fixed(load), hold_delta=1e6)
    assert policy.decide(_state(config)) == plan(spec, load).config
    assert policy.held_decisions == 0


def test_delta_zero_is_never_below_ipa_at_the_same_load():
    spec = load_spec("video")
    rng = np.random.default_rng(7)
    in_force = [plan(spec, x).config for x in (2.0, 8.0, 15.0, 25.0, 40.0)]
    held = 0
    for _ in range(40):
        load = float(rng.uniform(1.0, 45.0))
        state = _state(in_force[int(rng.integers(len(in_force)))])
        ipa = ILPPolicy(spec, _Fixed(load)).decide(state)
        hold = ILPPolicy(spec, _Fixed(load), hold_delta=0.0)
        chosen = hold.decide(state)
        assert objective_value(spec, chosen) >= objective_value(spec, ipa) - 1e-9
        held += hold.held_decisions
    assert held > 0  # some decisions did hold (at no loss), so the assertion above was not only ipa against itself


def test_the_replan_stays_cached_and_plain_ipa_is_unchanged():
    spec = load_spec("video")
    config, load = _a_costly_hold(spec)
    policy = ILPPolicy(spec, _Fixed(load), hold_delta=1e6)
    for _ in range(3):
        policy.decide(_state(config))
    assert policy.solved_decisions == 1 and policy.held_decisions == 3
    assert ILPPolicy(spec, _Fixed(load)).decide(_state(config)) == plan(spec, load).config


@pytest.mark.parametrize("delta", [-0.1, float("nan"), float("inf")])
def test_a_bad_delta_is_refused(delta):
    with pytest.raises(RlscaleError, match="hold_delta"):
        ILPPolicy(load_spec("video"), _Fixed(1.0), hold_delta=delta)


def test_rim_cannot_hold():
    with pytest.raises(RlscaleError, match="rim"):
        ILPPolicy(load_spec("video"), _Fixed(1.0), mode="rim", peak_rps=10.0, hold_delta=0.5)


def test_hold_keeps_a_pooled_configuration_and_resizes_its_pools_by_share():
    """InfAdapter's pipeline (pools allowed): the plan at 40 rps is a mix; holding it at 30 rps keeps both pools and
    their shares and resizes each for its share, and with a large δ the hold is what the policy returns."""
    spec = load_spec("infadapter")
    mix = plan(spec, 40.0).config
    assert mix.most_pools > 1
    policy = ILPPolicy(spec, _Fixed(30.0), hold_delta=1e9)
    got = policy.decide(_state(mix))
    assert got == resize_replicas(spec, mix, 30.0)
    assert [(p.variant, p.batch, p.cores, p.share) for p in got.stages[0].pools] == [
        (p.variant, p.batch, p.cores, p.share) for p in mix.stages[0].pools
    ]
    assert policy.held_decisions == 1
    # with δ = 0 the policy re-plans whenever the optimum is strictly better than the hold
    replan = ILPPolicy(spec, _Fixed(30.0), hold_delta=0.0).decide(_state(mix))
    best = plan(spec, 30.0).config
    if objective_value(spec, best) > objective_value(spec, got) + 1e-12:
        assert replan == best
    else:
        assert replan == got
