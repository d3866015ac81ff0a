"""The planned latency on a calibrated profile (`rlscale.model.calibrated_latency_s`): queueing, the serving overhead
and the delay, against the simulator running the same profile; a p99-only profile plans exactly as IPA did."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ilp_baseline.ilp import solve
from ilp_baseline.problem import planning_data
from ilp_baseline.safety import SafetyLayer
from rlscale.calibrate.run import planned_p99_s, window_planned_p99_s
from rlscale.model import (
    SCALE_OUT_GAIN,
    SCALE_OUT_OPTIONS,
    calibrated_latency_s,
    is_calibrated,
    option_table,
    plan_fixed_variants,
    replicas_for,
    resize_replicas,
    stage_latency_s,
    violations,
)
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, StageConfig
from rlscale.workload import Trace
from tests.sim.test_service_model import make_spec, one, run, write_profile

RUNS = {b: [float(x) for x in np.linspace(0.8, 1.2, 21) * (0.002 + 0.0006 * (b - 1))] for b in (1, 2, 4)}


def _spec(tmp_path, overhead=0.0005, delay=0.001, batches=(1, 2, 4), timeout_s=0.0):
    points = {b: {"p99": max(r), "mean": float(np.mean(r)), "overhead": overhead} for b, r in RUNS.items()}
    name = write_profile(tmp_path, points, RUNS)
    if delay:
        path = tmp_path / name
        lines = path.read_text().splitlines()
        path.write_text("\n".join([lines[0] + ",delay_s"] + [f"{line},{delay!r}" for line in lines[1:]]) + "\n")
    return make_spec(tmp_path, [name], batches=batches, timeout_s=timeout_s)


def test_a_p99_profile_plans_as_ipa():
    stage = load_spec("video").stages[0]
    v = stage.variants[0].name
    assert not is_calibrated(stage, v) and option_table(stage).calibrated_rows.size == 0
    for b, load in ((1, 5.0), (4, 20.0)):
        ipa = stage.latency.latency_s(v, b, 2) + (b - 1) / load
        assert stage_latency_s(stage, v, b, 2, load) == pytest.approx(ipa)


def test_planned_latency_grows_with_load_and_is_infinite_at_saturation(tmp_path):
    stage = _spec(tmp_path).stages[0]
    assert is_calibrated(stage, "v")
    # work a request at batch 1: 2 ms + 0.5 ms overhead: saturation at 400 rps
    planned = [calibrated_latency_s(stage, "v", 1, 1, load, replicas=1, timeout_s=0.0) for load in (10, 200, 350)]
    assert planned == sorted(planned) and planned[0] >= 0.0024 + 0.0005 + 0.001
    assert math.isinf(calibrated_latency_s(stage, "v", 1, 1, 450.0, replicas=1, timeout_s=0.0))
    # a batcher that may take up to 4 keeps up at 450 rps (the work a request at batch 2 is 1.3 + 0.5 ms)
    assert math.isfinite(calibrated_latency_s(stage, "v", 4, 1, 450.0, replicas=1, timeout_s=0.0))
    # two replicas share the load; IPA's full-batch wait where the batcher waits for full batches
    assert calibrated_latency_s(stage, "v", 1, 1, 450.0, replicas=2, timeout_s=0.0) < planned[-1]
    full = calibrated_latency_s(stage, "v", 4, 1, 40.0, replicas=1)
    assert full >= 3 / 40.0


@pytest.mark.parametrize("rps", [100.0, 250.0, 330.0])
def test_planned_p99_is_at_least_the_simulated_one_and_not_far_above(tmp_path, rps):
    """Poisson load on one replica at batch 1 (timeout 0): the plan errs high, within 2x of the simulator's p99."""
    spec = _spec(tmp_path)
    sim = run(spec, rps, 400, one(batch=1), seed=3)
    o = sim.outcomes
    lat = o.finish_s[0] - o.stage_in_s[0]
    simulated = float(np.nanpercentile(lat, 99))
    planned = stage_latency_s(spec.stages[0], "v", 1, 1, rps, replicas=1, timeout_s=0.0)
    assert simulated <= planned <= 2.0 * simulated, (simulated, planned)


def test_the_option_table_plans_calibrated_rows_with_their_replicas(tmp_path):
    stage = _spec(tmp_path).stages[0]
    table = option_table(stage)
    assert table.calibrated_rows.size == len(table.rows)
    n = np.ones(len(table.rows))
    latency = table.planned_latency_s(200.0, n)
    for i, (v, b, c) in enumerate(table.rows):
        assert latency[i] == pytest.approx(calibrated_latency_s(stage, v, b, c, 200.0, 1))


# ------------------------------------------------------------------ scaling out a calibrated stage


def _chain(tmp_path, sla_s: float, overhead=0.0005, delay=0.001):
    """Two calibrated stages (batch 1 only, up to 8 replicas of 1 core) under ``sla_s``."""
    points = {1: {"p99": max(RUNS[1]), "mean": float(np.mean(RUNS[1])), "overhead": overhead}}
    name = write_profile(tmp_path, points, {1: RUNS[1]})
    path = tmp_path / name
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0] + ",delay_s"] + [f"{line},{delay!r}" for line in lines[1:]]) + "\n")
    return make_spec(tmp_path, [name, name], sla_s=sla_s)


def test_a_calibrated_replica_carries_what_its_core_does(tmp_path):
    """Its throughput counts the mean service time and the overhead (the simulator's work a request), not the
    p99 alone; a p99 profile keeps IPA's ``b / l``."""
    stage = _spec(tmp_path).stages[0]
    assert stage.latency.throughput_rps("v", 1, 1) == pytest.approx(1.0 / (np.mean(RUNS[1]) + 0.0005))
    assert stage.latency.throughput_rps("v", 4, 1) == pytest.approx(4.0 / (np.mean(RUNS[4]) + 4 * 0.0005))
    video = load_spec("video").stages[0]
    v = video.variants[0].name
    assert video.latency.throughput_rps(v, 2, 1) == 2 / video.latency.latency_s(v, 2, 1)


def test_replica_options_trade_replicas_for_latency(tmp_path):
    """A calibrated row is offered at further counts while each lowers its planned latency by 1% or more;
    a p99 profile's rows once each."""
    stage = _spec(tmp_path, batches=(1,)).stages[0]
    table = option_table(stage)
    n_min = np.array([1.0])
    rows, n, latency = table.replica_options(350.0, n_min, stage.max_replicas)
    assert rows.tolist() == [0] * len(rows) and n.tolist() == list(range(1, len(rows) + 1))
    assert 2 <= len(rows) <= 1 + SCALE_OUT_OPTIONS
    assert all(b < a * (1 - SCALE_OUT_GAIN) for a, b in zip(latency[:-1], latency[1:], strict=True))
    assert latency[0] == pytest.approx(calibrated_latency_s(stage, "v", 1, 1, 350.0, 1))
    capped = table.replica_options(350.0, n_min, 2)
    assert capped[1].max() == 2
    video = option_table(load_spec("video").stages[0])
    ones = np.ones(len(video.rows))
    rows, n, latency = video.replica_options(5.0, ones, 8)
    assert rows.tolist() == list(range(len(video.rows))) and (n == 1).all()


def test_the_planner_scales_out_a_calibrated_stage_that_would_queue_past_the_sla(tmp_path):
    """At 600 rps two replicas a stage carry the load (work 2.5 ms a request), but their queueing breaks a 25 ms
    SLA end to end: IPA's ILP and the fixed-variant planner add replicas until the plan holds, and the simulator
    running the plan stays within the SLA at p99."""
    spec = _chain(tmp_path, sla_s=0.025)
    load = 600.0
    fewest = [int(replicas_for(load, s.latency.throughput_rps("v", 1, 1), 1)) for s in spec.stages]
    assert fewest == [2, 2]
    crowded = PipelineConfig(tuple(StageConfig.one("v", 1, 2, 1) for _ in spec.stages))
    assert any("SLA" in p for p in violations(spec, crowded, load))
    for config in (
        solve(planning_data(spec, load, "ipa"), "cbc").config,
        plan_fixed_variants(spec, ["v", "v"], load),
        resize_replicas(spec, crowded, load),
    ):
        assert config is not None and violations(spec, config, load) == []
        assert sum(sc.replicas for sc in config.stages) > 4
        sim = run(spec, load, 120, config, seed=5)
        e2e = sim.outcomes.finish_s[-1] - sim.outcomes.stage_in_s[0]
        assert float(np.nanpercentile(e2e, 99)) <= spec.sla_s


def test_the_safety_layer_projects_onto_more_replicas_of_a_calibrated_stage(tmp_path):
    spec = _chain(tmp_path, sla_s=0.025)
    crowded = PipelineConfig(tuple(StageConfig.one("v", 1, 2, 1) for _ in spec.stages))
    for solver in ("dp", "pulp"):
        result = SafetyLayer(spec, solver=solver).nearest(crowded, 600.0)
        assert result is not None and violations(spec, result, 600.0) == [], solver
        assert all(sc.replicas >= 2 for sc in result.stages)


def test_other_quantiles_of_the_same_model(tmp_path):
    stage = _spec(tmp_path, batches=(1,)).stages[0]
    at = [calibrated_latency_s(stage, "v", 1, 1, 250.0, 1, 0.0, quantile=q) for q in (0.5, 0.9, 0.99, 0.999)]
    assert at == sorted(at) and at[0] < at[-1]
    assert at[2] == calibrated_latency_s(stage, "v", 1, 1, 250.0, 1, 0.0)


def test_the_window_model_weighs_each_second_by_its_requests(tmp_path):
    """A flat window plans its steady state; a bursty one less than the steady state at its peak and more than at
    its mean; a window whose busiest seconds saturate one replica is infinite (the planner's word for infeasible)."""
    spec = _chain(tmp_path, sla_s=1.0)
    flat = window_planned_p99_s(spec, ["v", "v"], 1, Trace("flat", np.full(20, 250.0)))
    steady = planned_p99_s(spec, ["v", "v"], 1, 250.0)
    assert flat == pytest.approx(steady, rel=0.01)
    rps = np.array([60.0] * 30 + [330.0] * 2)
    bursty = window_planned_p99_s(spec, ["v", "v"], 1, Trace("bursty", rps))
    mean = float(np.sum(rps * rps) / np.sum(rps))
    assert planned_p99_s(spec, ["v", "v"], 1, mean) < bursty < planned_p99_s(spec, ["v", "v"], 1, 330.0)
    saturated = np.array([60.0] * 10 + [450.0] * 10)
    assert math.isinf(window_planned_p99_s(spec, ["v", "v"], 1, Trace("hot", saturated)))
