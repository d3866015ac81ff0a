"""Variant pools in the simulator (DESIGN.md section 4): a stage with ``max_pools > 1`` dispatches each request to
a pool by share (smooth weighted round-robin), one queue and replica set per pool, each reconfigured on its own."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.model import expected_accuracy
from rlscale.sim.cluster import Simulator
from rlscale.sim.runner import RECORD_KEYS, run_episode
from rlscale.spec import parse_spec
from rlscale.types import PipelineConfig, StageConfig, VariantPool
from rlscale.workload import Trace

FAST_S, SLOW_S = 0.05, 0.1  # service time of a batch of one, whatever the cores


def pooled_spec(tmp_path, max_pools=2, startup=(5.0, 7.0)):
    """One stage, a 'fast' (accuracy 0.5) and a 'slow' (0.8) variant with constant service times."""
    rows = ["variant,batch,cores,latency_s,source,kind"]
    for c in (1, 2):
        rows += [f"fast,1,{c},{FAST_S},test,measured", f"slow,1,{c},{SLOW_S},test,measured"]
    (tmp_path / "p.csv").write_text("\n".join(rows) + "\n")
    raw = {
        "name": "pools",
        "sla_s": 100.0,
        "drop_limit_s": 1000.0,
        "interval_s": 10,
        "batch_timeout_s": 0.0,
        "core_budget": 64,
        "objective": {"alpha": 1, "beta": 1, "gamma": 0, "accuracy_method": "product"},
        "stages": [
            {
                "name": "only",
                "task": "t",
                "profile": "p.csv",
                "batch_sizes": [1],
                "cores": [1, 2],
                "max_replicas": 30,
                "max_pools": max_pools,
                "variants": [
                    {"name": "fast", "accuracy": 0.5, "startup_s": startup[0]},
                    {"name": "slow", "accuracy": 0.8, "startup_s": startup[1]},
                ],
            }
        ],
    }
    return parse_spec(raw, tmp_path / "pools.yaml")


def constant(rps: float, seconds: int) -> Trace:
    return Trace("const", np.full(seconds, float(rps)))


def mix(slow_share: float, slow: tuple[int, int] = (2, 1), fast: tuple[int, int] = (1, 1)) -> PipelineConfig:
    """slow (replicas, cores) with ``slow_share`` of the load, fast with the rest."""
    return PipelineConfig(
        (
            StageConfig.of_pools(
                [VariantPool("slow", 1, *slow, share=slow_share), VariantPool("fast", 1, *fast, share=1 - slow_share)]
            ),
        )
    )


def single(variant: str, replicas: int, cores: int = 1) -> PipelineConfig:
    return PipelineConfig((StageConfig.one(variant, 1, replicas, cores),))


def run_all(sim: Simulator) -> Simulator:
    while not sim.done:
        sim.step()
    sim.drain()
    return sim


def test_each_interval_splits_the_served_requests_by_share_within_one(tmp_path):
    spec = pooled_spec(tmp_path)
    sim = run_all(Simulator(spec, constant(10, 60), mix(2 / 3)))
    intervals = [m for m in sim.history if m.arrivals]
    assert len(intervals) == 6
    for m in intervals:
        stage = m.stages[0]
        served = {p.variant: p.served for p in stage.pools}
        assert sum(served.values()) == stage.served == 100
        assert abs(served["slow"] - 2 / 3 * stage.served) <= 1, served
        assert abs(served["fast"] - 1 / 3 * stage.served) <= 1, served
        assert {p.variant: p.share for p in stage.pools} == {"slow": pytest.approx(2 / 3), "fast": pytest.approx(1 / 3)}
    assert sum(m.stages[0].pools[0].served for m in intervals) == 400  # 600 requests, 2/3 of them


def test_a_mix_measures_the_share_weighted_mean_accuracy(tmp_path):
    spec = pooled_spec(tmp_path)
    config = mix(0.7)
    sim = run_all(Simulator(spec, constant(10, 60), config))
    expected = 0.7 * 0.8 + 0.3 * 0.5
    assert expected_accuracy(spec, config) == pytest.approx(expected, rel=1e-12)
    # 600 requests, dispatched 7 to slow in every 10: 420 slow, 180 fast, every one completed
    assert (sim.acc_raw[0] == 0.8).sum() == 420 and (sim.acc_raw[0] == 0.5).sum() == 180
    completed = np.flatnonzero(~np.isnan(sim.finish_s[-1]))
    assert completed.size == 600
    assert sim.acc_raw[0][completed].mean() == pytest.approx(expected, rel=1e-12)
    for m in sim.history:  # an interval's completions straddle its ends by a batch or so
        if m.completed:
            assert m.accuracy == pytest.approx(expected, abs=0.005)


def test_a_pool_added_mid_run_serves_only_after_its_startup(tmp_path):
    spec = pooled_spec(tmp_path)  # slow starts up in 7 s
    sim = Simulator(spec, constant(10, 60), single("fast", 2), log_batches=True)
    sim.step()
    sim.step()
    sim.apply(mix(0.5, fast=(2, 1)))  # at t = 20: the slow pool appears with 2 replicas
    run_all(sim)
    slow_starts = [b0 for s, b0, _b1, _k, _seq, v in sim.batch_log if v == "slow"]
    assert min(slow_starts) >= 27.0 and min(slow_starts) < 27.2
    entry = sim.entry_s
    waiting = (entry >= 20) & (entry < 27)
    assert np.all(sim.acc_raw[0][waiting] == 0.5)  # the split waits for the new pool: fast serves alone until 27
    later = entry >= 27
    assert abs(np.count_nonzero(sim.acc_raw[0][later] == 0.8) - later.sum() / 2) <= 1
    third = sim.history[2]
    assert {p.variant: p.served for p in third.stages[0].pools} == {"slow": 15, "fast": 85}
    assert third.cost_cores == pytest.approx(2 + 2)  # the new pool costs from the decision, starting up included
    assert third.dropped == 0 and third.late == 0


def test_cost_sums_every_pool(tmp_path):
    spec = pooled_spec(tmp_path)
    config = mix(0.6, slow=(3, 2), fast=(2, 1))
    sim = run_all(Simulator(spec, constant(10, 40), config))
    assert config.total_cores == 3 * 2 + 2 * 1
    for m in sim.history:
        assert m.cost_cores == pytest.approx(8.0)
        assert [p.replicas_serving for p in m.stages[0].pools] == [3, 2] and m.stages[0].replicas_serving == 5


def test_a_removed_pool_drains_its_queue_on_its_own_replicas_then_stops_costing(tmp_path):
    spec = pooled_spec(tmp_path)
    # 70% of 20 rps = 14 rps on one slow replica that serves 10 rps: a queue builds up
    sim = Simulator(spec, constant(20, 60), mix(0.7, slow=(1, 1), fast=(1, 1)), log_batches=True)
    sim.step()
    sim.step()
    backlog = sim.history[-1].stages[0].pools[0].queue_len
    assert backlog > 50
    sim.apply(single("fast", 4))  # no new pool: the split switches at once, the slow pool drains
    run_all(sim)
    slow = sim.acc_raw[0] == 0.8
    assert np.all(sim.stage_in_s[0][slow] < 20.0)  # nothing sent to it after the switch
    slow_ends = [b1 for _s, _b0, b1, _k, _seq, v in sim.batch_log if v == "slow"]
    assert max(slow_ends) > 20.0 + 0.1 * (backlog - 1)  # it served its backlog after the switch
    assert np.count_nonzero(sim.dropped_at >= 0) == 0 and sim.in_flight() == 0
    drained_at = max(slow_ends)
    during = sim.history[2]
    assert {p.variant: p.share for p in during.stages[0].pools}["slow"] == 0.0
    after = [m for m in sim.history if m.start_s >= np.ceil(drained_at / 10) * 10 and m.end_s <= 60]
    assert after and all(m.cost_cores == pytest.approx(4.0) for m in after)
    assert all([p.variant for p in m.stages[0].pools] == ["fast"] for m in after)
    cost_during = sum(m.cost_cores for m in sim.history[2 : int(np.ceil(drained_at / 10))]) * 10
    assert cost_during == pytest.approx(
        4 * 10 * len(sim.history[2 : int(np.ceil(drained_at / 10))]) + (drained_at - 20)
    )


def test_a_single_pool_on_a_pooled_stage_runs_as_on_a_single_pool_stage(tmp_path):
    """Dispatching to one pool is the single-pool path: same per-request results, drops included."""
    results = []
    for max_pools in (1, 2):
        spec = pooled_spec(tmp_path, max_pools=max_pools)
        sim = run_all(Simulator(spec, constant(25, 60), single("slow", 2), seed=4, arrivals="poisson"))
        results.append(sim)
        for m in sim.history:
            (pool,) = m.stages[0].pools
            assert (pool.variant, pool.share, pool.served, pool.queue_len) == (
                "slow",
                1.0,
                m.stages[0].served,
                m.stages[0].queue_len,
            )
    a, b = results
    np.testing.assert_array_equal(a.finish_s, b.finish_s)
    np.testing.assert_array_equal(a.dropped_at, b.dropped_at)
    assert [m.cost_cores for m in a.history] == [m.cost_cores for m in b.history]


class Scripted:
    """A policy that runs a mix from ``from_s`` on, a single pool before."""

    name = "scripted"

    def __init__(self, from_s: float) -> None:
        self.from_s = from_s

    def decide(self, state):
        return mix(0.5) if state.time_s >= self.from_s else single("slow", 2)


def test_mixed_share_is_the_share_of_intervals_running_a_mix_and_only_where_pools_exist(tmp_path):
    spec = pooled_spec(tmp_path)
    result = run_episode(spec, constant(10, 100), Scripted(from_s=60), initial=single("slow", 2))
    mixed = [c.most_pools > 1 for c in result.configs]
    assert len(mixed) == 10 and sum(mixed) == 4  # decisions at 60, 70, 80, 90 run a mix in the next interval
    assert result.record["mixed_share"] == pytest.approx(0.4)
    assert list(result.record) == [*RECORD_KEYS[:22], "mixed_share", *RECORD_KEYS[22:]]
    plain = run_episode(pooled_spec(tmp_path, max_pools=1), constant(10, 30), Scripted(from_s=1e9))
    assert "mixed_share" not in plain.record and list(plain.record) == list(RECORD_KEYS)


def test_a_pool_added_back_after_its_drain_starts_up_again(tmp_path):
    spec = pooled_spec(tmp_path)
    config = mix(0.5, fast=(2, 1))
    sim = Simulator(spec, constant(10, 80), config, log_batches=True)
    sim.step()
    sim.apply(single("fast", 2))  # at 10: slow leaves the mix and drains (nothing queued: retires at once)
    sim.step()
    sim.step()
    assert [p.variant for p in sim.history[-1].stages[0].pools] == ["fast"]
    sim.apply(config)  # at 30: the same slow pool again, which pays its startup again
    run_all(sim)
    slow_starts = [b0 for _s, b0, _b1, _k, _seq, v in sim.batch_log if v == "slow"]
    assert not [t for t in slow_starts if 10.2 < t < 37.0]
    assert min(t for t in slow_starts if t > 30) < 37.2
    assert sim.history[3].cost_cores == pytest.approx(2 + 2)
