"""The fit (`rlscale.calibrate.fit`): each stage's overhead, batch cost and delay chosen so that the simulator
reproduces real runs. Here the "real" runs are the simulator's own with known figures, so the fit must find them
back, and the stage after a fitted one is fitted on what the first one now sends it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rlscale.calibrate.calibrated import write_calibrated_spec
from rlscale.calibrate.fit import QUANTILES, FitRun, best_delay, fit_stages, with_fit
from rlscale.calibrate.simulated import simulate
from rlscale.profiles import ProfilePoint
from rlscale.spec import load_spec
from rlscale.workload import Trace
from tests.calibrate.specs import write_mlp_spec

RNG = np.random.default_rng(7)


def _points(variant: str = "mlp-256") -> list[ProfilePoint]:
    """A measured-looking profile at batches 1 and 2: runs around 1 ms and 1.6 ms."""
    out = []
    for b, mean in ((1, 0.001), (2, 0.0016)):
        runs = tuple(float(x) for x in mean * RNG.uniform(0.8, 1.2, 200))
        p50, p90, p99 = np.percentile(runs, [50, 90, 99])
        out.append(
            ProfilePoint(
                variant,
                b,
                1.0,
                float(p99),
                "test",
                "measured",
                float(p50),
                float(np.mean(runs)),
                float(p90),
                0.0,
                runs_s=runs,
            )
        )
    return out


def test_with_fit_adds_the_batch_cost_to_every_statistic_and_run():
    base = _points()
    fitted = with_fit(base, 0.0004, 0.0002, 0.003)
    for before, after in zip(base, fitted, strict=True):
        assert after.overhead_s == 0.0004 and after.delay_s == 0.003
        assert after.latency_s == pytest.approx(before.latency_s + 0.0002)
        assert after.mean_s == pytest.approx(before.mean_s + 0.0002)
        assert after.p50_s == pytest.approx(before.p50_s + 0.0002)
        assert np.allclose(np.array(after.runs_s) - np.array(before.runs_s), 0.0002)


def test_best_delay_finds_a_constant_shift():
    real = np.array([[0.010, 0.020, 0.050], [0.012, 0.030, 0.080]])
    sim = real - 0.004
    delay, loss = best_delay(sim, real, top_s=0.012)
    assert delay == pytest.approx(0.004, abs=0.012 / 200) and loss < 1e-4
    delay, _ = best_delay(real + 0.001, real, top_s=0.012)  # the simulator is already slower: no negative delay
    assert delay == 0.0


def _spec_with(tmp_path: Path, name: str, points: dict[str, list[ProfilePoint]]):
    source = load_spec(write_mlp_spec(tmp_path))
    return write_calibrated_spec(source, points, tmp_path / name)


def _runs(real_spec, cpu=(None, None)):
    """Fit runs made by the simulator on ``real_spec``: (load, batch) 150 and 400 rps at batch 1, 400 at batch 2."""
    variants = ["mlp-256", "mlp-256"]
    runs = []
    for load, batch in ((150.0, 1), (400.0, 1), (400.0, 2)):
        trace = Trace("flat", np.full(10, load))
        real = simulate(real_spec, variants, batch, trace, "poisson", 1)

        def again(spec, trace=trace, batch=batch):
            return simulate(spec, variants, batch, trace, "poisson", 1)

        runs.append(FitRun(f"load{load:g}-b{batch}", [real.stage_s], list(cpu), again))
    return runs


def _fit(tmp_path, base, runs, **kw):
    def write(spec, points, path):
        return _spec_with(tmp_path, path.name, dict(points))

    return fit_stages(load_spec(write_mlp_spec(tmp_path)), base, runs, write, **kw)


def test_the_fit_finds_the_delay_and_jitter_off_the_core(tmp_path):
    """``off-core`` keeps each stage's measured overhead and finds the delay and jitter the runs were made with
    (stage first: a delay of 2 ms; second: 0.5 ms and a jitter of mean 1 ms), matching p50 and p90 within 7%."""
    truth = {"first": (0.0004, 0.002, 0.0), "second": (0.0002, 0.0005, 0.001)}
    base = {s: with_fit(_points(), o, 0.0, 0.0) for s, (o, _d, _j) in truth.items()}
    real = {s: with_fit(base[s], o, 0.0, d, j) for s, (o, d, j) in truth.items()}
    fitted, fits = _fit(tmp_path, base, _runs(_spec_with(tmp_path, "real.yaml", real)), mode="off-core")
    assert [f.stage for f in fits] == ["first", "second"]
    for f in fits:
        overhead, delay, jitter = truth[f.stage]
        assert f.overhead_s == overhead and f.batch_cost_s == 0.0  # as measured
        assert f.delay_s + f.jitter_s == pytest.approx(delay + jitter, abs=0.0004), f
        assert f.jitter_s == pytest.approx(jitter, abs=0.0004), f
        for p50, p90, _p99 in f.sim_over_real.values():
            assert 0.93 <= p50 <= 1.07 and 0.93 <= p90 <= 1.07, f
    assert all(p.overhead_s == truth[s][0] for s, points in fitted.items() for p in points)
    assert all("fitted" in p.source for points in fitted.values() for p in points)


@pytest.mark.slow
def test_the_fit_on_the_core_finds_the_figures_that_made_the_runs(tmp_path):
    """``on_core``: runs simulated with an overhead of 0.6 ms a request, 0.3 ms a batch and a delay of 2 ms (stage
    first), and 0.2 ms, 0, 1 ms and a jitter of mean 1 ms (stage second): the fit, from the bare model profile,
    finds figures whose simulation matches those runs' p50 and p90 within 7% and p99 within 15% (10 s runs), close
    to the truth (the grid's step apart)."""
    truth = {"first": (0.0006, 0.0003, 0.002, 0.0), "second": (0.0002, 0.0, 0.001, 0.001)}
    base = {"first": _points(), "second": _points()}
    real_spec = _spec_with(tmp_path, "real.yaml", {s: with_fit(base[s], *truth[s]) for s in truth})
    cpu = [truth[s][0] + truth[s][1] + 0.001 + 0.0004 for s in truth]  # what a server's CPU a request would say
    fitted, fits = _fit(tmp_path, base, _runs(real_spec, cpu), mode="on-core")
    assert [f.stage for f in fits] == ["first", "second"]
    for f in fits:
        overhead, cost, delay, jitter = truth[f.stage]
        step = f.ceiling_s / 12
        assert abs(f.overhead_s + f.batch_cost_s - overhead - cost) <= max(2 * step, 0.0003), f
        assert f.delay_s + f.jitter_s == pytest.approx(delay + jitter, abs=0.0006), f
        assert f.jitter_s == pytest.approx(jitter, abs=0.0005), f
        for ratios in f.sim_over_real.values():
            assert len(ratios) == len(QUANTILES)
            p50, p90, p99 = ratios
            assert 0.93 <= p50 <= 1.07 and 0.93 <= p90 <= 1.07 and 0.85 <= p99 <= 1.15, f
    for stage, points in fitted.items():
        assert all(p.delay_s == pytest.approx(next(f for f in fits if f.stage == stage).delay_s) for p in points)


def test_a_stage_without_a_measured_overhead_keeps_none(tmp_path):
    """A team's server without a factory has no measured overhead: the fit leaves it unmeasured (None), not 0."""
    base = {s: [replace(p, overhead_s=None) for p in _points()] for s in ("first", "second")}
    real = {s: with_fit(base[s], None, 0.0, 0.001, 0.0) for s in base}
    fitted, fits = _fit(tmp_path, base, _runs(_spec_with(tmp_path, "real.yaml", real)))
    assert all(f.overhead_s is None and f.delay_s == pytest.approx(0.001, abs=0.0004) for f in fits)
    assert all(p.overhead_s is None for points in fitted.values() for p in points)


def test_the_fit_places_the_overhead_between_the_measured_one_and_the_cpu(tmp_path):
    """The default: runs made with 0.9 ms a request on the core (stage first) and 0.5 ms (second), from a measured
    overhead of 0.3 and 0.2 ms and a server CPU a request that would allow 1.2 ms beyond the model: the fit finds
    an overhead on that line within two of its steps, and the runs' p50 and p90 within 7%."""
    truth = {"first": (0.0009, 0.001, 0.0), "second": (0.0005, 0.0005, 0.0005)}
    measured = {"first": 0.0003, "second": 0.0002}
    base = {s: with_fit(_points(), measured[s], 0.0, 0.0) for s in truth}
    real = {s: with_fit(base[s], o, 0.0, d, j) for s, (o, d, j) in truth.items()}
    cpu = [next(p for p in base[s] if p.batch == 1).mean_s + 0.0012 for s in truth]
    fitted, fits = _fit(tmp_path, base, _runs(_spec_with(tmp_path, "real.yaml", real), cpu))
    for f in fits:
        overhead, _delay, _jitter = truth[f.stage]
        assert f.measured_overhead_s == measured[f.stage] and f.ceiling_s == pytest.approx(0.0012)
        step = (f.ceiling_s - measured[f.stage]) / 12
        assert f.measured_overhead_s <= f.overhead_s <= f.ceiling_s and f.batch_cost_s == 0.0
        assert f.overhead_s == pytest.approx(overhead, abs=2 * step), f
        for p50, p90, _p99 in f.sim_over_real.values():
            assert 0.93 <= p50 <= 1.07 and 0.93 <= p90 <= 1.07, f
    assert all(p.overhead_s == next(f.overhead_s for f in fits if f.stage == s) for s, ps in fitted.items() for p in ps)


def test_a_fit_run_is_matched_at_the_median_of_its_repeats():
    rng = np.random.default_rng(3)
    repeats = [rng.exponential(scale, (2, 500)) for scale in (0.001, 0.002, 0.004)]
    run = FitRun("load0.5-b1", repeats, [None, None], lambda spec: None)
    expected = np.median([np.percentile(r[1], QUANTILES) for r in repeats], axis=0)
    assert np.allclose(run.real_q(1), expected) and len(run.repeats) == 3
    one = FitRun("load0.5-b1", [repeats[0]], [None, None], lambda spec: None)
    assert np.allclose(one.real_q(0), np.percentile(repeats[0][0], QUANTILES))


def test_an_unknown_fit_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="fit mode"):
        _fit(tmp_path, {"first": _points()}, [], mode="both")
