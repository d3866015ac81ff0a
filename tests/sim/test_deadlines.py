"""Per-request SLOs in the simulator (DESIGN.md section 4): deadlines from the bandwidth, lateness against each
request's own deadline, spent budgets dropped on arrival, the budget distribution per interval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlscale.sim.arrivals import request_table
from rlscale.sim.cluster import Simulator
from rlscale.sim.metrics import run_summary
from rlscale.types import PipelineConfig, StageConfig
from rlscale.workload import Trace

ONE = PipelineConfig((StageConfig.one("fast", 1, 1, 1),))


def run(spec, trace, config=ONE):
    sim = Simulator(spec, trace, config)
    while not sim.done:
        sim.step()
    sim.drain()
    return sim


def test_deadline_is_arrival_plus_sla_minus_upload_at_the_arrival_bandwidth(sponge_like, bandwidth_csv):
    # 1 MB/s in second 0, 4 MB/s in second 1, repeated: a 100 KB payload takes 0.1024 s, then 0.0256 s
    spec = sponge_like(request_slo={"payload_kb": 100, "bandwidth": bandwidth_csv([1e6, 4e6])}, sla_s=1.0)
    table = request_table(spec, Trace("t", np.array([2.0, 2.0, 2.0])), np.random.default_rng(0))
    assert table.entry_s.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    upload = np.array([0.1024, 0.1024, 0.0256, 0.0256, 0.1024, 0.1024])  # second 2 wraps to row 0
    assert table.budget_s == pytest.approx(1.0 - upload, abs=1e-12)
    assert table.slo_deadline_s[3] == pytest.approx(1.5 + 1.0 - 100 * 1024 / 4e6, abs=1e-12)
    assert table.drop_deadline_s.tolist() == (table.entry_s + spec.drop_limit_s).tolist()


def test_without_request_slo_the_table_has_no_budgets(sponge_like):
    table = request_table(sponge_like(), Trace("t", np.array([2.0])), np.random.default_rng(0))
    assert table.budget_s is None and table.slo_deadline_s is None


def test_late_is_against_each_requests_own_deadline(sponge_like, bandwidth_csv):
    # one request per second, served in 0.1 s; the budget is 0.15 s in even seconds and 0.05 s in odd ones
    slo = {"payload_kb": 1, "bandwidth": bandwidth_csv([1024 / 0.85, 1024 / 0.95])}
    spec = sponge_like(request_slo=slo, sla_s=1.0)
    sim = run(spec, Trace("t", np.ones(10)))
    assert sim.budget_s[:2] == pytest.approx([0.15, 0.05])
    summary = run_summary(spec, sim.requests, sim.outcomes, sim.history, [ONE])
    assert summary["completed"] == 10 and summary["late"] == 5  # the odd seconds' requests
    assert summary["sla_violation_rate"] == pytest.approx(0.5)
    assert sim.history[0].late == 5
    # the same run without per-request SLOs: 0.1 s is well inside the 1 s SLA
    plain = run(sponge_like(sla_s=1.0), Trace("t", np.ones(10)))
    assert plain.history[0].late == 0


def test_a_spent_budget_is_dropped_on_arrival(sponge_like, bandwidth_csv):
    # second 0: the upload takes 2 s of a 1 s SLA; second 1: 0.1 s
    spec = sponge_like(request_slo={"payload_kb": 1, "bandwidth": bandwidth_csv([512, 10240])}, sla_s=1.0)
    sim = run(spec, Trace("t", np.array([2.0, 2.0])))
    assert sim.dropped_at.tolist() == [0, 0, -1, -1]
    assert sim.drop_time_s[:2].tolist() == sim.entry_s[:2].tolist()
    m = sim.history[0]
    assert (m.arrivals, m.dropped, m.completed, m.late) == (4, 2, 2, 0)
    assert m.stages[0].dropped == 2
    assert m.sla_violation_rate == pytest.approx(0.5)


def test_interval_reports_the_remaining_budget_distribution(sponge_like, bandwidth_csv):
    values = [1024 / (1 - k / 20) for k in range(10)]  # budgets 1.0, 0.95, ..., 0.55 s for a 1 KB payload
    spec = sponge_like(request_slo={"payload_kb": 1, "bandwidth": bandwidth_csv(values)}, sla_s=2.0)
    sim = run(spec, Trace("t", np.ones(10)))
    m = sim.history[0]
    budgets = 2.0 - (1 - np.arange(10) / 20)
    assert m.budget_min_s == pytest.approx(budgets.min())
    assert m.budget_p5_s == pytest.approx(np.percentile(budgets, 5))
    assert m.budget_p50_s == pytest.approx(np.percentile(budgets, 50))
    plain = run(sponge_like(), Trace("t", np.ones(10))).history[0]
    assert math.isnan(plain.budget_min_s) and math.isnan(plain.budget_p5_s) and math.isnan(plain.budget_p50_s)
