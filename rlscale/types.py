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
class VariantPool:
    """One variant pool of a stage: ``replicas`` replicas of ``variant``, each with ``cores`` cores, batching up to
    ``batch``, serving the fraction ``share`` of the stage's requests (DESIGN.md section 3).

    A pool alone may have a share below 1 (it is one of several); `StageConfig` checks that its pools' shares sum
    to 1.
    """

    variant: str
    batch: int
    replicas: int
    cores: int
    share: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0 + SHARE_TOLERANCE:  # also NaN
            raise ConfigError(f"pool {self.variant}: share {self.share!r} is not in (0, 1]")

    @property
    def total_cores(self) -> int:
        """The pool's cores, ``replicas * cores``."""
        return self.replicas * self.cores

    def with_(self, **changes) -> VariantPool:
        return replace(self, **changes)

    def __str__(self) -> str:
        return f"{self.variant} b{self.batch} x{self.replicas} c{self.cores}"


@dataclass(frozen=True)
class StageConfig:
    """How one stage runs: one or more **variant pools** (InfAdapter's mix, DESIGN.md section 3), in order.

    A single-pool stage (every policy but the pooled ones) is a stage with one pool of share 1; `one` builds it,
    and ``variant``, ``batch``, ``replicas`` and ``cores`` read it (they refuse a stage of several pools, whose
    figures are per pool: read ``pools``). The pools of a stage are keyed by variant (one Kubernetes Deployment
    per (stage, variant)), so no two share a variant; their shares are > 0 and sum to 1.

    Attributes:
        pools: the stage's pools, in order (the first is the one a single-pool view would show).
    """

    pools: tuple[VariantPool, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "pools", tuple(self.pools))
        if not self.pools:
            raise ConfigError("a stage needs at least one pool")
        seen: set[str] = set()
        for p in self.pools:
            if not isinstance(p, VariantPool):
                raise TypeError(f"a stage's pools are VariantPool, got {type(p).__name__}")
            if p.variant in seen:
                raise ConfigError(f"variant {p.variant} runs in two pools of one stage")
            seen.add(p.variant)
        shares = [p.share for p in self.pools]
        if abs(math.fsum(shares) - 1.0) > SHARE_TOLERANCE:
            if len(shares) == 1:
                raise ConfigError(f"a single pool serves the whole load (share 1), got {shares[0]!r}")
            raise ConfigError(f"pool shares {shares} sum to {math.fsum(shares)!r}, not 1")

    @classmethod
    def one(cls, variant: str, batch: int, replicas: int, cores: int) -> StageConfig:
        """A single-pool stage: ``replicas`` replicas of ``variant`` with ``cores`` cores, batching up to ``batch``."""
        return cls((VariantPool(variant, batch, replicas, cores),))

    @classmethod
    def of_pools(cls, pools: tuple[VariantPool, ...] | list[VariantPool]) -> StageConfig:
        """The stage of ``pools`` (each with its share, in order)."""
        return cls(tuple(pools))

    @property
    def only(self) -> VariantPool:
        """The stage's one pool; a stage of several pools has no single figure, so this refuses it."""
        if len(self.pools) != 1:
            raise ValueError(f"stage {self} runs {len(self.pools)} pools: read its pools")
        return self.pools[0]

    @property
    def main(self) -> VariantPool:
        """The pool serving the largest share (the first on a tie; the only one of a single-pool stage): what a
        single figure of the stage shows (a timeline's variant, batch and cores, a gauge, a plot)."""
        return max(self.pools, key=lambda p: p.share)

    @property
    def variant(self) -> str:
        return self.only.variant

    @property
    def batch(self) -> int:
        return self.only.batch

    @property
    def replicas(self) -> int:
        return self.only.replicas

    @property
    def cores(self) -> int:
        return self.only.cores

    @property
    def variants(self) -> tuple[str, ...]:
        """Every pool's variant, in order."""
        return tuple(p.variant for p in self.pools)

    @property
    def total_cores(self) -> int:
        """Cores over every pool, ``sum(replicas * cores)``: the stage's cost."""
        return sum(p.total_cores for p in self.pools)

    @property
    def total_replicas(self) -> int:
        """Replicas over every pool."""
        return sum(p.replicas for p in self.pools)

    @property
    def total_batch(self) -> float:
        """The stage's batch term of the objective: the batch size a request meets here, the share-weighted mean
        of the pools' batch sizes (``batch`` itself, an int, for a single pool).

        Weighted by share, not summed over pools, so that splitting a stage into pools of the same batch size
        leaves the term unchanged: a mix is judged on its accuracy and its cores, not penalised per pool.
        """
        if len(self.pools) == 1:
            return self.pools[0].batch
        return math.fsum(p.share * p.batch for p in self.pools)

    def with_(self, **changes) -> StageConfig:
        """The single-pool stage with ``changes`` to its pool (see `only`)."""
        return StageConfig((self.only.with_(**changes),))

    def __str__(self) -> str:
        if len(self.pools) == 1:
            return str(self.pools[0])
        return " + ".join(f"{p} {p.share:.0%}" for p in self.pools)


@dataclass(frozen=True)
class PipelineConfig:
    """One `StageConfig` per stage, in pipeline order."""

    stages: tuple[StageConfig, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))

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
        """Every stage's variant, for a configuration whose stages each run one pool (see `StageConfig.only`)."""
        return tuple(s.variant for s in self.stages)

    @property
    def most_pools(self) -> int:
        """The most pools any stage runs (1 when every stage runs one)."""
        return max((len(s.pools) for s in self.stages), default=1)

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
