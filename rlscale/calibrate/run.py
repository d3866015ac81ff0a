"""One calibration, start to end (`run_calibration`):

1. **Profile** every stage in-process and served (`rlscale.calibrate.measure`); write the calibrated profiles and
   spec into ``--out`` (``spec-calibrated.yaml``, ``spec-calibrated-STAGE.csv`` and its runs; ``spec-served.yaml``
   likewise with the served requests' run times, `WHERE`) and, with ``--write-spec``, the calibrated one there too;
   ``profiles.json`` holds every measurement.
2. **Rounds**, ``repeats`` of them: in each, one real run of every fit configuration (the fit loads at batch 1,
   and the largest batch at the highest; arrivals of seed + 1), then one of every configuration (arrivals of the
   seed), each on freshly started servers (`rlscale.calibrate.servers`) after a warm-up, the open-loop generator
   on its own CPU. A configuration's window is the trace's, scaled so its peak is the configuration's fraction of
   the bottleneck's capacity at batch 1; its arrivals are the simulator's own (`rlscale.calibrate.load.schedule_s`).
   Rounds rather than one configuration's repeats back to back: the machine drifts over minutes, and rounds
   spread the drift over the fit runs and the configurations alike.
3. **Fit** (`rlscale.calibrate.fit`), after each round's fit runs, to all of their repeats so far: each stage's
   overhead on the core and delay and jitter off it; the calibrated specs are written again with them.
4. After each real run of a configuration, the simulator on its arrivals with each calibrated spec and with the
   spec as given, and every output rewritten (`rlscale.calibrate.report`) with the configurations' runs so far,
   so an interrupt keeps every finished run; ``run.json`` holds the diagnostics (the servers' own metrics and CPU,
   the generator's lateness and CPU).
"""

from __future__ import annotations

import json
import logging
import math
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlscale.calibrate import report
from rlscale.calibrate.calibrated import calibrated_points, write_calibrated_spec
from rlscale.calibrate.fit import FitRun, StageFit, fit_stages
from rlscale.calibrate.load import LoadResult, run_load, schedule_s, warmup_times, window_trace
from rlscale.calibrate.measure import StageProfile, capacity_rps, pinned, profile_stage
from rlscale.calibrate.report import SLA_QUANTILES, ConfigResult
from rlscale.calibrate.servers import StageServer, server_summary, start_all, stop_all
from rlscale.calibrate.settings import Configuration, Settings
from rlscale.calibrate.simulated import simulate
from rlscale.calibrate.stats import finite_or_none, run_figures, violation_rate_at
from rlscale.errors import RlscaleError
from rlscale.interrupts import Interrupted, signum_of
from rlscale.model import TAIL_Q, calibrated_latency_s, is_calibrated, stage_latency_s
from rlscale.paths import atomic_write_text
from rlscale.profiles import ProfilePoint
from rlscale.spec import PipelineSpec
from rlscale.workload import Trace

log = logging.getLogger("rlscale.calibrate")

WHERE = {"in-process": "spec-calibrated.yaml", "served": "spec-served.yaml"}
"""The calibrated specs written into ``--out``, by where their run times were measured: the calibrated one (the
model in-process, the simulator's ``sim`` column) and the served requests' (``sim_served``), each with the overhead
(`rlscale.calibrate.calibrated`)."""
SERVERS_LOG = "servers.log"


class CalibrationInterrupted(Interrupted):
    """SIGINT or SIGTERM stopped a calibration; every configuration with a real run is written.

    Attributes:
        finished: configurations finished (all their repeats).
        total: configurations asked for.
        out: the output folder.
        partial: configurations written with fewer repeats than asked.
    """

    def __init__(self, signum: int, finished: int, total: int, out: Path, partial: int = 0) -> None:
        super().__init__(signum)
        self.finished, self.total, self.out, self.partial = finished, total, out, partial


@dataclass
class Calibration:
    """What a calibration produced so far."""

    settings: Settings
    profiles: list[StageProfile] = field(default_factory=list)
    capacity_measured_rps: float = math.nan
    results: list[ConfigResult] = field(default_factory=list)
    calibrated_spec: Path | None = None
    written_spec: Path | None = None
    fits: list[StageFit] = field(default_factory=list)
    fit_diagnostics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def capacity_rps(self) -> float:
        return self.settings.capacity_rps or self.capacity_measured_rps

    def meta(self) -> dict[str, Any]:
        s = self.settings
        return {
            "spec": s.spec_arg or s.spec.name,
            "overrides": list(s.overrides),
            "pipeline": s.spec.name,
            "trace": s.trace.name,
            "window": list(s.window),
            "arrivals": s.arrivals,
            "seed": s.seed,
            "repeats": s.repeats,
            "sla_s": s.spec.sla_s,
            "batch_timeout_s": s.spec.batch_timeout_s,
            # the simulator's service model (a spec setting once the simulator samples service times)
            "service_model": getattr(s.spec, "service_model", "deterministic"),
            "capacity_rps": self.capacity_rps,
            "capacity_measured_rps": self.capacity_measured_rps,
            "stages": [
                {k: v for k, v in p.to_dict().items() if k not in ("in_process", "served")} for p in self.profiles
            ],
            "fit": {
                "load_fractions": list(s.fit_fractions),
                "runs": [f"load{f:g}-b{b}" for f, b in fit_configs(s)],
                "mode": s.fit_mode,
                "repeats": s.repeats,
                "seed": s.seed + 1,
                "stages": [f.to_dict() for f in self.fits],
            },
            "calibrated_spec": str(self.calibrated_spec) if self.calibrated_spec else None,
            "written_spec": str(self.written_spec) if self.written_spec else None,
            "out": str(s.out),
        }

    def document(self) -> dict[str, Any]:
        """The ``--json`` document (`rlscale.calibrate.report.document`)."""
        s = self.settings
        done = len(self.results) == len(s.configs) and all(len(r.real_runs) == s.repeats for r in self.results)
        return report.document(self.results, self.meta(), complete=done)

    def write(self) -> None:
        """Every output for the configurations finished so far (atomically, each file whole)."""
        out = self.settings.out
        atomic_write_text(out / "results.csv", report.csv_text(self.results))
        atomic_write_text(out / "results.md", report.markdown(self.results, self.meta()))
        atomic_write_text(out / "calibrate.json", json.dumps(self.document(), indent=1) + "\n")
        diagnostics = self.fit_diagnostics + [{"config": r.config.name, "repeats": r.diagnostics} for r in self.results]
        atomic_write_text(out / "run.json", json.dumps(finite_or_none(diagnostics), indent=1) + "\n")
        if self.results:
            report.plot(self.results, out / "sim_vs_real.png")


def total_steps(settings: Settings) -> int:
    """How many times `run_calibration` advances its progress: each stage's profiles, then each real run."""
    profiles = sum((t.factory is not None) + 1 for t in settings.stages)
    return profiles + (len(fit_configs(settings)) + len(settings.configs)) * settings.repeats


def run_calibration(settings: Settings, progress: Callable[[str], None] = lambda detail: None) -> Calibration:
    """The whole calibration (module docstring).

    Args:
        settings: what to run.
        progress: called once per step (`total_steps`) with what finished.

    Raises:
        CalibrationInterrupted: SIGINT/SIGTERM (or a `KeyboardInterrupt`); the finished configurations are written.
        RlscaleError: a stage cannot be profiled or served as asked.
    """
    calibration = Calibration(settings)
    try:
        _run(calibration, progress)
    except KeyboardInterrupt as exc:
        calibration.write()
        finished = sum(len(r.real_runs) == settings.repeats for r in calibration.results)
        raise CalibrationInterrupted(
            signum_of(exc), finished, len(settings.configs), settings.out, len(calibration.results) - finished
        ) from None
    return calibration


def _run(calibration: Calibration, progress: Callable[[str], None]) -> None:
    s = calibration.settings
    log_path = s.out / SERVERS_LOG
    for target in s.stages:
        if not target.served_here:
            log.info(
                "stage %s is served by %s: its own batch settings apply; the simulator runs each configuration's batch",
                target.name,
                target.url,
            )
    for target, stage in zip(s.stages, s.spec.stages, strict=True):
        client = s.generator_cpu if s.generator_cpu != target.cpu else _other_cpu(s, target.cpu)
        calibration.profiles.append(
            profile_stage(
                target,
                pipeline=s.spec.name,
                batches=profile_batches(s.max_batch, stage.batch_sizes),
                warmup=s.warmup,
                repeats=s.profile_repeats,
                client_cpu=client,
                log_path=log_path,
                progress=progress,
            )
        )
    atomic_write_text(
        s.out / "profiles.json", json.dumps(finite_or_none([p.to_dict() for p in calibration.profiles]), indent=1)
    )
    calibration.capacity_measured_rps = capacity_rps(calibration.profiles)
    log.info(
        "bottleneck capacity at batch 1: %.1f rps measured (served p50), %.1f rps used",
        calibration.capacity_measured_rps,
        calibration.capacity_rps,
    )
    note = f"calibrated by rlscale calibrate from {s.spec.source} (profiles measured on this machine)"
    points = {where: {p.target.name: calibrated_points(p, where) for p in calibration.profiles} for where in WHERE}
    fit_runs = [
        _planned(calibration, Configuration(f"fit-load{f:g}-b{b}", float(f), b), s.seed + 1) for f, b in fit_configs(s)
    ]
    runs = [_planned(calibration, config, s.seed) for config in s.configs]
    specs = _write_specs(calibration, points, note)
    sims: dict[str, tuple[dict[str, Any], dict[str, np.ndarray], tuple[float, float]]] = {}
    # rounds: every fit run and configuration once, then again: the machine drifts over minutes (a server's time a
    # batch by 20-30% here), and rounds spread that drift over the fit and the configurations alike
    for repeat in range(s.repeats):
        for planned in fit_runs:
            _real(s, planned, repeat)
            progress(f"{planned.config.name} (fit) repeat {repeat + 1}/{s.repeats}")
        if fit_runs:
            fitted, calibration.fits = fit_stages(
                s.spec, points["in-process"], [_fit_run(s, p) for p in fit_runs], write_calibrated_spec, s.fit_mode
            )
            specs = _write_specs(calibration, {**points, "in-process": fitted}, note)
            sims.clear()  # the calibrated spec changed: simulate again
            calibration.fit_diagnostics = [{"config": p.config.name, "repeats": p.diagnostics} for p in fit_runs]
        for planned in runs:
            _real(s, planned, repeat)
            progress(f"{planned.config.name} repeat {repeat + 1}/{s.repeats}")
            calibration.results = [_result(calibration, p, specs, sims) for p in runs if p.loads]
            calibration.write()


@dataclass
class _Planned:
    """A configuration's window and arrivals, and its real runs so far."""

    config: Configuration
    trace: Trace
    times: np.ndarray
    seed: int
    loads: list[LoadResult] = field(default_factory=list)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)


def _planned(calibration: Calibration, config: Configuration, seed: int) -> _Planned:
    s = calibration.settings
    trace = window_trace(s.trace, s.window[0], s.window[1], config.load_fraction * calibration.capacity_rps)
    times = schedule_s(trace, s.arrivals, seed)
    log.info(
        "%s: batch %d, %d requests in %d s (peak %.1f rps, mean %.1f), arrivals seed %d",
        config.name,
        config.batch,
        times.size,
        s.window_s,
        trace.peak_rps,
        trace.mean_rps,
        seed,
    )
    return _Planned(config, trace, times, seed)


def _real(s: Settings, planned: _Planned, repeat: int) -> None:
    load, diag = real_run(s, planned.config, planned.trace, planned.times, repeat)
    planned.loads.append(load)
    planned.diagnostics.append(diag)


def _write_specs(
    calibration: Calibration, points: dict[str, dict[str, list[ProfilePoint]]], note: str
) -> dict[str, PipelineSpec]:
    """The calibrated specs into ``--out`` (and with ``--write-spec`` the calibrated one there)."""
    s = calibration.settings
    specs = {where: write_calibrated_spec(s.spec, points[where], s.out / name, note) for where, name in WHERE.items()}
    calibration.calibrated_spec = specs["in-process"].source
    if s.write_spec is not None:
        calibration.written_spec = write_calibrated_spec(s.spec, points["in-process"], s.write_spec, note).source
        log.info("calibrated spec written to %s", calibration.written_spec)
    return specs


def _fit_run(s: Settings, planned: _Planned) -> FitRun:
    """A fit configuration's real runs so far as the fit matches them (`rlscale.calibrate.fit.FitRun`)."""
    variants = [t.variant for t in s.stages]
    trace, batch, seed = planned.trace, planned.config.batch, planned.seed
    return FitRun(
        planned.config.name,
        [load.stage_s for load in planned.loads],
        [_median_cpu(planned.diagnostics, t.name) for t in s.stages],
        lambda spec: simulate(spec, variants, batch, trace, s.arrivals, seed),
    )


def _median_cpu(diags: Sequence[dict[str, Any]], stage: str) -> float | None:
    """The median over a fit configuration's repeats of a stage server's CPU a request (None: none known)."""
    cpus = [d.get("server", {}).get(stage, {}).get("cpu_per_request_s") for d in diags]
    known = [c for c in cpus if c is not None and math.isfinite(c)]
    return float(np.median(known)) if known else None


def fit_configs(s: Settings) -> list[tuple[float, int]]:
    """The fit runs' (load fraction, batch): batch 1 at each fit load, then the largest batch of the configurations
    at the highest fit load (where it is above 1)."""
    pairs = [(float(f), 1) for f in s.fit_fractions]
    if s.fit_fractions and s.max_batch > 1:
        pairs.append((float(max(s.fit_fractions)), s.max_batch))
    return pairs


def profile_batches(max_batch: int, spec_batches: Sequence[int]) -> list[int]:
    """The batch sizes a stage is profiled at: every one up to the largest a configuration runs (the simulator runs
    a partial batch of k at ``l(k)``) and the spec's own (which the calibrated spec must have points for)."""
    return sorted(set(range(1, max_batch + 1)) | set(spec_batches))


def _other_cpu(s: Settings, cpu: int | None) -> int:
    """A CPU other than ``cpu`` for a client, where there is one."""
    used = [t.cpu for t in s.stages if t.cpu is not None and t.cpu != cpu]
    return used[0] if used else s.generator_cpu


def planned_p99_s(spec: PipelineSpec, variants: list[str], batch: int, load_rps: float) -> float:
    """The planner's end-to-end latency of one replica of one core per stage at ``batch`` under ``load_rps``: the
    sum over stages of `rlscale.model.stage_latency_s` with the spec's batch timeout (IPA's full batch and fill
    wait for a p99 profile; queueing, overhead and delay for a calibrated one)."""
    return float(
        sum(
            stage_latency_s(st, v, batch, 1, load_rps, replicas=1, timeout_s=spec.batch_timeout_s)
            for st, v in zip(spec.stages, variants, strict=True)
        )
    )


WINDOW_QUANTILES = (0.5, 1.0 - 1e-6)
"""`window_planned_p99_s` looks for each second's quantile in this range (below it counts as the range's low end)."""


def window_planned_p99_s(spec: PipelineSpec, variants: list[str], batch: int, trace: Trace) -> float:
    """The planner's latency model over the window: each second's load gives its end-to-end latency distribution
    (the sum over stages of `rlscale.model.calibrated_latency_s` at each quantile, one replica of one core, the
    spec's batch timeout); the window's p99 is the latency that 1% of its requests exceed, each second weighing its
    requests. What the planners' steady state at the window's peak (`planned_p99_s`) says of a whole bursty window
    overstates it 1.5-3x: the peak lasts a second. A spec with a p99-only stage has no distribution: its peak
    figure."""
    stages = list(zip(spec.stages, variants, strict=True))
    if not all(is_calibrated(st, v) for st, v in stages):
        return planned_p99_s(spec, variants, batch, trace.peak_rps)
    loads, seconds = np.unique(trace.rps[trace.rps > 0], return_counts=True)
    if loads.size == 0:
        return planned_p99_s(spec, variants, batch, 0.0)
    weights = loads * seconds / float(np.sum(loads * seconds))
    low, high = WINDOW_QUANTILES

    def e2e(load: float, q: float) -> float:
        return sum(calibrated_latency_s(st, v, batch, 1, load, 1, spec.batch_timeout_s, quantile=q) for st, v in stages)

    def exceeding(load: float, x: float) -> float:  # the share of this load's requests slower than x
        if e2e(load, low) >= x:
            return 1.0 - low
        if e2e(load, high) <= x:
            return 1.0 - high
        a, b = low, high
        for _ in range(30):
            mid = 0.5 * (a + b)
            a, b = (mid, b) if e2e(load, mid) < x else (a, mid)
        return 1.0 - 0.5 * (a + b)

    def share(x: float) -> float:
        return float(sum(w * exceeding(float(load), x) for load, w in zip(loads, weights, strict=True)))

    target = 1.0 - TAIL_Q
    lo, hi = e2e(float(loads.min()), low), e2e(float(loads.max()), TAIL_Q)
    if not math.isfinite(hi):
        hi = lo * 2.0**20
        if share(hi) > target:
            return math.inf
    for _ in range(40):  # geometric: latencies span decades
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if share(mid) > target else (lo, mid)
    return hi


def _result(
    calibration: Calibration,
    planned: _Planned,
    specs: dict[str, PipelineSpec],
    sims: dict[str, tuple[dict[str, Any], dict[str, np.ndarray], tuple[float, float]]],
) -> ConfigResult:
    """One configuration's outcome from its real runs so far: simulated with each profile (``specs``: the
    calibrated ones, ``in-process`` and ``served``; cached in ``sims`` by configuration until the specs change)."""
    s = calibration.settings
    names = [t.name for t in s.stages]
    variants = [t.variant for t in s.stages]
    config, trace, times = planned.config, planned.trace, planned.times
    window_s = float(s.window_s)
    if config.name not in sims:
        figures, e2e = {}, {}
        sources = {"sim": specs["in-process"], "sim_served": specs["served"], "sim_uncalibrated": s.spec}
        for source, spec in sources.items():
            sim = simulate(spec, variants, config.batch, trace, s.arrivals, s.seed)
            e2e[source] = sim.e2e_s
            if sim.entry_s.shape != times.shape or not np.allclose(sim.entry_s, times):
                raise RlscaleError("the simulator's arrivals differ from the generator's schedule")
            figures[source] = {
                **run_figures(sim.stage_s, sim.stage_end_s[-1], sim.e2e_s, window_s, s.spec.sla_s, names),
                "mean_batch": dict(zip(names, sim.mean_batch, strict=True)),
            }
        plans = (
            window_planned_p99_s(specs["in-process"], variants, config.batch, trace),
            planned_p99_s(specs["in-process"], variants, config.batch, trace.peak_rps),
        )
        sims[config.name] = (figures, e2e, plans)
    figures, e2e, plans = sims[config.name]
    runs = [run_figures(x.stage_s, x.stage_end_s[-1], x.e2e_s, window_s, s.spec.sla_s, names) for x in planned.loads]
    result = ConfigResult(
        config=config,
        peak_rps=trace.peak_rps,
        mean_rps=trace.mean_rps,
        real_runs=runs,
        sims=figures,
        planned_p99_s=plans[0],
        planned_p99_s_at_peak=plans[1],
        planned_p99_s_uncalibrated=planned_p99_s(s.spec, variants, config.batch, trace.peak_rps),
        diagnostics=list(planned.diagnostics),
    )
    slas = {q: float(result.real["e2e"][q]) for q in SLA_QUANTILES}
    result.at_real_slas = {
        "sla_s": slas,
        "real": {
            q: float(np.median([violation_rate_at(x.e2e_s, slas[q]) for x in planned.loads])) for q in SLA_QUANTILES
        },
        **{source: {q: violation_rate_at(x, slas[q]) for q in SLA_QUANTILES} for source, x in e2e.items()},
    }
    return result


def _infer_url(base: str, model: str) -> str:
    return f"{base}/v2/models/{urllib.parse.quote(model, safe='')}/infer"


def _body(base: str, model: str, seed: int) -> bytes:
    """One request of one item for a stage's model (its metadata gives the input's name, shape and type)."""
    from rlscale.profiling.served import V2Client, infer_body, input_tensor

    client = V2Client(base, model)
    client.check_ready()
    return infer_body(input_tensor(client.metadata()), 1, seed=seed)


def real_run(
    s: Settings, config: Configuration, trace: Trace, times: np.ndarray, repeat: int
) -> tuple[LoadResult, dict[str, Any]]:
    """One real run of a configuration on freshly started servers; what the generator measured and the run's
    diagnostics."""
    servers = {
        t.name: StageServer(
            s.spec.name, t.name, t.factory, t.variant, t.cpu, config.batch, s.spec.batch_timeout_s, s.out / SERVERS_LOG
        )
        for t in s.stages
        if t.served_here and t.factory is not None and t.cpu is not None
    }
    ours = list(servers.values())
    start_all(ours)
    before: list[dict[str, float]] = []
    cpu_before: list[float] = []

    def snapshot() -> None:
        before.extend(server.metrics() for server in ours)
        cpu_before.extend(server.cpu_s() for server in ours)

    try:
        bases = [servers[t.name].url if t.name in servers else t.url for t in s.stages]
        urls = [_infer_url(base, t.model_name) for base, t in zip(bases, s.stages, strict=True)]
        bodies = [_body(base, t.model_name, i) for i, (base, t) in enumerate(zip(bases, s.stages, strict=True))]
        pids = [server.pid for server in ours]
        with pinned(s.generator_cpu):
            load = run_load(urls, bodies, times, warmup=warmup_times(trace.mean_rps), before=snapshot)
        cpu = [server.cpu_s() - c for server, c in zip(ours, cpu_before, strict=True)]
        after = [server.metrics() for server in ours]
    finally:
        codes = stop_all(ours)
    if any(code not in (0, None) for code in codes):
        log.warning("%s repeat %d: server exit codes %s (%s)", config.name, repeat + 1, codes, SERVERS_LOG)
    late = load.lateness_s[~np.isnan(load.lateness_s)]
    errors = [e for e in load.errors if e]
    if errors:
        log.warning("%s repeat %d: %d requests failed, first: %s", config.name, repeat + 1, len(errors), errors[0])
    diagnostics = {
        "repeat": repeat + 1,
        "server": {
            name: server_summary(b, a, load.wall_s, c)
            for name, b, a, c in zip(servers, before, after, cpu, strict=True)
        },
        "server_exit_codes": codes,
        "server_pids": pids,
        "lateness_s": {
            "p50": float(np.percentile(late, 50)) if late.size else math.nan,
            "p99": float(np.percentile(late, 99)) if late.size else math.nan,
            "max": float(late.max()) if late.size else math.nan,
        },
        "generator_cpu": s.generator_cpu,
        "generator_cpu_s": load.cpu_s,
        "generator_wall_s": load.wall_s,
        "generator_cores": load.cpu_s / load.wall_s if load.wall_s else math.nan,
        "errors": len(errors),
        "first_errors": errors[:5],
    }
    return load, diagnostics
