"""The simulator as a `Cluster` (DESIGN.md section 1): one trace's requests (`rlscale.sim.arrivals`) through the
event loop (`rlscale.sim.engine`), observed as `PipelineState` and scored as `IntervalMetrics`
(`rlscale.sim.metrics`). Deterministic for a seed: the arrivals draw from ``numpy.random.default_rng(seed)``, the
``empirical`` service times from a stream of their own spawned from the same seed (`SeedSequence.spawn`), so the
arrivals are the same whatever the service model draws.
"""

from __future__ import annotations

import math

import numpy as np

from rlscale.errors import RlscaleError
from rlscale.sim.arrivals import ARRIVAL_MODES, request_table
from rlscale.sim.engine import Engine
from rlscale.sim.metrics import interval_metrics
from rlscale.sim.replicas import StageState
from rlscale.spec import PipelineSpec
from rlscale.types import IntervalMetrics, PipelineConfig, PipelineState
from rlscale.workload import Trace

HISTORY_S = 3600


class Simulator:
    """A `Cluster` backed by the discrete-event simulation of one trace.

    Args:
        spec: the pipeline.
        trace: the workload.
        initial: configuration in force (and warm) at time 0.
        seed: seed of every random draw (arrivals, and the service times of the ``empirical`` model).
        arrivals: ``even`` (IPA's generator) or ``poisson``.
        interval_s: adaptation interval; defaults to the spec's.
        log_batches: keep every batch as ``(stage, start_s, finish_s, size, replica_seq, variant)`` in
            ``batch_log`` (for tests and debugging; off by default because it costs time).

    The per-request outcome arrays (``finish_s``, ``stage_in_s``, ``acc_rank``, ``acc_raw``, ``batch_size``,
    ``dropped_at``, ``drop_time_s``) and the request table's ``entry_s`` / ``deadline_s`` (the drop deadline) /
    ``slo_deadline_s`` / ``budget_s`` (per-request SLOs; None without) are attributes, as are
    ``history`` (every interval's metrics), ``reconfigurations`` and ``events`` (request-stage events processed).
    """

    def __init__(
        self,
        spec: PipelineSpec,
        trace: Trace,
        initial: PipelineConfig,
        *,
        seed: int = 0,
        arrivals: str = "even",
        interval_s: float | None = None,
        log_batches: bool = False,
    ) -> None:
        if arrivals not in ARRIVAL_MODES:
            raise RlscaleError(f"arrivals must be one of {', '.join(ARRIVAL_MODES)}, got {arrivals!r}")
        if len(initial.stages) != len(spec.stages):
            raise RlscaleError(f"initial config has {len(initial.stages)} stages, pipeline has {len(spec.stages)}")
        self.spec = spec
        self.trace = trace
        self.interval_s = float(interval_s or spec.interval_s)
        self.rng = np.random.default_rng(seed)
        self.requests = request_table(spec, trace, self.rng, arrivals)
        service_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
        self.engine = Engine(spec, self.requests, initial, log_batches=log_batches, service_rng=service_rng)
        self.outcomes = self.engine.outcomes
        # the request table and the outcomes, under the names the rest of the code reads
        self.entry_s = self.requests.entry_s
        self.counts = self.requests.counts
        self.deadline_s = self.requests.drop_deadline_s
        self.slo_deadline_s = self.requests.slo_deadline_s  # None without per-request SLOs
        self.budget_s = self.requests.budget_s
        self.n_requests = self.requests.n_requests
        o = self.outcomes
        self.finish_s, self.stage_in_s = o.finish_s, o.stage_in_s
        self.acc_rank, self.acc_raw, self.batch_size = o.acc_rank, o.acc_raw, o.batch_size
        self.dropped_at, self.drop_time_s = o.dropped_at, o.drop_time_s
        self.config = initial
        self.time_s = 0.0
        self.last: IntervalMetrics | None = None
        self.history: list[IntervalMetrics] = []
        self.reconfigurations = 0

    # ------------------------------------------------------------------ engine state, read-only

    @property
    def stages(self) -> list[StageState]:
        return self.engine.stages

    @property
    def events(self) -> int:
        return self.engine.events

    @property
    def batch_log(self) -> list[tuple[int, float, float, int, int, str]] | None:
        return self.engine.batch_log

    @property
    def fed(self) -> int:
        """Requests fed to the pipeline so far (ids ``0 .. fed - 1``)."""
        return self.engine.fed

    _next_arrival = fed

    # ------------------------------------------------------------------ Cluster protocol

    @property
    def duration_s(self) -> float:
        return float(self.trace.duration_s)

    @property
    def done(self) -> bool:
        """True once the trace has been fully played (decisions stop here; `drain` finishes the rest)."""
        return self.time_s >= self.duration_s - 1e-9

    def in_flight(self) -> int:
        return self.engine.in_flight()

    def observe(self) -> PipelineState:
        t = int(math.ceil(self.time_s - 1e-9))
        lo = max(0, t - HISTORY_S)
        hist = self.trace.rps[lo : min(t, self.trace.rps.size)].astype(float)
        return PipelineState(
            time_s=self.time_s,
            interval_s=self.interval_s,
            arrival_rps=hist,
            config=self.config,
            last=self.last,
            in_flight=self.in_flight(),
        )

    def apply(self, config: PipelineConfig) -> None:
        """Start moving to ``config`` at the current time (make-before-break)."""
        if len(config.stages) != len(self.spec.stages):
            raise RlscaleError(f"config has {len(config.stages)} stages, pipeline has {len(self.spec.stages)}")
        if config == self.config:
            return
        self.engine.reconfigure(self.time_s, self.config, config)
        self.config = config
        self.reconfigurations += 1

    def drain(self) -> None:
        """After the trace: hold the configuration until every request has completed or been dropped.

        Bounded by the drop limit plus three intervals, so a stage left with no replicas cannot loop forever.
        """
        limit = self.duration_s + self.spec.drop_limit_s + 3 * self.interval_s
        while self.in_flight() > 0 and self.time_s < limit:
            self.step()

    def step(self) -> IntervalMetrics:
        """Simulate ``[time_s, time_s + interval_s)`` and return its metrics."""
        start = self.time_s
        end = start + self.interval_s
        counters = self.engine.run_interval(start, end)
        metrics = interval_metrics(self.spec, self.trace, self.requests, self.outcomes, counters, self.config)
        self.time_s = end
        self.last = metrics
        self.history.append(metrics)
        return metrics
