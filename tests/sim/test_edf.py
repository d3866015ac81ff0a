"""Earliest-deadline-first queues (``queue_discipline: edf``, DESIGN.md section 4)."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.sim.arrivals import RequestTable
from rlscale.sim.cluster import Simulator
from rlscale.sim.engine import Engine
from rlscale.sim.metrics import summarise_requests
from rlscale.types import PipelineConfig, StageConfig, VariantPool
from rlscale.workload import Trace

BURSTY = Trace("b", np.array([60.0, 2, 2, 45, 0, 1, 70, 3, 3, 3, 12, 0, 0, 9, 30, 1, 1, 1, 1, 1]))


def run(spec, trace, config, seed=0):
    sim = Simulator(spec, trace, config, seed=seed, arrivals="poisson", log_batches=True)
    while not sim.done:
        sim.step()
    sim.drain()
    return sim


def same_outcomes(a: Simulator, b: Simulator) -> None:
    for name in ("finish_s", "stage_in_s", "batch_size", "dropped_at", "drop_time_s", "acc_raw"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.batch_log == b.batch_log
    assert repr(a.history) == repr(b.history)  # NaN-safe


@pytest.mark.parametrize(
    "config",
    [
        PipelineConfig((StageConfig.one("fast", 2, 2, 1),)),  # overloaded in the bursts: queues, timeouts, drops
        PipelineConfig((StageConfig((VariantPool("fast", 1, 1, 1, 0.6), VariantPool("slow", 2, 1, 4, 0.4))),)),  # pools
    ],
)
def test_edf_equals_fifo_under_one_sla(sponge_like, config):
    """Every request has the SLA: deadlines are in arrival order, so EDF forms FIFO's batches exactly."""
    kw = {"drop_s": 1.5, "timeout_s": 0.05, "max_pools": 2}
    fifo = run(sponge_like(discipline="fifo", **kw), BURSTY, config)
    edf = run(sponge_like(discipline="edf", **kw), BURSTY, config)
    assert int((fifo.dropped_at >= 0).sum()) > 0  # the case exercises drops
    same_outcomes(fifo, edf)


def test_edf_equals_fifo_on_a_chain_that_keeps_the_order(sponge_like):
    """Two stages of one replica each: the second stage's queue is in entry order, so EDF is FIFO there too."""
    config = PipelineConfig((StageConfig.one("fast", 2, 1, 1), StageConfig.one("fast", 1, 1, 4)))
    kw = {"drop_s": 2.0, "timeout_s": 0.05, "stages": 2}
    same_outcomes(run(sponge_like(**kw), BURSTY, config), run(sponge_like(discipline="edf", **kw), BURSTY, config))


def _burst(spec, budgets: list[float]) -> tuple[Engine, RequestTable]:
    """Requests entering together at t = 0 with the given budgets, on one replica of batch 1 (0.1 s each)."""
    entry = np.zeros(len(budgets))
    budget = np.asarray(budgets, dtype=float)
    table = RequestTable(entry, entry + spec.drop_limit_s, np.array([len(budgets)]), entry + budget, budget)
    engine = Engine(spec, table, PipelineConfig((StageConfig.one("fast", 1, 1, 1),)))
    engine.run_interval(0.0, 10.0)
    return engine, table


def test_edf_serves_the_earliest_deadline_first(sponge_like, bandwidth_csv):
    spec = sponge_like(discipline="edf", request_slo={"payload_kb": 1, "bandwidth": bandwidth_csv([1e9])})
    engine, _ = _burst(spec, [0.9, 0.3, 0.6, 0.1, 0.3])
    finish = engine.outcomes.finish_s[0]
    assert np.argsort(finish, kind="stable").tolist() == [3, 1, 4, 2, 0]  # by deadline, ties by arrival (id)
    assert finish[3] == pytest.approx(0.1) and finish[0] == pytest.approx(0.5)


def test_edf_has_no_more_violations_than_fifo_where_order_matters(sponge_like, bandwidth_csv):
    """Five requests at once, served one by one in 0.1 s: FIFO serves the urgent ones last and misses them."""
    budgets = [0.55, 0.5, 0.45, 0.2, 0.1]
    slo = {"payload_kb": 1, "bandwidth": bandwidth_csv([1e9])}
    late = {}
    for discipline in ("fifo", "edf"):
        spec = sponge_like(discipline=discipline, request_slo=slo)
        engine, table = _burst(spec, budgets)
        done = np.flatnonzero(~np.isnan(engine.outcomes.finish_s[0]))
        late[discipline] = summarise_requests(spec, table, engine.outcomes, done, 0, len(budgets)).late
    assert late == {"fifo": 2, "edf": 0}
