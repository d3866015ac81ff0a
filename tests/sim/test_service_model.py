"""The service model (``service_model``: deterministic or empirical service times) and the serving overhead
(`rlscale.sim.engine`, DESIGN.md section 4), each against an independent expectation: the profile's run times,
queueing theory (M/G/1 by Pollaczek-Khinchine, M/M/1's sojourn tail, the overhead's delay busy period), a naive
one-replica implementation of the overhead model and, with no overhead, today's loop."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import pytest

from rlscale.errors import RlscaleError, SpecError
from rlscale.sim.cluster import Simulator
from rlscale.sim.engine import Engine, empirical_service
from rlscale.sim.naive import simulate_naive
from rlscale.spec import load_spec, parse_spec
from rlscale.types import PipelineConfig, StageConfig
from rlscale.workload import Trace, load_trace

HEADER = "variant,batch,cores,latency_s,source,kind,p50_s,mean_s,p90_s,overhead_s"


def _num(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def write_profile(
    folder: Path,
    points: dict[int, dict],
    runs: dict[int, list[float]] | None = None,
    name: str = "p",
    variant: str = "v",
) -> str:
    """A profile of one variant on 1 core: ``points[b] = {"p99": .., "mean": .., "overhead": ..}``, and its runs."""
    rows = [HEADER]
    for b, p in sorted(points.items()):
        rows.append(f"{variant},{b},1,{p['p99']!r},test,measured,,{_num(p.get('mean'))},,{_num(p.get('overhead'))}")
    (folder / f"{name}.csv").write_text("\n".join(rows) + "\n")
    runs_file = folder / f"{name}.runs.csv"
    if runs:
        lines = ["variant,batch,cores,run_s"] + [f"{variant},{b},1,{x!r}" for b, xs in runs.items() for x in xs]
        runs_file.write_text("\n".join(lines) + "\n")
    elif runs_file.exists():
        runs_file.unlink()
    return f"{name}.csv"


def make_spec(folder: Path, profiles: list[str], *, batches=(1,), timeout_s=0.0, drop_s=3600.0, **top):
    """A chain of one stage per profile (one variant ``v``, 1 core, up to 8 replicas)."""
    raw = {
        "name": "svc",
        "sla_s": min(100.0, drop_s),
        "drop_limit_s": drop_s,
        "interval_s": 10,
        "batch_timeout_s": timeout_s,
        "core_budget": 64,
        "objective": {"alpha": 1, "beta": 1, "gamma": 0, "accuracy_method": "product"},
        "stages": [
            {
                "name": f"s{i}",
                "task": "t",
                "profile": p,
                "batch_sizes": list(batches),
                "cores": [1],
                "max_replicas": 8,
                "variants": [{"name": "v", "accuracy": 0.5, "startup_s": 1.0}],
            }
            for i, p in enumerate(profiles)
        ],
        **top,
    }
    return parse_spec(raw, folder / "svc.yaml")


def run(spec, rps, seconds: int, config: PipelineConfig, *, seed=0, arrivals="poisson", log=False) -> Simulator:
    trace = Trace("t", np.full(seconds, float(rps))) if np.isscalar(rps) else Trace("t", np.asarray(rps, float))
    sim = Simulator(spec, trace, config, seed=seed, arrivals=arrivals, log_batches=log)
    while not sim.done:
        sim.step()
    sim.drain()
    return sim


def one(batch=1, replicas=1, stages=1) -> PipelineConfig:
    return PipelineConfig(tuple(StageConfig.one("v", batch, replicas, 1) for _ in range(stages)))


# ------------------------------------------------------------------------------------------------- the setting


def test_service_model_is_a_pipeline_setting(tmp_path):
    """``auto`` by default (left out of the document); ``--set service_model=...`` sets it; a bad value is refused."""
    video = load_spec("video")
    assert video.service_model == "auto" and "service_model" not in video.to_document()
    assert not any(empirical_service(video, st) for st in video.stages)  # bundled profiles: p99 only
    forced = load_spec("video", ["service_model=empirical"])
    assert forced.service_model == "empirical" and forced.to_document()["service_model"] == "empirical"
    assert all(empirical_service(forced, st) for st in forced.stages)
    with pytest.raises(SpecError, match="service_model: must be one of auto, deterministic, empirical, got 'x'"):
        load_spec("video", ["service_model=x"])


def test_auto_is_empirical_exactly_where_the_profile_has_runs(tmp_path):
    with_runs = write_profile(tmp_path, {1: {"p99": 0.3, "mean": 0.1}}, {1: [0.05, 0.1, 0.15]}, name="a")
    without = write_profile(tmp_path, {1: {"p99": 0.3, "mean": 0.1}}, name="b")
    auto = make_spec(tmp_path, [with_runs, without])
    assert [empirical_service(auto, st) for st in auto.stages] == [True, False]
    det = make_spec(tmp_path, [with_runs, without], service_model="deterministic")
    assert [empirical_service(det, st) for st in det.stages] == [False, False]


def test_bundled_pipelines_simulate_exactly_as_before_under_auto_and_deterministic():
    """Every bundled profile is p99-only: ``auto`` and ``deterministic`` run the same engine, batch for batch, each
    batch taking the profile's p99."""
    crop, cls = ("yolov5s", 4, 4, 2), ("resnet50", 2, 3, 1)
    cfg = PipelineConfig((StageConfig.one(*crop), StageConfig.one(*cls)))
    rps = load_trace("bursty").rps[:300]
    auto = run(load_spec("video"), rps, 0, cfg, seed=1, arrivals="even", log=True)
    det = run(load_spec("video", ["service_model=deterministic"]), rps, 0, cfg, seed=1, arrivals="even", log=True)
    assert auto.batch_log == det.batch_log and len(auto.batch_log) > 1000
    for s, start, finish, k, _seq, variant in auto.batch_log:
        cores = (crop, cls)[s][3]
        assert finish - start == pytest.approx(auto.spec.stages[s].latency.latency_s(variant, k, cores), abs=1e-12)


# ---------------------------------------------------------------------------------------------- empirical


def test_empirical_draws_the_profiled_runs_uniformly(tmp_path):
    """A batch of k takes mean_s(k) x a factor drawn among the runs of (v, k, 1) over their mean: with mean_s the
    runs' mean, exactly one of the runs, each about as often as the others."""
    runs = {1: [0.02, 0.05, 0.08, 0.25], 2: [0.04, 0.06]}
    points = {b: {"p99": max(r), "mean": float(np.mean(r))} for b, r in runs.items()}
    spec = make_spec(tmp_path, [write_profile(tmp_path, points, runs)], batches=(1, 2), timeout_s=0.01)
    sim = run(spec, 8, 3000, one(batch=2), seed=4, log=True)
    for k, values in runs.items():
        times = np.array([f - s for _st, s, f, size, _q, _v in sim.batch_log if size == k])
        assert times.size > 1000
        nearest = np.abs(times[:, None] - np.array(values)[None, :])
        assert nearest.min(axis=1).max() < 1e-9  # every service time is one of the runs
        counts = np.bincount(nearest.argmin(axis=1), minlength=len(values)) / times.size
        np.testing.assert_allclose(counts, 1 / len(values), atol=0.03)


def test_empirical_scales_the_mean_by_the_nearest_points_factors(tmp_path):
    """Without runs at batch 2, its batches take mean_s(2) times the factors of batch 1's runs (the nearest point)."""
    points = {1: {"p99": 0.3, "mean": 0.1}, 2: {"p99": 0.4, "mean": 0.16}}
    spec = make_spec(tmp_path, [write_profile(tmp_path, points, {1: [0.05, 0.15]})], batches=(1, 2))
    sim = run(spec, 20, 200, one(batch=2), seed=0, log=True)
    times = {round(f - s, 9) for _st, s, f, k, _q, _v in sim.batch_log if k == 2}
    assert times == {0.08, 0.24}  # 0.16 x {0.5, 1.5}


def test_empirical_without_a_mean_column_takes_the_runs_mean(tmp_path):
    """A point that keeps its runs but has no ``mean_s`` scales by its runs' mean, not by its p99: the runs."""
    spec = make_spec(tmp_path, [write_profile(tmp_path, {1: {"p99": 0.9}}, {1: [0.1, 0.3]})])
    sim = run(spec, 1, 300, one(), seed=0, log=True)
    assert {round(f - s, 12) for _st, s, f, _k, _q, _v in sim.batch_log} == {0.1, 0.3}


def test_arrivals_are_the_same_whatever_the_service_model(tmp_path):
    """The service times draw from a stream of their own: arrivals are identical, service times seeded."""
    profile = write_profile(tmp_path, {1: {"p99": 0.3, "mean": 0.1}}, {1: [0.05, 0.1, 0.15]})
    emp = make_spec(tmp_path, [profile])
    det = make_spec(tmp_path, [profile], service_model="deterministic")
    a, b = run(emp, 5, 300, one(), seed=7), run(det, 5, 300, one(), seed=7)
    np.testing.assert_array_equal(a.entry_s, b.entry_s)
    assert not np.allclose(a.finish_s, b.finish_s, equal_nan=True)
    again = run(emp, 5, 300, one(), seed=7)
    np.testing.assert_array_equal(again.finish_s, a.finish_s)  # deterministic for a seed
    other = run(emp, 5, 300, one(), seed=8)
    assert other.entry_s.size != a.entry_s.size or not np.array_equal(other.entry_s, a.entry_s)


def test_empirical_without_runs_is_the_mean_as_a_fixed_time(tmp_path):
    """``empirical`` on a profile without run times draws nothing: its mean (its p99 where it has no mean)."""
    spec = make_spec(tmp_path, [write_profile(tmp_path, {1: {"p99": 0.3, "mean": 0.1}})], service_model="empirical")
    sim = run(spec, 2, 100, one(), log=True)
    assert {round(f - s, 12) for _st, s, f, _k, _q, _v in sim.batch_log} == {0.1}
    p99_only = make_spec(tmp_path, [write_profile(tmp_path, {1: {"p99": 0.3}}, name="q")], service_model="empirical")
    sim = run(p99_only, 2, 100, one(), log=True)
    assert {round(f - s, 12) for _st, s, f, _k, _q, _v in sim.batch_log} == {0.3}


def test_a_noisy_stage_makes_the_next_one_queue(tmp_path):
    """A faster stage after a deterministic one never queues; after one whose service varies, it does."""
    first = write_profile(tmp_path, {1: {"p99": 0.2, "mean": 0.1}}, {1: [0.02, 0.18]}, name="first")
    second = write_profile(tmp_path, {1: {"p99": 0.05}}, name="second")
    for model, queues in (("deterministic", False), ("auto", True)):
        spec = make_spec(tmp_path, [first, second], service_model=model)
        sim = run(spec, 3, 600, one(stages=2), seed=3)
        done = ~np.isnan(sim.finish_s[1])
        wait = sim.finish_s[1, done] - sim.stage_in_s[1, done] - 0.05
        assert bool(wait.max() > 1e-6) is queues, model


# -------------------------------------------------------------------------------------------- queueing theory


@pytest.mark.slow
def test_mg1_mean_wait_is_pollaczek_khinchine(tmp_path):
    """One replica, batch 1, Poisson arrivals, a two-point service time (0.05 s four times in five, 0.3 s once;
    mean 0.1, squared coefficient of variation 1) at rho 0.5: mean wait = lambda E[S^2] / (2 (1 - rho))."""
    runs = [0.05, 0.05, 0.05, 0.05, 0.3]
    spec = make_spec(tmp_path, [write_profile(tmp_path, {1: {"p99": 0.3, "mean": 0.1}}, {1: runs})])
    lam = 5.0
    sim = run(spec, lam, 100_000, one(), seed=1, log=True)
    service = 0.1 * np.array(runs) / np.mean(runs)
    rho = lam * service.mean()
    expected = lam * np.mean(service**2) / (2 * (1 - rho))
    starts = np.array([s for _st, s, _f, _k, _q, _v in sim.batch_log])  # batch 1, FIFO: one per request, in order
    wait = starts - sim.stage_in_s[0]
    assert wait.size > 490_000
    assert wait.mean() == pytest.approx(expected, rel=0.03)


@pytest.mark.slow
def test_mm1_sojourn_p99(tmp_path):
    """Exponential run times (50,000 quantiles of Exp(mean 0.1 s)), rho 0.5: an M/M/1 queue, whose sojourn time is
    exponential with rate mu - lambda, so its p99 is ln(100) / (mu - lambda)."""
    n, mu, lam = 50_000, 10.0, 5.0
    runs = (-np.log(1 - (np.arange(n) + 0.5) / n) / mu).tolist()
    profile = write_profile(tmp_path, {1: {"p99": float(np.percentile(runs, 99)), "mean": 1 / mu}}, {1: runs})
    sim = run(make_spec(tmp_path, [profile]), lam, 100_000, one(), seed=1)
    sojourn = sim.finish_s[0] - sim.stage_in_s[0]
    assert np.percentile(sojourn, 99) == pytest.approx(np.log(100) / (mu - lam), rel=0.05)
    assert sojourn.mean() == pytest.approx(1 / (mu - lam), rel=0.03)


@pytest.mark.slow
@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_overhead_one_replica_batch_one_is_a_delay_busy_period(tmp_path, rho):
    """One replica, batch 1, deterministic service l = 0.07 s and overhead o = 0.03 s, Poisson arrivals.

    The core does o + l of work per request (work-conserving), so the work W a request finds is M/D/1's with service
    o + l: E[W] = lambda (o + l)^2 / (2 (1 - rho)). Decoding comes first, so its model run starts once W, its own
    decoding and the decoding of every request arriving meanwhile are done: a delay busy period, E = (E[W] + o) /
    (1 - lambda o); its sojourn is that plus l. (Were the core to run batches first, the system would be M/D/1 with
    service o + l, which is below this.)"""
    o, lat = 0.03, 0.07
    spec = make_spec(tmp_path, [write_profile(tmp_path, {1: {"p99": lat, "overhead": o}})])
    lam = rho / (o + lat)
    sim = run(spec, lam, 60_000, one(), seed=11)
    sojourn = sim.finish_s[0] - sim.stage_in_s[0]
    work = lam * (o + lat) ** 2 / (2 * (1 - rho))
    expected = (work + o) / (1 - lam * o) + lat
    assert sojourn.mean() - (o + lat) == pytest.approx(expected - (o + lat), rel=0.03)
    assert sojourn.mean() - (o + lat) > 1.1 * work  # more than M/D/1 with service o + l


# ------------------------------------------------------------------------------------------ serving overhead


def naive_one_replica(arrival, deadline, o, lat, batch, timeout):
    """The overhead model for one replica, event by event: its core decodes a request that has arrived whenever it
    is free (FIFO; one past its drop deadline is dropped instead), and otherwise starts a batch when ``batch`` are
    decoded or the oldest decoded has waited ``timeout`` since its decoding ended, or idles to the next arrival."""
    n = len(arrival)
    finish = np.full(n, np.nan)
    dropped = np.zeros(n, dtype=bool)
    raw, dec = deque(range(n)), deque()  # dec: (end of decoding, id)
    free = 0.0
    while raw or dec:
        t = free
        if raw and arrival[raw[0]] <= t:
            i = raw.popleft()
            if deadline[i] < t:
                dropped[i] = True
            else:
                dec.append((t + o, i))
                free = t + o
            continue
        while dec and deadline[dec[0][1]] < t:
            dropped[dec.popleft()[1]] = True
        if not dec:
            if not raw:
                break
            free = arrival[raw[0]]
            continue
        start = t if len(dec) >= batch else max(t, dec[0][0] + timeout)
        if raw and arrival[raw[0]] <= start:
            free = max(t, arrival[raw[0]])  # idle until it arrives, then decode it
            continue
        taken = [dec.popleft()[1] for _ in range(min(batch, len(dec)))]
        keep = [i for i in taken if deadline[i] >= start]
        for i in taken:
            dropped[i] = deadline[i] < start
        if keep:
            free = start + lat[len(keep)]
            finish[keep] = free
    return finish, dropped


@pytest.mark.parametrize(
    "batch,timeout,rps,drop_s",
    [(1, 0.0, 9, 3600.0), (4, 0.05, 12, 3600.0), (4, 0.0, 30, 3600.0), (8, 0.2, 40, 3.0)],  # the last: overloaded
)
def test_overhead_engine_matches_a_naive_one_replica_model(tmp_path, batch, timeout, rps, drop_s):
    """The engine's overhead loop (interval by interval) and a naive one-replica implementation agree per request."""
    o = 0.02
    points = {b: {"p99": 0.03 + 0.01 * b, "overhead": o} for b in range(1, batch + 1)}
    spec = make_spec(tmp_path, [write_profile(tmp_path, points)], batches=(batch,), timeout_s=timeout, drop_s=drop_s)
    rng = np.random.default_rng(5)
    sim = run(spec, rng.integers(0, 2 * rps, 400), 0, one(batch=batch), seed=2)
    lat = [0.0] + [points[b]["p99"] for b in range(1, batch + 1)]
    finish, dropped = naive_one_replica(sim.entry_s, sim.deadline_s, o, lat, batch, timeout)
    np.testing.assert_array_equal(sim.dropped_at == 0, dropped)
    np.testing.assert_allclose(np.nan_to_num(sim.finish_s[0], nan=-1), np.nan_to_num(finish, nan=-1), atol=1e-9)
    if drop_s < 100:
        assert dropped.any()


def _forced_decoding(monkeypatch) -> None:
    """Every pool runs the overhead loop, whatever its overhead (0 in the bundled profiles: decoding is instant)."""
    monkeypatch.setattr(Engine, "_pool_runner", lambda self, st, pool: self._run_pool_decode)


def test_without_overhead_the_overhead_loop_matches_the_naive_reference(monkeypatch):
    """With a zero overhead and no batch timeout, the overhead loop serves and drops exactly as the naive reference
    (several replicas, batches, drops at both stages)."""
    spec = load_spec("video", ["batch_timeout_s=0"])
    cfg = PipelineConfig((StageConfig.one("yolov5m", 8, 3, 4), StageConfig.one("resnet101", 4, 2, 2)))
    _forced_decoding(monkeypatch)
    sim = run(spec, load_trace("steady_high").rps, 0, cfg, seed=2)
    ref = simulate_naive(spec, cfg, sim.entry_s)
    assert (ref["dropped_at"] == 1).any()
    np.testing.assert_array_equal(sim.dropped_at.astype(int), ref["dropped_at"])
    np.testing.assert_allclose(np.nan_to_num(sim.finish_s, nan=-1), np.nan_to_num(ref["finish_s"], nan=-1))
    assert sim.events == int(ref["events"][0])


def test_without_overhead_the_overhead_loop_forms_todays_batches(tmp_path, monkeypatch):
    """With a zero overhead and no batch timeout, the overhead loop forms exactly the batches of today's loop, through
    a scaling: several replicas, batches, queues, drops."""
    spec = load_spec("video", ["batch_timeout_s=0"])
    cfg = PipelineConfig((StageConfig.one("yolov5m", 8, 2, 4), StageConfig.one("resnet101", 4, 2, 2)))
    bigger = PipelineConfig((StageConfig.one("yolov5m", 8, 4, 4), StageConfig.one("resnet101", 4, 3, 2)))

    def play() -> Simulator:
        sim = Simulator(spec, load_trace("bursty"), cfg, seed=2, arrivals="poisson", log_batches=True)
        while not sim.done:
            sim.step()
            if 300 <= sim.time_s < 310:
                sim.apply(bigger)
        sim.drain()
        return sim

    today = play()
    _forced_decoding(monkeypatch)
    decoding = play()
    assert (today.dropped_at == 1).sum() > 100
    # the same batches (which of two replicas free at the same instant takes one may differ: they are alike)
    assert [b[:4] for b in today.batch_log] == [b[:4] for b in decoding.batch_log]
    np.testing.assert_array_equal(today.finish_s, decoding.finish_s)
    np.testing.assert_array_equal(today.dropped_at, decoding.dropped_at)
    assert [m.stages[0].queue_len for m in today.history] == [m.stages[0].queue_len for m in decoding.history]


def test_overhead_delays_each_request_and_its_queue_is_counted(tmp_path):
    """Conservation holds with requests waiting to be decoded; the overhead delays a request by its decoding."""
    spec = make_spec(tmp_path, [write_profile(tmp_path, {1: {"p99": 0.01, "overhead": 0.05}})])
    sim = Simulator(spec, Trace("t", np.full(200, 15.0)), one(replicas=1), seed=0, arrivals="poisson")
    while not sim.done:
        sim.step()
        fed = sim.fed
        entered = int(np.count_nonzero(~np.isnan(sim.stage_in_s[0, :fed])))
        served = int(np.count_nonzero(~np.isnan(sim.finish_s[0, :fed])))
        assert entered == served + len(sim.stages[0].q_t)
    sim.drain()
    sojourn = sim.finish_s[0] - sim.stage_in_s[0]
    assert sojourn.min() == pytest.approx(0.06)
    assert max(m.stages[0].queue_len for m in sim.history) > 0


def test_overhead_with_several_replicas_shares_the_load(tmp_path):
    """Several replicas: each request is decoded and served once; more replicas, shorter sojourns."""
    spec = make_spec(tmp_path, [write_profile(tmp_path, {1: {"p99": 0.04, "overhead": 0.02}, 4: {"p99": 0.08,
                     "overhead": 0.02}})], batches=(1, 4), timeout_s=0.02)  # fmt: skip
    means = []
    for replicas in (2, 3):
        sim = run(spec, 40, 300, one(batch=4, replicas=replicas), seed=1)
        assert not np.isnan(sim.finish_s[0]).any() and (sim.dropped_at < 0).all()
        means.append(np.mean(sim.finish_s[0] - sim.stage_in_s[0]))
    assert means[1] < means[0]


def test_overhead_follows_an_in_place_resize(tmp_path):
    """An in-place resize changes the overhead with the cores (batches and decoding from resize_s on)."""
    rows = [HEADER, "v,1,1,0.05,t,measured,,,,0.04", "v,1,2,0.03,t,measured,,,,0.01"]
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")
    raw = make_spec(tmp_path, ["r.csv"]).to_document()
    raw["stages"][0]["cores"] = [1, 2]
    raw.update(in_place_resize=True, resize_s=1.0)
    spec = parse_spec(raw, tmp_path / "svc.yaml")
    sim = Simulator(spec, Trace("t", np.full(40, 1.0)), one(), seed=0, arrivals="even")
    sim.step()
    sim.apply(PipelineConfig((StageConfig.one("v", 1, 1, 2),)))
    while not sim.done:
        sim.step()
    sim.drain()
    sojourn = sim.finish_s[0] - sim.stage_in_s[0]
    np.testing.assert_allclose(sojourn[sim.entry_s < 10], 0.09)
    np.testing.assert_allclose(sojourn[sim.entry_s >= 11], 0.04)


def test_overhead_with_edf_is_refused(tmp_path):
    profile = write_profile(tmp_path, {1: {"p99": 0.05, "overhead": 0.01}})
    raw = make_spec(tmp_path, [profile]).to_document()
    raw["stages"][0]["queue_discipline"] = "edf"
    spec = parse_spec(raw, tmp_path / "svc.yaml")
    with pytest.raises(RlscaleError, match="not simulated with queue_discipline edf"):
        Simulator(spec, Trace("t", np.full(10, 1.0)), one(), seed=0)


# ------------------------------------------------------------------------------------------ time off the core


def _with_columns(folder: Path, name: str, **columns: float) -> str:
    """Profile ``name`` with extra columns (``delay_s``, ``jitter_s``) set on every row."""
    path = folder / name
    lines = path.read_text().splitlines()
    head = lines[0] + "".join(f",{c}" for c in columns)
    rows = [line + "".join(f",{v!r}" for v in columns.values()) for line in lines[1:]]
    path.write_text("\n".join([head, *rows]) + "\n")
    return name


def test_delay_and_jitter_leave_the_core_and_the_service_draws_alone(tmp_path):
    """A delay of 3 ms and a jitter of mean 2 ms off the core: every request's time in the stage grows by 3 ms plus
    an exponential of mean 2 ms (the next stage sees it arrive then), the batches and their service draws are the
    same as without them, and the core's busy time does not change."""
    runs = {1: [0.001, 0.002, 0.003]}
    points = {1: {"p99": 0.003, "mean": 0.002}}
    plain = make_spec(
        tmp_path, [write_profile(tmp_path, points, runs, name="a"), write_profile(tmp_path, points, runs, name="b")]
    )
    write_profile(tmp_path, points, runs, name="c")
    off = make_spec(tmp_path, [_with_columns(tmp_path, "c.csv", delay_s=0.003, jitter_s=0.002), "b.csv"])
    base = run(plain, 50, 400, one(stages=2), seed=2, log=True)
    late = run(off, 50, 400, one(stages=2), seed=2, log=True)
    first = [b for b in base.batch_log if b[0] == 0]
    assert first == [b for b in late.batch_log if b[0] == 0] and len(first) > 10_000  # the same batches and draws
    o0, o1 = base.outcomes, late.outcomes
    extra = (o1.finish_s[0] - o1.stage_in_s[0]) - (o0.finish_s[0] - o0.stage_in_s[0])
    assert extra.min() >= 0.003 - 1e-12
    assert np.mean(extra - 0.003) == pytest.approx(0.002, rel=0.05)  # exponential: mean 2 ms, p90 = 2 ln 10 ms
    assert np.percentile(extra - 0.003, 90) == pytest.approx(0.002 * np.log(10), rel=0.08)
    assert np.array_equal(o1.stage_in_s[1], o1.finish_s[0])  # the next stage sees it arrive when it leaves


def test_jitter_is_drawn_from_the_runs_seed(tmp_path):
    points = {1: {"p99": 0.003, "mean": 0.002}}
    write_profile(tmp_path, points, name="j")
    spec = make_spec(tmp_path, [_with_columns(tmp_path, "j.csv", jitter_s=0.001)])
    a, b, c = (run(spec, 20, 60, one(), seed=s).outcomes.finish_s[0] for s in (5, 5, 6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
