"""Run one episode: a policy against a cluster over a trace, and the summary record of DESIGN.md section 9."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlscale.control import Controller, DecisionError, Limits, Outcome, as_controller, is_rollout, resized
from rlscale.interfaces import Cluster, Policy
from rlscale.model import max_capacity, plan_fixed_variants
from rlscale.sim.cluster import Simulator
from rlscale.sim.metrics import run_summary
from rlscale.spec import PipelineSpec
from rlscale.timeline import StepNote, row
from rlscale.types import IntervalMetrics, PipelineConfig, PipelineState
from rlscale.workload import Trace

log = logging.getLogger(__name__)

RECORD_KEYS = (
    "pipeline",
    "trace",
    "load_scale",
    "policy",
    "guard",
    "seed",
    "requests",
    "completed",
    "dropped",
    "late",
    "in_flight",
    "in_flight_share",
    "sla_violation_rate",
    "accuracy",
    "cost_cores",
    "objective",
    "score",
    "p50_latency_s",
    "p99_latency_s",
    "decision_ms_p50",
    "decision_ms_p99",
    "reconfigurations",
    "rollouts",
    "scalings",
    "damped_decisions",
    "budget_capped_decisions",
    "budget_limited_intervals",
    "budget_breaches",
    "budget_surge_intervals",
    "duration_s",
    "intervals",
    "stages",
)
# keys the record adds for a spec with pools (some stage's ``max_pools > 1``), after ``reconfigurations``
POOLED_RECORD_KEYS = ("mixed_share",)
# keys the record adds for a spec with ``in_place_resize``, after ``scalings``
RESIZE_RECORD_KEYS = ("resizes",)


@dataclass
class RunResult:
    """Everything one episode produced: the summary record, per-interval metrics and the decisions."""

    record: dict[str, Any]
    intervals: list[IntervalMetrics]
    configs: list[PipelineConfig]  # config in force during each interval
    decision_ms: list[float] = field(default_factory=list)
    simulator: Simulator | None = field(default=None, repr=False)
    steps: list[StepNote] = field(default_factory=list)  # the control step at the end of each trace interval

    def timeline_rows(self, spec: PipelineSpec) -> list[dict[str, str]]:
        """One `rlscale.timeline` row per simulated interval, drain included (``phase`` says which)."""
        rows = []
        in_flight = 0
        for i, m in enumerate(self.intervals):
            # every request arrives in one interval and completes or drops in one: the running balance is what
            # is inside the pipeline at the interval's end (the engine's own count, checked in the tests)
            in_flight += m.arrivals - m.completed - m.dropped
            trace = i < len(self.configs)
            rows.append(
                row(
                    spec,
                    m,
                    self.configs[i] if trace else self.configs[-1],
                    time_s=m.end_s,
                    phase="trace" if trace else "drain",
                    in_flight=in_flight,
                    note=self.steps[i] if i < len(self.steps) else None,
                )
            )
        return rows


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else math.nan


def summarise(
    sim: Simulator,
    policy_name: str,
    seed: int,
    decision_ms: list[float],
    configs: list[PipelineConfig],
    guard: str = "none",
    limits: Limits | None = None,
) -> dict[str, Any]:
    """The run's summary record: identity and decision fields here, the metrics from `rlscale.sim.metrics`.

    Reconfigurations are counted apart: ``rollouts`` are changes in force that roll out new pods in some stage
    (variant, batch or cores), ``scalings`` change replicas only; ``reconfigurations`` is their sum. The budget
    fields: ``budget_limited_intervals``, trace intervals whose peak load exceeded the highest capacity any
    configuration within the core budget has (the budget, not the policy, bounded the service);
    ``budget_breaches``, intervals whose configuration in force held more cores than the budget (0: the cap
    holds); ``budget_surge_intervals``, intervals whose allocated cores, time-averaged, exceeded the budget,
    which only the make-before-break overlap of a rollout (old pods serving until the new ones are ready) can
    cause: the budget caps configurations, not that transient surge (size a quota with room for it). A spec with
    pools adds ``mixed_share`` (`POOLED_RECORD_KEYS`), the share of intervals in which some stage ran two or more
    pools. With the spec's ``in_place_resize``, a change of cores alone is no rollout (`rlscale.control.rolled_out`)
    and counts with the scalings; the record adds ``resizes`` (`RESIZE_RECORD_KEYS`), the changes that resized
    some pool in place.

    Args:
        configs: the configuration in force during each interval of the trace (drain excluded).
        limits: the run's hard limits (for their counts).
    """
    metrics = run_summary(sim.spec, sim.requests, sim.outcomes, sim.history, configs)
    changes = [(a, b) for a, b in zip(configs, configs[1:], strict=False) if a != b]
    in_place = sim.spec.in_place_resize
    rollouts = sum(1 for a, b in changes if is_rollout(a, b, in_place=in_place))
    budget = sim.spec.core_budget
    capacity = max_capacity(sim.spec).capacity_rps
    trace_iv = sim.history[: len(configs)]
    ms = np.asarray(decision_ms)
    fields = {
        "pipeline": sim.spec.name,
        "trace": sim.trace.name,
        "load_scale": sim.trace.load_scale,
        "policy": policy_name,
        "guard": guard,
        "seed": seed,
        **metrics,
        "decision_ms_p50": _pct(ms, 50),
        "decision_ms_p99": _pct(ms, 99),
        "reconfigurations": sim.reconfigurations,
        "rollouts": rollouts,
        "scalings": len(changes) - rollouts,
        "resizes": sum(1 for a, b in changes if any(resized(x, y) for x, y in zip(a.stages, b.stages, strict=True)))
        if in_place
        else 0,
        "damped_decisions": limits.damped if limits is not None else 0,
        "budget_capped_decisions": limits.budget_capped if limits is not None else 0,
        "budget_limited_intervals": sum(1 for m in trace_iv if m.arrival_rps_max > capacity),
        "budget_breaches": sum(1 for c in configs if c.total_cores > budget),
        "budget_surge_intervals": sum(1 for m in trace_iv if m.cost_cores > budget + 1e-9),
        "duration_s": sim.trace.duration_s,
        "intervals": len(configs),
    }
    keys = RECORD_KEYS
    if sim.spec.pooled:
        i = RECORD_KEYS.index("reconfigurations") + 1
        keys = (*RECORD_KEYS[:i], *POOLED_RECORD_KEYS, *RECORD_KEYS[i:])
    if in_place:
        i = keys.index("scalings") + 1
        keys = (*keys[:i], *RESIZE_RECORD_KEYS, *keys[i:])
    return {key: fields[key] for key in keys}


def warm_state(spec: PipelineSpec, trace: Trace, interval_s: float | None = None) -> PipelineState:
    """The state a policy sees for its first, warm decision at time 0.

    The run starts as if the pipeline had been serving the first interval's load for a while: the history holds
    the first interval's arrivals and the configuration in force is the cheapest one sized for them. The
    policy's answer is installed warm (no startup delay), so no policy is charged for a cold start.
    """
    interval = float(interval_s or spec.interval_s)
    first = trace.rps[: max(1, int(math.ceil(interval)))].astype(float)
    cheapest = [st.cheapest_variant for st in spec.stages]
    bootstrap = plan_fixed_variants(spec, cheapest, float(first.max()) if first.size else 0.0)
    return PipelineState(time_s=0.0, interval_s=interval, arrival_rps=first, config=bootstrap, last=None)


def play(
    cluster: Cluster, controller: Controller, state: PipelineState | None = None
) -> Iterator[tuple[Outcome, IntervalMetrics]]:
    """The episode loop: until the workload is over, one control step (``controller.step``), then one interval of
    the cluster; yields the step's outcome and the interval's metrics.

    The first step decides on ``state`` when given (the Gymnasium env's start: the warm history of `warm_state`
    before any interval has run), every later one on what the cluster shows. A cluster without ``done`` (one that
    never ends) plays nothing. `run_episode` and the env's IPA baseline (`envs.pipeline_env.baseline_scores`)
    both run through it.
    """
    while not getattr(cluster, "done", True):
        outcome = controller.step(cluster, state)
        state = None
        yield outcome, cluster.step()


def run_episode(
    spec: PipelineSpec,
    trace: Trace,
    policy: Policy,
    *,
    seed: int = 0,
    arrivals: str = "even",
    initial: PipelineConfig | None = None,
) -> RunResult:
    """Play ``trace`` against ``policy`` on the simulator, then drain, and summarise.

    ``policy`` is a `rlscale.control.Controller` (a policy behind its guard, as the registry builds them) or a
    bare policy (no guard); every interval is one `rlscale.control.step`.

    The first decision is taken on `warm_state` and installed warm (unless ``initial`` is given). Then every
    interval: simulate it, observe, decide (timed), apply. After the trace, the last configuration is held until
    every request has completed or been dropped.
    """
    try:
        return _run(spec, trace, as_controller(policy), seed, arrivals, initial)
    except DecisionError as exc:  # offline, a policy's error is the run's error (the sidecar holds instead)
        raise exc.cause from None


def _run(spec, trace, controller, seed, arrivals, initial) -> RunResult:
    decision_ms: list[float] = []
    limits = controller.fresh_limits(spec)  # the episode's own: damping state starts empty
    if initial is None:  # decided and limited as every step is, installed warm
        first = controller.warm_start(warm_state(spec, trace))
        initial = first.config
        decision_ms.append(first.decision_s * 1e3)
    sim = Simulator(spec, trace, initial, seed=seed, arrivals=arrivals)
    configs: list[PipelineConfig] = [initial]
    steps: list[StepNote] = []
    sim.step()
    for outcome, _ in play(sim, controller):  # the one control step, then the interval it decided
        decision_ms.append(outcome.decision.decision_s * 1e3)
        steps.append(StepNote.of(outcome))
        if outcome.changed:
            log.debug("t=%6.0fs %s -> %s", outcome.state.time_s, outcome.state.config, outcome.config)
        configs.append(sim.config)  # in force during the interval just played (an interval changes no config)
    sim.drain()
    record = summarise(sim, controller.name, seed, decision_ms, configs, controller.guard_name, limits)
    return RunResult(
        record=record,
        intervals=list(sim.history),
        configs=configs,
        decision_ms=decision_ms,
        simulator=sim,
        steps=steps,
    )
