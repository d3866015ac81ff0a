"""Values that cross module boundaries: configurations, what a policy sees, and per-interval metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from rlscale.errors import RlscaleError

# shares of a stage's pools must sum to 1 within this
SHARE_TOLERANCE = 1e-9


class ConfigError(RlscaleError, ValueError):
    """A configuration that cannot exist: pools of one stage with a repeated variant, or shares that are not > 0
    or do not sum to 1."""


@dataclass(frozen=True)
class StageConfig:
    """How one stage runs: ``replicas`` replicas of ``variant``, each with ``cores`` cores, batching up to ``batch``.

    A stage may serve its load with several **variant pools** (InfAdapter's mix, DESIGN.md section 3): the four
    fields are the first pool, ``share`` the fraction of the stage's requests it serves, and ``mix`` the further
    pools, each a `StageConfig` with its own ``share`` and an empty ``mix``. A single-pool stage (every policy
    but the pooled ones) has ``share`` 1 and no ``mix``, exactly as before pools existed. The pools of a stage
    are keyed by variant (one Kubernetes Deployment per (stage, variant)), so no two share a variant; their
    shares are > 0 and sum to 1 (checked by `PipelineConfig`, where a stage is complete; a lone pool of a mix
    has a share below 1).

    Attributes:
        variant / batch / replicas / cores: the first pool.
        share: the first pool's share of the stage's requests, in (0, 1].
        mix: the further pools, in order (empty for a single-pool stage).
    """

    variant: str
    batch: int
    replicas: int
    cores: int
    share: float = 1.0
    mix: tuple[StageConfig, ...] = ()

    def __post_init__(self) -> None:
        if self.mix:
            object.__setattr__(self, "mix", tuple(self.mix))
            self._check_pools()
        elif not 0.0 < self.share <= 1.0 + SHARE_TOLERANCE:  # also NaN
            raise ConfigError(f"pool {self.variant}: share {self.share!r} is not in (0, 1]")

    def _check_pools(self) -> None:
        seen = {self.variant}
        for p in self.mix:
            if p.mix:
                raise ConfigError(f"pool {p.variant}: a pool of a mix has no mix of its own")
            if p.variant in seen:
                raise ConfigError(f"variant {p.variant} runs in two pools of one stage")
            seen.add(p.variant)
        shares = [self.share, *(p.share for p in self.mix)]
        if not all(0.0 < s <= 1.0 for s in shares):
            raise ConfigError(f"pool shares {shares} are not all in (0, 1]")
        if abs(math.fsum(shares) - 1.0) > SHARE_TOLERANCE:
            raise ConfigError(f"pool shares {shares} sum to {math.fsum(shares)!r}, not 1")

    @classmethod
    def of_pools(cls, pools: tuple[StageConfig, ...] | list[StageConfig]) -> StageConfig:
        """The stage configuration of ``pools`` (each with its share, in order): the first one carries the rest as
        its ``mix``. One pool of share 1 gives it back unchanged."""
        if not pools:
            raise ConfigError("a stage needs at least one pool")
        first, *rest = pools
        return replace(first, mix=tuple(replace(p, mix=()) for p in rest))

    @property
    def pools(self) -> tuple[StageConfig, ...]:
        """Every pool of the stage, each with its share and no mix: this one as a single pool, then ``mix``."""
        if not self.mix:
            return (self,)
        return (replace(self, mix=()), *self.mix)

    @property
    def pooled(self) -> bool:
        """Whether the stage runs two or more pools."""
        return bool(self.mix)

    @property
    def total_cores(self) -> int:
        """Cores over every pool, ``sum(replicas * cores)``: the stage's cost."""
        total = self.replicas * self.cores
        for p in self.mix:
            total += p.replicas * p.cores
        return total

    @property
    def total_replicas(self) -> int:
        """Replicas over every pool."""
        return self.replicas + sum(p.replicas for p in self.mix)

    @property
    def total_batch(self) -> float:
        """The stage's batch term of the objective: the batch size a request meets here, the share-weighted mean
        of the pools' batch sizes (``batch`` itself, an int, for a single pool).

        Weighted by share, not summed over pools, so that splitting a stage into pools of the same batch size
        leaves the term unchanged: a mix is judged on its accuracy and its cores, not penalised per pool.
        """
        if not self.mix:
            return self.batch
        return math.fsum(p.share * p.batch for p in self.pools)

    def with_(self, **changes) -> StageConfig:
        return replace(self, **changes)

    def __str__(self) -> str:
        if not self.mix:
            return self._pool_str()
        return " + ".join(f"{p._pool_str()} {p.share:.0%}" for p in self.pools)

    def _pool_str(self) -> str:
        return f"{self.variant} b{self.batch} x{self.replicas} c{self.cores}"


@dataclass(frozen=True)
class PipelineConfig:
    """One `StageConfig` per stage, in pipeline order."""

    stages: tuple[StageConfig, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        for i, s in enumerate(self.stages):
            if not s.mix and s.share != 1.0 and abs(s.share - 1.0) > SHARE_TOLERANCE:
                raise ConfigError(f"stage {i}: a single pool serves the whole load (share 1), got {s.share!r}")

    @property
    def total_cores(self) -> int:
        """Cores over every pool of every stage."""
        return sum(s.total_cores for s in self.stages)

    @property
    def total_batch(self) -> float:
        """The objective's batch term B: the stages' `StageConfig.total_batch` summed (an int without pools)."""
        return sum(s.total_batch for s in self.stages)

    @property
    def variants(self) -> tuple[str, ...]:
        """The first pool's variant of every stage (every stage's variant without pools)."""
        return tuple(s.variant for s in self.stages)

    @property
    def pooled(self) -> bool:
        """Whether some stage runs two or more pools."""
        return any(s.mix for s in self.stages)

    def __str__(self) -> str:
        return " | ".join(map(str, self.stages))


@dataclass(frozen=True)
class PoolMetrics:
    """One variant pool of a stage over one interval (the fields as `StageMetrics`'s, for the pool alone).

    Attributes:
        variant: the variant the pool runs.
        share: the share of the stage's requests the dispatcher sends it at the interval's end (0: draining; 1:
            the stage's only pool).
    """

    variant: str
    share: float
    served: int
    dropped: int
    latency_p99_s: float
    queue_len: int
    utilisation: float
    replicas_serving: int


@dataclass(frozen=True)
class StageMetrics:
    """One stage over one interval: with pools, the stage's fields are over all of them and ``pools`` holds each.

    Attributes:
        served: requests that finished service at this stage during the interval.
        dropped: requests dropped while queued at this stage.
        latency_p50_s / latency_p99_s: stage latency (queue wait + service) of the served requests; NaN if none.
        queue_len: requests waiting at the end of the interval.
        utilisation: busy replica-seconds / serving replica-seconds.
        replicas_serving: replicas able to serve at the end of the interval.
        mean_batch: mean size of the batches started in the interval; NaN if none.
        pools: each pool's metrics, the pools of the configuration in force first, then those draining (one
            entry for a stage running one pool).
    """

    served: int
    dropped: int
    latency_p50_s: float
    latency_p99_s: float
    queue_len: int
    utilisation: float
    replicas_serving: int
    mean_batch: float
    pools: tuple[PoolMetrics, ...] = ()


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
        budget_min_s / budget_p5_s / budget_p50_s: with per-request SLOs (the spec's ``request_slo``), the
            remaining budgets on arrival (SLA - network delay, seconds) of the requests that arrived in the
            interval: their minimum, 5th percentile and median; NaN without per-request SLOs or arrivals. Late is
            then against each request's own deadline.
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
    budget_min_s: float = math.nan
    budget_p5_s: float = math.nan
    budget_p50_s: float = math.nan


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
