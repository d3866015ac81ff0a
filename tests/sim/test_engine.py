"""The simulator's semantics (DESIGN.md section 4), each shown against an independent expectation."""

from __future__ import annotations

import numpy as np
import pytest

from rlscale.sim.cluster import Simulator
from rlscale.sim.naive import simulate_naive
from rlscale.spec import load_spec, parse_spec
from rlscale.types import PipelineConfig, StageConfig
from rlscale.workload import Trace, load_trace


def one_stage_spec(
    tmp_path, service_s=0.1, batch_latency=None, *, timeout_s=0.0, drop_s=1000.0, sla_s=100.0, startup=(5.0, 7.0)
):
    """A single-stage pipeline with a constant-service 'fast' variant and a slower 'slow' one."""
    batch_latency = batch_latency or {1: service_s, 2: service_s * 1.5, 4: service_s * 2.5}
    rows = ["variant,batch,cores,latency_s,source,kind"]
    for b, lat in batch_latency.items():
        for c in (1, 2):
            rows.append(f"fast,{b},{c},{lat},test,measured")
            rows.append(f"slow,{b},{c},{lat * 2},test,measured")
    (tmp_path / "p.csv").write_text("\n".join(rows) + "\n")
    raw = {
        "name": "one",
        "sla_s": sla_s,
        "drop_limit_s": drop_s,
        "interval_s": 10,
        "batch_timeout_s": timeout_s,
        "core_budget": 64,
        "objective": {"alpha": 1, "beta": 1, "gamma": 0, "accuracy_method": "product"},
        "stages": [
            {
                "name": "only",
                "task": "t",
                "profile": "p.csv",
                "batch_sizes": sorted(batch_latency),
                "cores": [1, 2],
                "max_replicas": 30,
                "variants": [
                    {"name": "fast", "accuracy": 0.5, "startup_s": startup[0]},
                    {"name": "slow", "accuracy": 0.8, "startup_s": startup[1]},
                ],
            }
        ],
    }
    return parse_spec(raw, tmp_path / "one.yaml")


def run_all(sim: Simulator) -> Simulator:
    while not sim.done:
        sim.step()
    sim.drain()
    return sim


def constant(rps: float, seconds: int) -> Trace:
    return Trace("const", np.full(seconds, float(rps)))


# ------------------------------------------------------------------------------------------- conservation


@pytest.mark.parametrize("policy_config", ["small", "big"])
def test_conservation_per_stage_and_end_to_end(policy_config):
    """At every interval boundary: arrivals = completed + dropped + in flight, per stage and end to end."""
    spec = load_spec("video")
    small = PipelineConfig((StageConfig.one("yolov5m", 4, 2, 1), StageConfig.one("resnet50", 2, 2, 1)))  # overloaded
    big = PipelineConfig((StageConfig.one("yolov5s", 2, 6, 2), StageConfig.one("resnet34", 2, 4, 1)))
    sim = Simulator(spec, load_trace("bursty"), small if policy_config == "small" else big, seed=3)
    while not sim.done:
        sim.step()
        fed = sim.fed
        for s in range(len(spec.stages)):
            entered = int(np.count_nonzero(~np.isnan(sim.stage_in_s[s, :fed])))
            served = int(np.count_nonzero(~np.isnan(sim.finish_s[s, :fed])))
            dropped = int(np.count_nonzero(sim.dropped_at[:fed] == s))
            queued_or_busy = len(sim.stages[s].q_t)
            assert entered == served + dropped + queued_or_busy, (s, sim.time_s)
            if s + 1 < len(spec.stages):  # whatever stage s served entered stage s+1
                assert int(np.count_nonzero(~np.isnan(sim.stage_in_s[s + 1, :fed]))) == served
        completed = int(np.count_nonzero(~np.isnan(sim.finish_s[-1, :fed])))
        assert fed == completed + int(np.count_nonzero(sim.dropped_at[:fed] >= 0)) + sim.in_flight()
    sim.drain()
    assert sim.in_flight() == 0
    total = sum(m.arrivals for m in sim.history)
    assert total == sim.n_requests == 14437
    assert sum(m.completed for m in sim.history) + sum(m.dropped for m in sim.history) == total
    if policy_config == "small":
        assert sum(m.dropped for m in sim.history) > 0  # the overloaded case really exercises drops


# ---------------------------------------------------------------------------------------- queueing theory


@pytest.mark.parametrize("rho", [0.5, 0.8])
@pytest.mark.slow
def test_md1_waiting_time_and_littles_law(tmp_path, rho):
    """One replica, batch 1, deterministic service, Poisson arrivals: mean wait = Pollaczek-Khinchine (M/D/1)."""
    service = 0.1
    spec = one_stage_spec(tmp_path, service)
    lam = rho / service
    sim = run_all(
        Simulator(
            spec,
            constant(lam, 40_000),
            PipelineConfig((StageConfig.one("fast", 1, 1, 1),)),
            seed=11,
            arrivals="poisson",
        )
    )
    done = ~np.isnan(sim.finish_s[0])
    wait = sim.finish_s[0, done] - sim.stage_in_s[0, done] - service
    expected = rho * service / (2 * (1 - rho))
    assert wait.mean() == pytest.approx(expected, rel=0.05)
    # Little's law, L = lambda * W, with L measured independently: the queue length sampled at interval ends
    queue = np.array([m.stages[0].queue_len for m in sim.history[: 40_000 // 10]])
    busy = np.array([m.stages[0].utilisation for m in sim.history[: 40_000 // 10]])
    assert queue.mean() == pytest.approx(lam * wait.mean(), rel=0.10)
    assert busy.mean() == pytest.approx(rho, rel=0.03)  # utilisation = rho


# --------------------------------------------------------------------------------------------- batching


@pytest.mark.parametrize("batch,timeout", [(4, 0.3), (2, 0.2), (4, 0.0)])
def test_batching_timeout_and_size(tmp_path, batch, timeout):
    """With replicas to spare, nobody waits longer than the timeout, and batches never exceed b."""
    spec = one_stage_spec(tmp_path, 0.05, timeout_s=timeout)
    sim = run_all(
        Simulator(
            spec,
            Trace("low", np.random.default_rng(0).integers(0, 12, 600).astype(float)),
            PipelineConfig((StageConfig.one("fast", batch, 8, 1),)),
            seed=0,
            log_batches=True,
        )
    )
    lat = {k: spec.stages[0].latency.latency_s("fast", k, 1) for k in range(1, batch + 1)}
    done = ~np.isnan(sim.finish_s[0])
    sizes = sim.batch_size[0, done]
    start = sim.finish_s[0, done] - np.array([lat[k] for k in sizes])
    wait = start - sim.stage_in_s[0, done]
    assert wait.max() <= timeout + 1e-9
    assert sizes.max() <= batch
    assert max(entry[3] for entry in sim.batch_log) <= batch
    if timeout > 0:
        assert (sizes > 1).any()  # batching really happened
        assert wait.max() > 0


def test_full_batches_start_without_waiting(tmp_path):
    """At high load an idle replica takes b queued requests at once."""
    spec = one_stage_spec(tmp_path, 0.1, timeout_s=5.0)
    sim = run_all(Simulator(spec, constant(30, 60), PipelineConfig((StageConfig.one("fast", 4, 3, 1),)), seed=0))
    sizes = sim.batch_size[0, ~np.isnan(sim.finish_s[0])]
    assert np.mean(sizes == 4) > 0.95


# --------------------------------------------------------------------------------------- reconfiguration


def test_added_replicas_serve_only_after_startup(tmp_path):
    spec = one_stage_spec(tmp_path, 0.5, startup=(5.0, 7.0))
    sim = Simulator(
        spec, constant(8, 60), PipelineConfig((StageConfig.one("fast", 1, 1, 1),)), seed=0, log_batches=True
    )
    sim.step()  # [0, 10): one replica, overloaded (8 rps vs 2 rps capacity)
    sim.apply(PipelineConfig((StageConfig.one("fast", 1, 4, 1),)))
    run_all(sim)
    original = {seq for (_s, start, _f, _k, seq, _v) in sim.batch_log if start < 10}
    assert len(original) == 1
    added_starts = [start for (_s, start, _f, _k, seq, _v) in sim.batch_log if seq not in original]
    assert added_starts and min(added_starts) >= 10 + 5.0 - 1e-9
    assert min(added_starts) < 10 + 5.0 + 0.6  # and they do start serving then
    # cost: 1 core in [0,10); in [10,20) 4 cores allocated from the decision (starting replicas are paid for)
    assert sim.history[0].cost_cores == pytest.approx(1.0)
    assert sim.history[1].cost_cores == pytest.approx(4.0)


def test_variant_switch_is_make_before_break(tmp_path):
    """Old replicas serve until the new variant is ready; cost counts both while they overlap."""
    spec = one_stage_spec(tmp_path, 0.05, startup=(5.0, 7.0))
    sim = Simulator(
        spec, constant(5, 60), PipelineConfig((StageConfig.one("fast", 1, 2, 1),)), seed=0, log_batches=True
    )
    sim.step()
    sim.apply(PipelineConfig((StageConfig.one("slow", 1, 3, 2),)))
    m = sim.step()  # [10, 20): switch completes at 17
    run_all(sim)
    for _s, start, _f, _k, _seq, variant in sim.batch_log:
        assert variant == ("fast" if start < 17 - 1e-9 else "slow"), (start, variant)
    served = sim.finish_s[0]
    acc = sim.acc_raw[0]
    assert np.all(acc[served < 17 - 1e-9] == 0.5)
    assert np.all(acc[(served > 17 + 0.2)] == 0.8)
    # [10,17): old 2x1 + new 3x2 cores; [17,20): new only (old replicas idle at 17 release at once)
    assert m.cost_cores == pytest.approx((7 * (2 + 6) + 3 * 6) / 10, rel=1e-6)
    assert sim.history[2].cost_cores == pytest.approx(6.0)


def test_scale_down_cancels_pending_replicas_first(tmp_path):
    spec = one_stage_spec(tmp_path, 0.05)
    sim = Simulator(spec, constant(5, 60), PipelineConfig((StageConfig.one("fast", 1, 2, 1),)), seed=0)
    sim.step()
    sim.apply(PipelineConfig((StageConfig.one("fast", 1, 5, 1),)))
    sim.step()  # at 20 s the three added replicas are ready (startup 5 s)
    sim.apply(PipelineConfig((StageConfig.one("fast", 1, 3, 1),)))
    m = sim.step()
    assert m.stages[0].replicas_serving == 3
    assert m.cost_cores == pytest.approx(3.0, abs=0.05)


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_same_result_different_seed_different_run():
    spec = load_spec("video")
    cfg = PipelineConfig((StageConfig.one("yolov5s", 2, 6, 2), StageConfig.one("resnet34", 2, 4, 1)))

    def finish(seed):
        sim = run_all(Simulator(spec, load_trace("fluctuating"), cfg, seed=seed, arrivals="poisson"))
        return sim.entry_s, sim.finish_s

    a, b, c = finish(5), finish(5), finish(6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].size != c[0].size or not np.array_equal(a[0], c[0])


# ------------------------------------------------------------------------------ against the naive reference


@pytest.mark.parametrize(
    "crop,cls,trace,arrivals",
    [
        (("yolov5s", 4, 4, 2), ("resnet50", 2, 3, 1), "bursty", "even"),
        (("yolov5n", 1, 2, 1), ("resnet18", 8, 1, 2), "fluctuating", "poisson"),
        (("yolov5m", 8, 3, 4), ("resnet101", 4, 2, 2), "steady_high", "even"),  # overloaded: drops
    ],
)
def test_engine_matches_naive_reference(crop, cls, trace, arrivals):
    """Two independent implementations of the same semantics agree request by request."""
    spec = load_spec("video")
    cfg = PipelineConfig((StageConfig.one(*crop), StageConfig.one(*cls)))
    sim = run_all(Simulator(spec, load_trace(trace), cfg, seed=2, arrivals=arrivals))
    ref = simulate_naive(spec, cfg, sim.entry_s)
    np.testing.assert_array_equal(sim.dropped_at.astype(int), ref["dropped_at"])
    np.testing.assert_allclose(np.nan_to_num(sim.finish_s, nan=-1), np.nan_to_num(ref["finish_s"], nan=-1))
    assert sim.events == int(ref["events"][0])


def test_engine_matches_naive_reference_when_a_later_stage_drops_out_of_deadline_order():
    """A later stage's queue is in order of arrival there, not of drop deadline: a request in the middle of a batch
    may have expired while the first and the last have not; it is dropped, as the naive reference drops it."""
    spec = load_spec("video", ["batch_timeout_s=0"])
    cfg = PipelineConfig((StageConfig.one("yolov5m", 8, 3, 4), StageConfig.one("resnet101", 4, 2, 2)))
    sim = run_all(Simulator(spec, load_trace("steady_high"), cfg, seed=2, arrivals="poisson"))
    ref = simulate_naive(spec, cfg, sim.entry_s)
    assert (ref["dropped_at"] == 1).sum() > 1000
    np.testing.assert_array_equal(sim.dropped_at.astype(int), ref["dropped_at"])
    np.testing.assert_allclose(np.nan_to_num(sim.finish_s, nan=-1), np.nan_to_num(ref["finish_s"], nan=-1))


def test_rollouts_faster_than_startup_never_leave_a_stage_without_replicas(tmp_path):
    """A new rollout every interval, with a startup longer than the interval: the serving set keeps serving."""
    spec = one_stage_spec(tmp_path, 0.05, startup=(15.0, 15.0))
    sim = Simulator(spec, constant(5, 120), PipelineConfig((StageConfig.one("fast", 1, 2, 1),)), seed=0)
    configs = [StageConfig.one("slow", 1, 2, 1), StageConfig.one("fast", 2, 2, 1), StageConfig.one("slow", 2, 2, 2)]
    for i in range(10):
        sim.step()
        assert sim.last.stages[0].replicas_serving >= 1, i
        sim.apply(PipelineConfig((configs[i % 3],)))
    run_all(sim)
    assert int(np.count_nonzero(sim.dropped_at >= 0)) == 0
    assert sum(m.stages[0].served for m in sim.history) == sim.n_requests
