"""Values that cross module boundaries: configurations, what a policy sees, and per-interval metrics."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class StageConfig:
    """How one stage runs: ``replicas`` replicas of ``variant``, each with ``cores`` cores, batching up to ``batch``."""

    variant: str
    batch: int
    replicas: int
    cores: int

    def with_(self, **changes) -> StageConfig:
        return replace(self, **changes)

    def __str__(self) -> str:
        return f"{self.variant} b{self.batch} x{self.replicas} c{self.cores}"


@dataclass(frozen=True)
class PipelineConfig:
    """One `StageConfig` per stage, in pipeline order."""

    stages: tuple[StageConfig, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))

    @property
    def total_cores(self) -> int:
        return sum(s.replicas * s.cores for s in self.stages)

    @property
    def total_batch(self) -> int:
        return sum(s.batch for s in self.stages)

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(s.variant for s in self.stages)

    def __str__(self) -> str:
        return " | ".join(map(str, self.stages))


@dataclass(frozen=True)
class StageMetrics:
    """One stage over one interval.

    Attributes:
        served: requests that finished service at this stage during the interval.
        dropped: requests dropped while queued at this stage.
        latency_p50_s / latency_p99_s: stage latency (queue wait + service) of the served requests; NaN if none.
        queue_len: requests waiting at the end of the interval.
        utilisation: busy replica-seconds / serving replica-seconds.
        replicas_serving: replicas able to serve at the end of the interval.
        mean_batch: mean size of the batches started in the interval; NaN if none.
    """

    served: int
    dropped: int
    latency_p50_s: float
    latency_p99_s: float
    queue_len: int
    utilisation: float
    replicas_serving: int
    mean_batch: float


@dataclass(frozen=True)
class IntervalMetrics:
    """The whole pipeline over one interval ``[start_s, end_s)``.

    Attributes:
        arrivals: requests that entered the pipeline.
        completed: requests that left the last stage.
        dropped: requests dropped at any stage (age > drop_limit_s).
        late: completed requests whose end-to-end latency exceeded the SLA.
        sla_violation_rate: (late + dropped) / arrivals (0 when nothing arrived).
        accuracy: mean pipeline accuracy (the spec's method) of the completed requests; NaN if none.
        cost_cores: allocated cores averaged over the interval (replicas starting up or draining count).
        objective: alpha*accuracy - beta*cost_cores - gamma*total batch.
        score: objective - sla_penalty * sla_violation_rate.
    """

    start_s: float
    end_s: float
    arrivals: int
    completed: int
    dropped: int
    late: int
    sla_violation_rate: float
    e2e_p50_s: float
    e2e_p99_s: float
    accuracy: float
    cost_cores: float
    objective: float
    score: float
    stages: tuple[StageMetrics, ...]
    arrival_rps_max: float = 0.0


@dataclass(frozen=True)
class PipelineState:
    """What a policy may see at a decision point.

    Attributes:
        time_s: simulated (or wall-clock) time of the decision.
        interval_s: length of the coming interval.
        arrival_rps: per-second arrival counts observed so far (most recent last; at most the last hour).
        config: the configuration in force (the target of the last decision).
        last: metrics of the interval that just ended, or None before the first.
        in_flight: requests inside the pipeline now.
    """

    time_s: float
    interval_s: float
    arrival_rps: np.ndarray = field(repr=False)
    config: PipelineConfig
    last: IntervalMetrics | None
    in_flight: int = 0
