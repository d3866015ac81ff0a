"""Interval and run summaries come from the same per-request outcomes (rlscale.sim.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agents.static import StaticPolicy
from rlscale.sim.metrics import p50_p99
from rlscale.sim.runner import run_episode
from rlscale.spec import load_spec
from rlscale.types import PipelineConfig, StageConfig
from rlscale.workload import Trace, load_trace


@pytest.mark.parametrize("n", [1, 2, 3, 7, 100, 101, 1234])
def test_p50_p99_is_numpys_percentile_to_the_bit(n):
    values = np.random.default_rng(n).exponential(0.3, n)
    assert p50_p99(values) == tuple(float(x) for x in np.percentile(values, [50, 99]))


def test_p50_p99_of_nothing_is_nan():
    assert all(math.isnan(x) for x in p50_p99(np.empty(0)))


class _Fixed:
    name = "fixed"

    def __init__(self, config):
        self.config = config

    def decide(self, state):
        return self.config


@pytest.mark.parametrize("trace", ["bursty", "steady_high"])
def test_run_summary_adds_up_the_intervals(trace):
    """Counts of the run equal the sums over its intervals; accuracy is the completion-weighted mean."""
    spec = load_spec("video")
    tr = load_trace(trace)
    policy = StaticPolicy(spec, "max", tr.peak_rps) if trace == "bursty" else None
    config = (
        policy.config
        if policy
        else PipelineConfig((StageConfig.one("yolov5m", 8, 3, 4), StageConfig.one("resnet101", 4, 2, 2)))
    )
    result = run_episode(spec, tr, _Fixed(config), initial=config)
    rec, iv = result.record, result.intervals
    assert rec["completed"] == sum(m.completed for m in iv)
    assert rec["dropped"] == sum(m.dropped for m in iv)
    assert rec["late"] == sum(m.late for m in iv)
    assert rec["requests"] == sum(m.arrivals for m in iv)
    weighted = sum(m.accuracy * m.completed for m in iv if m.completed) / rec["completed"]
    assert rec["accuracy"] == pytest.approx(weighted, rel=1e-12)
    n_trace = rec["intervals"]
    assert rec["cost_cores"] == pytest.approx(np.mean([m.cost_cores for m in iv[:n_trace]]))
    if trace == "steady_high":
        assert rec["dropped"] > 0  # the overloaded case exercises drops


def test_nothing_completed_scores_the_expected_accuracy_in_intervals_and_run():
    """One rule for both summaries: with no completed request the accuracy term is the configuration's."""
    spec = load_spec("video")
    config = PipelineConfig(
        (StageConfig.one("yolov5s", 1, 1, 1), StageConfig.one("resnet18", 1, 0, 1))
    )  # no classifier
    result = run_episode(spec, Trace("t", np.full(30, 2.0)), _Fixed(config), initial=config)
    rec = result.record
    assert rec["completed"] == 0 and rec["requests"] > 0  # stuck at the classifier: nobody takes them
    assert math.isnan(rec["accuracy"])
    expected = spec.accuracy(config.variants)
    o = spec.objective
    cost = rec["cost_cores"]
    assert rec["objective"] == pytest.approx(o.alpha * expected - o.beta * cost - o.gamma * config.total_batch)
    m = result.intervals[0]
    assert m.completed == 0 and math.isnan(m.accuracy)
    assert m.objective == pytest.approx(o.alpha * expected - o.beta * m.cost_cores - o.gamma * config.total_batch)


def test_the_simulator_is_exported_by_the_package():
    from rlscale.sim import Simulator as A
    from rlscale.sim.cluster import Simulator as B

    assert A is B
