"""`ILPPolicy`'s state stays bounded: the plan cache is an LRU and ``plans`` keeps only the most recent solves."""

from __future__ import annotations

import numpy as np
import pytest

import ilp_baseline.policy as ilp_policy
from ilp_baseline.policy import CACHE_ENTRIES, PLANS_KEPT, ILPPolicy
from rlscale.model import plan_fixed_variants
from rlscale.spec import load_spec
from rlscale.types import PipelineState


class _Loads:
    """A predictor that returns the loads it is given, one per call (an LSTM's float predictions)."""

    name = "loads"

    def __init__(self, loads_rps) -> None:
        self._loads = iter(loads_rps)

    def predict(self, state: PipelineState) -> float:
        return float(next(self._loads))


class _Plan:
    """What `plan` returns, without solving."""

    def __init__(self, config) -> None:
        self.config = config
        self.objective = 0.0


def _state(spec, time_s: float = 0.0) -> PipelineState:
    config = plan_fixed_variants(spec, [st.variant_names[0] for st in spec.stages], 5.0)
    return PipelineState(time_s, 10.0, np.full(10, 5.0), config, None)


def test_cache_and_plans_hold_at_most_their_bounds_after_more_distinct_loads():
    spec = load_spec("video")
    loads = [5.0 + 0.37 * i for i in range(25)]  # 25 distinct planned loads
    policy = ILPPolicy(spec, _Loads(loads), cache_entries=8, plans_kept=5)
    state = _state(spec)
    for _ in loads:
        policy.decide(state)
    assert len(policy._cache) == 8
    assert list(policy._cache) == [(round(x, 6), spec.sla_s) for x in loads[-8:]]  # the most recent ones
    assert len(policy.plans) == 5
    assert [load for load, _obj in policy.plans] == pytest.approx(loads[-5:])
    assert policy.solved_decisions == 25


def test_a_cache_hit_is_most_recently_used_and_is_not_solved_again(monkeypatch):
    spec = load_spec("video")
    solved = []
    real_plan = ilp_policy.plan

    def counting_plan(spec, load_rps, *args, **kwargs):
        solved.append(load_rps)
        return real_plan(spec, load_rps, *args, **kwargs)

    monkeypatch.setattr(ilp_policy, "plan", counting_plan)
    # a, b, c fill a cache of 3; a is hit (now the most recent); d evicts b, the least recently used
    policy = ILPPolicy(spec, _Loads([10.0, 20.0, 30.0, 10.0, 40.0, 10.0, 20.0]), cache_entries=3)
    state = _state(spec)
    configs = [policy.decide(state) for _ in range(7)]
    assert solved == [10.0, 20.0, 30.0, 40.0, 20.0]
    assert configs[3] == configs[0] == configs[5]
    assert [load for load, _budget in policy._cache] == [40.0, 10.0, 20.0]
    assert policy.solved_decisions == 5


def test_default_bounds_hold_on_a_long_run_of_unique_loads(monkeypatch):
    """A live sidecar with the LSTM: every planned load is new. The defaults bound memory all the same."""
    spec = load_spec("video")
    state = _state(spec)
    monkeypatch.setattr(ilp_policy, "plan", lambda *a, **k: _Plan(state.config))  # the solver is not under test
    n = CACHE_ENTRIES + PLANS_KEPT + 100
    policy = ILPPolicy(spec, _Loads(5.0 + 1e-3 * i for i in range(n)))
    for _ in range(n):
        policy.decide(state)
    assert len(policy._cache) == CACHE_ENTRIES
    assert len(policy.plans) == PLANS_KEPT
    assert policy.solved_decisions == n


@pytest.mark.parametrize("kwargs", [{"cache_entries": 0}, {"plans_kept": -1}])
def test_bounds_must_be_sane(kwargs):
    with pytest.raises(ilp_policy.RlscaleError):
        ILPPolicy(load_spec("video"), _Loads([]), **kwargs)
