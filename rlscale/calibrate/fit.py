"""The fit: what serving adds to each stage's latency beyond the model and its overhead, chosen so that the
simulator reproduces real runs the configurations do not include.

Profiling measures the model alone, and the serving overhead from the server's own metrics; under Poisson load a
real stage is still slower than those two make it (experiments/RESULTS.md section 16): part of each request's time
is spent outside the replica's core (the caller, the network, the scheduler), with a tail of its own. Two numbers
a stage model it (`rlscale.profiles`): ``delay_s``, a constant, and ``jitter_s``, the mean of an exponential drawn
per request; neither queues nor takes the core, so they leave the stage's capacity as measured.

The fit runs the window at the fit loads (``--fit-load-fraction``) on fresh servers, at batch 1 and, at the highest
fit load, at the largest batch of the configurations, with arrivals of another seed than the configurations'
(``seed + 1``): the configurations are runs the fit did not see. Then, stage after stage (a stage's latency depends
on the stages before it only), it simulates the fit runs and takes the delay and jitter whose stage latencies
(each simulated request's plus the delay plus the jitter's mean times a fixed Exp(1) draw per request: common
random numbers) match best. The loss is the sum over fit runs and over p50, p90 and p99 of the stage's latency of
``(log(sim_q) - log(real_q))^2``: relative errors, so the tail weighs as much as the median.

What the core is charged a request, the **overhead**, is fitted too (`FIT_MODES`, default ``overhead``): on a line of
`STEPS` steps from the overhead measured with 8 requests in flight (`rlscale.calibrate.measure`) up to the server's
whole CPU a request in the fit runs at batch 1 less the model's mean. Under open-loop Poisson arrivals a server
spends more a request than with 8 in flight (fewer requests share each wake-up), but not all of its CPU delays the
next batch: the fit places it between (experiments/RESULTS.md section 17: 0.3-0.5 of the way on both pairs). Each
fit run is repeated like the configurations (``repeats``, fresh servers) and matched at its median quantiles:
single runs minutes apart differ by 20-30% on a small machine, and a fit to one of them does not carry over.

``off-core`` keeps the measured overhead and fits the delay and jitter alone (the previous default). ``on-core``
fits the overhead and a **batch cost** (added to every point's service time, so batching amortises it) on a grid
from 0 whose sum is at most that CPU ceiling: an ablation, which fitted its runs but overshot the configurations'
tails 2-3x (a small excess of work a request near saturation multiplies into the tail).
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rlscale.calibrate.settings import FIT_MODES
from rlscale.calibrate.simulated import SimResult
from rlscale.profiles import ProfilePoint
from rlscale.spec import PipelineSpec

log = logging.getLogger("rlscale.calibrate")

QUANTILES = (50, 90, 99)
"""The stage latency percentiles the fit matches."""
STEPS = 12
"""The grid: overheads and batch costs in this many equal steps from 0 to the most the core can be charged."""
POOR = (0.5, 2.0)
"""A fit whose simulated p50, p90 or p99 of a fit run is outside this share of the real one is warned about."""
DELAY_STEPS = 200
"""Delays tried for each jitter: this many equal steps from 0 to the fit runs' largest real p50."""
JITTER_STEPS = 40
"""Jitters tried for each overhead and batch cost: this many equal steps from 0 to the fit runs' largest real p50."""


@dataclass(frozen=True)
class FitRun:
    """One fit configuration the fit matches, run for real once or more (repeats, on fresh servers).

    Attributes:
        name: the fit configuration's name.
        repeats: per repeat, the real per-stage latencies (client side), shape (stages, requests), NaN where not
            answered.
        cpu_per_request_s: per stage, its server's CPU seconds a request over the run, the median over repeats
            (None: not our server).
        simulate: runs the fit configuration through the simulator with a given spec.
    """

    name: str
    repeats: Sequence[np.ndarray]
    cpu_per_request_s: Sequence[float | None]
    simulate: Callable[[PipelineSpec], SimResult]

    def real_q(self, stage: int) -> np.ndarray:
        """The real p50, p90 and p99 of ``stage``'s latency, the median over the repeats of each (NaN where no
        request was answered)."""
        per_repeat = [_quantiles(r[stage][np.isfinite(r[stage])]) for r in self.repeats]
        with np.errstate(all="ignore"):
            return np.median(np.array(per_repeat), axis=0)


@dataclass
class StageFit:
    """One stage's figures (seconds: the overhead and batch cost on the core, the delay and jitter off it) and how
    well they match."""

    stage: str
    overhead_s: float | None
    batch_cost_s: float
    delay_s: float
    jitter_s: float
    loss: float
    measured_overhead_s: float | None
    ceiling_s: float
    sim_over_real: dict[str, list[float]] = field(default_factory=dict)
    real_s: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "overhead_s": self.overhead_s,
            "batch_cost_s": self.batch_cost_s,
            "delay_s": self.delay_s,
            "jitter_s": self.jitter_s,
            "loss": self.loss,
            "measured_overhead_s": self.measured_overhead_s,
            "overhead_ceiling_s": self.ceiling_s,
            "sim_over_real": self.sim_over_real,
            "real_s": self.real_s,
            "quantiles": list(QUANTILES),
        }


def with_fit(
    points: Sequence[ProfilePoint],
    overhead_s: float | None,
    batch_cost_s: float,
    delay_s: float,
    jitter_s: float = 0.0,
) -> list[ProfilePoint]:
    """``points`` with their overhead, delay and jitter replaced, and ``batch_cost_s`` added to each point's service
    time (its statistics and its runs)."""

    def plus(x: float | None) -> float | None:
        return None if x is None else x + batch_cost_s

    return [
        replace(
            p,
            latency_s=p.latency_s + batch_cost_s,
            p50_s=plus(p.p50_s),
            mean_s=plus(p.mean_s),
            p90_s=plus(p.p90_s),
            runs_s=None if p.runs_s is None else tuple(r + batch_cost_s for r in p.runs_s),
            overhead_s=None if overhead_s is None else float(overhead_s),
            delay_s=float(delay_s),
            jitter_s=float(jitter_s),
        )
        for p in points
    ]


def best_delay(sim_q: np.ndarray, real_q: np.ndarray, top_s: float) -> tuple[float, float]:
    """The delay ``d`` in [0, ``top_s``] (`DELAY_STEPS` steps) with the least loss, and that loss: rows of
    ``sim_q`` and ``real_q`` are fit runs, columns quantiles."""
    delays = np.linspace(0.0, max(top_s, 0.0), DELAY_STEPS + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.log(sim_q[None, :, :] + delays[:, None, None]) - np.log(real_q[None, :, :])
    loss = np.nansum(err**2, axis=(1, 2))
    loss[~np.isfinite(loss)] = np.inf
    i = int(np.argmin(loss))
    return float(delays[i]), float(loss[i])


def best_delay_and_jitter(
    latencies: Sequence[np.ndarray], draws: Sequence[np.ndarray], real_q: np.ndarray, top_s: float
) -> tuple[float, float, float]:
    """The delay and jitter with the least loss, and that loss: for each jitter on a grid from 0 to ``top_s``
    (`JITTER_STEPS` steps), each fit run's simulated latencies plus the jitter times its fixed Exp(1) ``draws``,
    then the best delay for those (`best_delay`)."""
    best = (0.0, 0.0, math.inf)
    for jitter in np.linspace(0.0, max(top_s, 0.0), JITTER_STEPS + 1):
        sim_q = np.array([_quantiles(lat + jitter * e) for lat, e in zip(latencies, draws, strict=True)])
        delay, loss = best_delay(sim_q, real_q, top_s)
        if loss < best[2]:
            best = (delay, float(jitter), loss)
    return best


def fit_stages(
    spec: PipelineSpec,
    points: Mapping[str, Sequence[ProfilePoint]],
    runs: Sequence[FitRun],
    write: Callable[[PipelineSpec, Mapping[str, Sequence[ProfilePoint]], Path], PipelineSpec],
    mode: str = "overhead",
) -> tuple[dict[str, list[ProfilePoint]], list[StageFit]]:
    """Fit every calibrated stage's delay and jitter, and as ``mode`` says (`FIT_MODES`) its overhead (and batch cost;
    module docstring), in stage order.

    Args:
        spec: the spec calibrated.
        points: each calibrated stage's points (`rlscale.calibrate.calibrated.calibrated_points`), their measured
            overhead in them.
        runs: the fit runs.
        write: writes a spec with given points and loads it back (`rlscale.calibrate.calibrated.write_calibrated_spec`).
        mode: one of `FIT_MODES`.

    Returns:
        The points with the fitted figures, and each stage's fit.
    """
    if mode not in FIT_MODES:
        raise ValueError(f"fit mode {mode!r}: one of {', '.join(FIT_MODES)}")
    on_core = mode == "on-core"
    fitted = {name: list(p) for name, p in points.items()}
    fits: list[StageFit] = []
    with tempfile.TemporaryDirectory(prefix="rlscale-fit-") as tmp:
        path = Path(tmp) / "fit.yaml"
        for s, stage in enumerate(spec.stages):
            if stage.name not in fitted or not fitted[stage.name]:
                continue
            base = fitted[stage.name]
            model_s = next(p for p in base if p.batch == 1).mean_s or base[0].latency_s
            measured = base[0].overhead_s
            ceiling = _cpu_ceiling(runs, s, model_s, measured)
            real_q = np.array([r.real_q(s) for r in runs])
            top = float(np.nanmax(real_q[:, 0])) if np.isfinite(real_q[:, 0]).any() else 0.0
            best: tuple[float, ...] | None = None
            grid = np.linspace(0.0, ceiling, STEPS + 1)
            if on_core:
                overheads: list[float | None] = [float(x) for x in grid]
            elif mode == "overhead" and measured is not None:
                overheads = [float(x) for x in np.linspace(measured, max(ceiling, measured), STEPS + 1)]
            else:  # as measured (None: not measured, a team's server without a factory)
                overheads = [measured]
            draws = [np.random.default_rng(i).exponential(1.0, r.repeats[0].shape[1]) for i, r in enumerate(runs)]
            for overhead in overheads:
                for cost in grid[grid <= ceiling - overhead + 1e-12] if on_core else [0.0]:
                    trial = write(spec, {**fitted, stage.name: with_fit(base, overhead, cost, 0.0)}, path)
                    latencies = [_latencies(r.simulate(trial), s) for r in runs]
                    shaped = [e[: lat.size] for lat, e in zip(latencies, draws, strict=True)]
                    delay, jitter, loss = best_delay_and_jitter(latencies, shaped, real_q, top)
                    if best is None or loss < best[0]:
                        best = (loss, overhead, float(cost), delay, jitter)
            assert best is not None
            loss, overhead, cost, delay, jitter = best
            note = " + serving fitted to real runs (rlscale.calibrate.fit)"
            fitted[stage.name] = [
                replace(p, source=p.source + note) for p in with_fit(base, overhead, cost, delay, jitter)
            ]
            trial = write(spec, fitted, path)
            ratios = {r.name: list((_sim_q(r.simulate(trial), s) / r.real_q(s)).round(4)) for r in runs}
            fit = StageFit(stage.name, overhead, cost, delay, jitter, loss, measured, ceiling, ratios)
            fit.real_s = {r.name: [float(x) for x in r.real_q(s)] for r in runs}
            log.info(
                "fit %s: on the core %.3g ms a request (measured %s) and %.3g ms a batch (CPU ceiling %.3g), "
                "off it a delay of %.3g ms and a jitter of mean %.3g ms; sim/real p50,p90,p99 %s",
                stage.name,
                (overhead or 0.0) * 1e3,
                "-" if measured is None else f"{measured * 1e3:.3g}",
                cost * 1e3,
                ceiling * 1e3,
                delay * 1e3,
                jitter * 1e3,
                "; ".join(f"{k} {','.join(f'{x:.2f}' for x in v)}" for k, v in ratios.items()),
            )
            fits.append(fit)
            off = {k: v for k, v in ratios.items() if not all(POOR[0] <= x <= POOR[1] for x in v if np.isfinite(x))}
            if off:
                log.warning(
                    "fit %s: the simulator does not reproduce fit run(s) %s (sim/real outside [%g, %g]): something "
                    "else ran on these CPUs then, or the server is slower under that load than its profile and "
                    "overhead say (near saturation); calibrate on a quiet machine, or pass lower --fit-load-fraction",
                    stage.name,
                    ", ".join(off),
                    *POOR,
                )
    return fitted, fits


def _cpu_ceiling(runs: Sequence[FitRun], stage: int, model_s: float, measured: float | None) -> float:
    """The most the core may be charged a request: the median over the fit runs at batch 1 (else all of them) of
    the server's CPU a request less the model's mean, and at least the measured overhead (and 0)."""
    known = [
        (r.name.endswith("-b1"), c) for r in runs if (c := r.cpu_per_request_s[stage]) is not None and math.isfinite(c)
    ]
    at_one = [c for b1, c in known if b1] or [c for _b1, c in known]
    cpu = float(np.median(at_one)) - model_s if at_one else 0.0
    return max(cpu, measured or 0.0, 0.0)


def _latencies(sim: SimResult, stage: int) -> np.ndarray:
    lat = sim.stage_s[stage]
    return lat[np.isfinite(lat)]


def _quantiles(lat: np.ndarray) -> np.ndarray:
    return np.percentile(lat, QUANTILES) if lat.size else np.full(len(QUANTILES), np.nan)


def _sim_q(sim: SimResult, stage: int) -> np.ndarray:
    return _quantiles(_latencies(sim, stage))
