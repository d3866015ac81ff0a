"""Sponge's rule and its FA2 baseline on hand-made latencies, and the planning budget of per-request SLOs in the
planner and the guard."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from ilp_baseline.policy import ILPPolicy, plan
from ilp_baseline.safety import SafetyLayer
from ilp_baseline.sponge import SpongePolicy, drain_load, fa2_choice, sponge_choice
from rlscale.errors import RlscaleError
from rlscale.model import MIN_BUDGET_S, is_feasible, planning_budget_s, with_budget
from rlscale.predictors import ReactivePredictor
from rlscale.spec import load_spec, parse_spec
from rlscale.types import IntervalMetrics, PipelineConfig, PipelineState, StageConfig, StageMetrics

CORES = (1, 2, 4)
BATCHES = (1, 2, 4)


def latency_s(b: int, c: int) -> float:
    """0.08 s per request per core plus 0.05 s per batch: batching pays, cores divide the per-request part."""
    return 0.08 * b / c + 0.05


def _spec(tmp_path: Path, *, per_request: bool, max_replicas: int = 8, sla_s: float = 1.0):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rows = ["variant,batch,cores,latency_s,source,kind"]
    rows += [f"v,{b},{c},{latency_s(b, c)},test,measured" for b in BATCHES for c in CORES]
    (tmp_path / "p.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "bw.csv").write_text("t_s,bandwidth_bytes_per_s\n0,1000000\n1,1000000\n")
    raw = {
        "name": "one",
        "sla_s": sla_s,
        "drop_limit_s": sla_s,
        "interval_s": 1,
        "batch_timeout_s": 0,
        "core_budget": 64,
        "objective": {"alpha": 1, "beta": 1, "gamma": 0, "accuracy_method": "product"},
        "stages": [
            {
                "name": "s0",
                "task": "t",
                "profile": "p.csv",
                "batch_sizes": list(BATCHES),
                "cores": list(CORES),
                "max_replicas": max_replicas,
                "variants": [{"name": "v", "accuracy": 0.5, "startup_s": 1.0}],
            }
        ],
        "in_place_resize": True,
    }
    if per_request:
        raw["request_slo"] = {"payload_kb": 100, "bandwidth": "bw.csv"}
    return parse_spec(raw, tmp_path / "one.yaml")


def _last(p5: float, *, low: float = 0.05, p50: float = 0.99) -> IntervalMetrics:
    stage = StageMetrics(10, 0, 0.1, 0.2, 0, 0.5, 1, 1.0)
    return IntervalMetrics(0, 1, 8, 8, 0, 0, 0.0, 0.1, 0.2, 0.5, 1, 0, 0, (stage,), 8.0, low, p5, p50)


def _state(spec, load: float, last: IntervalMetrics | None, config: PipelineConfig | None = None) -> PipelineState:
    config = config or PipelineConfig((StageConfig.one("v", 1, 1, 1),))
    return PipelineState(10.0, spec.interval_s, np.full(10, load), config, last)


def test_sponge_takes_the_fewest_cores_then_the_smallest_batch(tmp_path):
    stage = _spec(tmp_path, per_request=False).stages[0]
    # 8 requests, no network: 1 core b1 drains in 8 x 0.13 = 1.04 s > 0.9; b2 in 4 x 0.21 = 0.84 s
    assert sponge_choice(stage, "v", 8, 1.0, 1.0) == (1, 2)
    # 0.2 s of network: 1 core fails at every batch (b4: 2 x 0.37 = 0.74 > 0.7); 2 cores b1: 0.72 > 0.7; b2: 0.52
    # (2 cores b4 at 0.42 and 4 cores b1 at 0.56 pass too: more batch, more cores)
    assert sponge_choice(stage, "v", 8, 1.0, 0.8) == (2, 2)
    assert sponge_choice(stage, "v", 0, 1.0, 0.8) == (1, 1)  # nothing to drain
    assert sponge_choice(stage, "v", 200, 1.0, 1.0) is None  # more than 4 cores at b4 drain in 0.9 s


def test_sponge_plans_with_the_budget_quantile_where_requests_have_slos(tmp_path):
    spec = _spec(tmp_path / "a", per_request=True)
    policy = SpongePolicy(spec)
    first = policy.decide(_state(spec, 8.0, None))  # before the first interval: the SLA
    assert first == PipelineConfig((StageConfig.one("v", 2, 1, 1),))
    cut = policy.decide(_state(spec, 8.0, _last(0.8)))  # p5 0.8 (min 0.05 and median 0.99 are not used)
    assert cut == PipelineConfig((StageConfig.one("v", 2, 1, 2),))
    assert policy.last_budget_s == pytest.approx(0.8) and policy.last_load == 8
    assert policy.decide(_state(spec, 8.0, _last(math.nan))) == first  # no arrivals last interval: the SLA
    plain = _spec(tmp_path / "b", per_request=False)
    assert SpongePolicy(plain).decide(_state(plain, 8.0, _last(0.8))) == first  # no request_slo: the SLA


def test_sponge_keeps_the_configuration_when_nothing_passes_or_the_load_is_no_data(tmp_path):
    spec = _spec(tmp_path, per_request=False)
    policy = SpongePolicy(spec)
    held = PipelineConfig((StageConfig.one("v", 4, 1, 4),))
    assert policy.decide(_state(spec, 200.0, None, held)) == held
    assert policy.infeasible_decisions == 1
    for bad in (math.nan, math.inf, -3.0):
        assert policy.decide(_state(spec, bad, None, held)) == held
    assert drain_load(7.2) == 8 and drain_load(0.0) == 0 and drain_load(math.nan) is None


def test_fa2_scales_replicas_at_one_core(tmp_path):
    stage = _spec(tmp_path, per_request=False).stages[0]
    # 8 rps: 1 replica carries floor(1/0.13) = 7 < 8 at b1; b2 and b4 fail the check; 2 replicas b1: 0.13 + 0.52
    assert fa2_choice(stage, "v", 8, 1.0, 1.0) == (2, 1)
    assert fa2_choice(stage, "v", 20, 1.0, 1.0) == (4, 1)  # 0.13 + ceil(20 / 4) x 0.13 = 0.78
    assert fa2_choice(stage, "v", 8, 1.0, 1.0, max_replicas=1) is None
    spec = _spec(tmp_path / "x", per_request=False)
    policy = SpongePolicy(spec, "fa2")
    low, high = (policy.decide(_state(spec, load, None)).stages[0] for load in (8.0, 20.0))
    assert (low.replicas, low.cores, high.replicas, high.cores) == (2, 1, 4, 1)


def test_fa2_within_max_replicas_one_keeps_the_configuration(tmp_path):
    spec = _spec(tmp_path, per_request=False, max_replicas=1)
    held = PipelineConfig((StageConfig.one("v", 1, 1, 1),))
    policy = SpongePolicy(spec, "fa2")
    assert policy.decide(_state(spec, 8.0, None, held)) == held
    assert policy.infeasible_decisions == 1


def test_the_sponge_policies_refuse_what_they_cannot_plan(tmp_path):
    with pytest.raises(RlscaleError, match="single-stage"):
        SpongePolicy(load_spec("video"))
    with pytest.raises(RlscaleError, match="unknown Sponge rule"):
        SpongePolicy(_spec(tmp_path, per_request=False), "vpa")


def test_planning_budget_is_the_quantile_only_with_request_slos(tmp_path):
    spec = _spec(tmp_path / "a", per_request=True)
    plain = _spec(tmp_path / "b", per_request=False)
    assert planning_budget_s(spec, _last(0.7)) == pytest.approx(0.7)
    assert planning_budget_s(plain, _last(0.7)) == plain.sla_s
    assert planning_budget_s(spec, None) == spec.sla_s
    assert planning_budget_s(spec, _last(math.nan)) == spec.sla_s
    assert planning_budget_s(spec, _last(-0.4)) == MIN_BUDGET_S  # budgets spent on the network
    assert planning_budget_s(spec, _last(3.0)) == spec.sla_s
    assert with_budget(spec, spec.sla_s) is spec
    assert with_budget(spec, 0.5).sla_s == 0.5 and spec.sla_s == 1.0


def test_the_planner_plans_for_the_budget_quantile(tmp_path):
    spec = _spec(tmp_path, per_request=True)
    load = 8.0
    full, cut = plan(spec, load).config, plan(with_budget(spec, 0.25), load).config
    assert full != cut  # the case separates the two budgets
    policy = ILPPolicy(spec, ReactivePredictor(window_s=1))
    assert policy.decide(_state(spec, load, None)) == full
    assert policy.decide(_state(spec, load, _last(0.25))) == cut
    assert policy.last_budget_s == pytest.approx(0.25)
    assert policy.decide(_state(spec, load, _last(math.nan))) == full


def test_the_guard_bounds_latency_by_the_budget_quantile(tmp_path):
    spec = _spec(tmp_path, per_request=True)
    load = 8.0
    proposed = plan(spec, load).config
    assert not is_feasible(with_budget(spec, 0.25), proposed, load)
    guard = SafetyLayer(spec, load="observed")
    same, report = guard.project(proposed, _state(spec, load, None))
    assert same == proposed and report.feasible_input
    moved, report = guard.project(proposed, _state(spec, load, _last(0.25)))
    assert moved != proposed and not report.feasible_input
    assert is_feasible(with_budget(spec, 0.25), moved, load)
    assert guard.spec.sla_s == pytest.approx(0.25) and guard.base_spec is spec
    nan_last = dataclasses.replace(_last(0.25), budget_p5_s=math.nan)
    assert guard.project(proposed, _state(spec, load, nan_last))[0] == proposed
