"""`KubernetesCluster`: the `Cluster` protocol on a real cluster. Prometheus in, Deployments out.

``observe`` reads the configuration from the stage Deployments and the last window's metrics from Prometheus;
``apply`` patches the Deployments; ``step`` waits out the interval (wall clock) and returns its metrics. Reads
raise `MetricsUnavailable` or `KubeApiError` (both say whether to retry); ``apply`` returns an `ApplyOutcome`.
A load that is missing, non-finite or negative (the arrival rate, any point of its history) or a queue length
that is, raises `MetricsUnavailable` (see `rlscale.kube.prometheus`): no decision is made on it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rlscale.kube.actuator import ApplyOutcome, DeploymentActuator
from rlscale.kube.prometheus import PrometheusReader, duration, le_pattern
from rlscale.model import expected_accuracy, objective_of, score
from rlscale.spec import PipelineSpec
from rlscale.types import IntervalMetrics, PipelineConfig, PipelineState, StageMetrics

log = logging.getLogger(__name__)


def _utilisation(busy_replicas: float, serving: int) -> float:
    """Busy replicas over serving ones, capped at 1; NaN when the busy metric is missing (no data: a policy that
    reads utilisation, the HPA, holds instead of seeing 0%)."""
    if not serving:
        return 0.0
    return min(1.0, busy_replicas / serving) if math.isfinite(busy_replicas) else math.nan


def _zero_if_nan(value: float) -> float:
    return 0.0 if math.isnan(value) else value


@dataclass
class KubernetesCluster:
    """A pipeline running on Kubernetes, seen through Prometheus.

    Attributes:
        spec: the pipeline.
        reader: its Prometheus reader.
        actuator: its Deployment actuator.
        interval_s: adaptation interval (pipeline seconds).
        window_s: the rate/quantile window of every query (pipeline seconds); it must span two scrapes.
        history_s: seconds of per-second arrival history handed to policies (predictors look back 120 s).
        speedup: pipeline seconds per wall-clock second: 1 for a real cluster; a twin or a replay that runs
            N times faster than real time is driven with N (durations shrink N-fold, rates are read as they are).
        clock / sleep: wall clock and sleep (replaceable in tests).
    """

    spec: PipelineSpec
    reader: PrometheusReader
    actuator: DeploymentActuator
    interval_s: float
    window_s: float
    history_s: int = 300
    speedup: float = 1.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _t0: float = field(default=0.0, init=False, repr=False)
    _last_observe: float | None = field(default=None, init=False, repr=False)
    _warned_sla_bucket: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self._t0 = self.clock()

    @property
    def window(self) -> str:
        """The query window as a PromQL duration of wall-clock time."""
        return duration(self.window_s / self.speedup)

    def now_s(self) -> float:
        """Pipeline seconds since this cluster object was made."""
        return (self.clock() - self._t0) * self.speedup

    # ------------------------------------------------------------------ Cluster protocol

    @property
    def off_spec(self) -> dict[str, str]:
        """Stages whose Deployment the last read found off-spec (`rlscale.kube.objects.read_stage`), with why."""
        return dict(self.actuator.off_spec)

    @property
    def done(self) -> bool:
        """A live cluster's workload never ends."""
        return False

    def observe(self) -> PipelineState:
        # Prometheus first: when it is down there is nothing to decide on, and no reason to call the API server
        history = self.reader.arrival_history_rps(
            self.spec.stages[0].name,
            seconds=self.history_s / self.speedup,
            step_s=1.0 / self.speedup,  # one value per pipeline second, as the simulator gives policies
            window=self.window,
        )
        config, ready = self.actuator.read()
        self._last_observe = self.clock()
        last = self.metrics(config, ready)
        in_flight = sum(m.queue_len for m in last.stages)
        # the load floor (the history's peak over the last interval) never falls below what the instant arrival
        # rate shows: a stale or undercounting history must not let the safety layer protect less than that
        history = history.copy()
        history[-1] = max(history[-1], last.arrival_rps_max)
        return PipelineState(
            time_s=self.now_s(),
            interval_s=self.interval_s,
            arrival_rps=history,
            config=config,
            last=last,
            in_flight=in_flight,
        )

    def apply(self, config: PipelineConfig) -> ApplyOutcome:
        return self.actuator.apply(config)

    def step(self) -> IntervalMetrics:
        """Wait until one interval has passed since the last observation, then read its metrics."""
        if self._last_observe is not None:
            self.sleep(max(0.0, self._last_observe + self.interval_s / self.speedup - self.clock()))
        self._last_observe = self.clock()
        config, ready = self.actuator.read()
        return self.metrics(config, ready)

    # ------------------------------------------------------------------ metrics

    def metrics(self, config: PipelineConfig, ready: list[int | None]) -> IntervalMetrics:
        """The last window's metrics, in the simulator's units (counts are rates times the interval).

        Raises:
            MetricsUnavailable: Prometheus did not answer, or has no arrival rate or queue length.
        """
        r, w, iv = self.reader, self.window, self.interval_s
        stages, rates = [], []
        for st, sc, n_ready in zip(self.spec.stages, config.stages, ready, strict=True):
            rate = r.arrival_rate_rps(st.name, window=w)
            rates.append(rate)
            queue = r.queue_length(st.name)
            serving = sc.total_replicas if n_ready is None else n_ready
            busy = r.query("busy_rate", optional=True, stage=st.name, window=w)
            stages.append(
                StageMetrics(
                    served=int(round(rate * iv)),
                    dropped=0,
                    latency_p50_s=r.latency_quantile_s(st.name, 0.5, w, optional=True),
                    latency_p99_s=r.latency_quantile_s(st.name, 0.99, w, optional=True),
                    queue_len=queue,
                    utilisation=_utilisation(busy, serving),
                    replicas_serving=serving,
                    mean_batch=math.nan,
                )
            )
        arrival = rates[0]  # what enters the pipeline is what arrives at its first stage
        completed = _zero_if_nan(r.query("completed_rate", optional=True, window=w))
        late_raw = r.query("late_rate", optional=True, window=w, sla=le_pattern(self.spec.sla_s))
        if math.isnan(late_raw) and completed > 0 and not self._warned_sla_bucket:
            self._warned_sla_bucket = True
            log.warning(
                "requests complete but no e2e latency bucket has le=%g (the SLA): late requests read as 0; give "
                "rlscale_e2e_latency_seconds a bucket boundary at the SLA or override the late_rate template",
                self.spec.sla_s,
            )
        late = max(0.0, _zero_if_nan(late_raw))
        dropped = _zero_if_nan(r.query("dropped_rate", optional=True, window=w))
        violation = min(1.0, (late + dropped) / arrival) if arrival > 0 else 0.0
        # cost in allocated cores, as the simulator counts it: a Deployment's ready pods (old ones included while a
        # rollout or a scale-down is under way) or its configured replicas, whichever is more
        # a pooled stage's cost is over all its pools' Deployments, warm and draining ones too (the actuator's read)
        pooled = getattr(self.actuator, "allocated_cores", {})
        allocated = sum(
            pooled[st.name] if st.name in pooled else max(sc.replicas, n or 0) * sc.cores
            for st, sc, n in zip(self.spec.stages, config.stages, ready, strict=True)
        )
        accuracy = expected_accuracy(self.spec, config)  # share-weighted over pools; spec.accuracy without
        objective = objective_of(self.spec, accuracy, allocated, config.total_batch)
        now = self.now_s()
        return IntervalMetrics(
            start_s=now - self.window_s,
            end_s=now,
            arrivals=int(round(arrival * iv)),
            completed=int(round(completed * iv)),
            dropped=int(round(dropped * iv)),
            late=int(round(late * iv)),
            sla_violation_rate=violation,
            e2e_p50_s=r.query("e2e_latency_quantile", optional=True, window=w, q=0.5),
            e2e_p99_s=r.query("e2e_latency_quantile", optional=True, window=w, q=0.99),
            accuracy=accuracy,
            cost_cores=float(allocated),
            objective=objective,
            score=score(self.spec, objective, violation),
            stages=tuple(stages),
            arrival_rps_max=arrival,
        )
