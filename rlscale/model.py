"""The model every part of rlscale shares (DESIGN section 3): one option table, one replica formula, feasibility,
the objective and the score. The ILP and the DP (`ilp_baseline`), the safety layer, the env's action decoder, the
simulator's metrics and the cluster's interval score all call these; nothing re-derives them.

For a stage running variant v with batch b and c cores per replica at load lambda (rps):

- replica throughput ``h = b / l(v, b, c)``; the stage needs ``n >= ceil(lambda / (h * rho_max))`` replicas
  (`replicas_for`, elementwise over the stage's `option_table`);
- stage latency budget ``l(v, b, c) + (b - 1) / lambda`` (service plus the wait for the batch to fill, IPA's form);

and a pipeline configuration is feasible when every stage has enough replicas within its range, the stage
budgets sum to at most the SLA, and the total cores are within the core budget.

A stage may run several **variant pools** (`rlscale.types.StageConfig.pools`, at most the stage's ``max_pools``):
every pool carries its share of the load (``n * h * rho_max >= share * lambda``), its planned latency waits for its
batch to fill at its own load (``(b - 1) / (share * lambda)``), the slowest pool is the stage's latency, cores
count over every pool, each pool's replicas are within the stage's range. A stage's accuracy is the
share-weighted mean of its pools' variant accuracies (`expected_accuracy`). The option table is single-pool; the
planners (the DP, the ILP) and the safety layer add the two-pool options of `two_pool_options` (mixes of three or
more pools are out of their scope); `MaxCapacity`, the answer when nothing is feasible, stays single-pool.

A configuration's capacity is that of its bottleneck stage, ``min_s n_s * h(v_s, b_s, c_s) * rho_max`` (rps): the
highest load it is feasible for on throughput (`pipeline_capacity_rps`).

Objective ``alpha * A - beta * C - gamma * B`` (`objective_of`) and score ``objective - sla_penalty *
violation_rate`` (`score`). Drifts resolved here: an interval with no completed request scores the expected
accuracy of the configuration in force, in intervals and runs alike (`rlscale.sim.metrics`); cost is allocated
cores, time-averaged, in the simulator and on a cluster (ready or configured replicas, whichever is more).

A load is a finite number of requests per second >= 0. Anything else (NaN from a broken metric, a negative count,
an infinite backlog rate) is *no data*: no configuration is feasible at it (`violations` says why), and
`replicas_needed` raises `InvalidLoad` for NaN or a negative load; at ``+inf`` it answers `UNBOUNDED_REPLICAS`,
more than any stage may run.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from rlscale.errors import RlscaleError
from rlscale.pareto import StageArrays, frontier_dp
from rlscale.spec import PipelineSpec, StageSpec
from rlscale.types import IntervalMetrics, PipelineConfig, StageConfig, VariantPool

_EPS = 1e-9  # seconds: latency against the SLA
log = logging.getLogger(__name__)

CAPACITY_RTOL = 1e-9
"""THE tolerance of capacity against load, relative (the same at 0.1 rps as at 10,000 rps): a capacity carries a
load when it is at least ``load * (1 - CAPACITY_RTOL)`` (`carries`, what `violations` checks). Planners size
replicas (`replicas_for`: every planner, the safety layer, the env) to carry ``load * (1 - CAPACITY_RTOL / 2)``,
half the tolerance to spare, so that no rounding of ``n * h * rho_max`` or of a share puts a planned configuration
on the wrong side of `violations`."""


def carries(capacity_rps, load_rps):
    """Whether ``capacity_rps`` carries ``load_rps`` within `CAPACITY_RTOL` (elementwise on numpy arrays)."""
    return capacity_rps >= load_rps * (1.0 - CAPACITY_RTOL)


# what `replicas_needed` answers when no finite replica count carries the load (an infinite load, or one whose
# ratio to a replica's throughput overflows): more than any stage's max_replicas (`rlscale.spec.MAX_REPLICAS`)
UNBOUNDED_REPLICAS = sys.maxsize


class InvalidLoad(RlscaleError, ValueError):
    """A load that is not a finite number >= 0 rps: no data, never a load to plan for or to approve a proposal at.

    A `ValueError` too, so callers that treat a failed decision as "hold the current configuration" (the sidecar
    does) hold on it.
    """


def is_valid_load(load_rps: float) -> bool:
    """Whether ``load_rps`` is a finite number >= 0 (NaN, infinities and negative numbers are not)."""
    return math.isfinite(load_rps) and load_rps >= 0


def require_valid_load(load_rps: float, what: str = "load") -> float:
    """``load_rps`` as a float if it is a finite number >= 0.

    Raises:
        InvalidLoad: NaN, an infinity or a negative number.
    """
    load = float(load_rps)
    if not is_valid_load(load):
        raise InvalidLoad(f"{what} {load_rps!r} rps is not a finite number >= 0 (no data)")
    return load


MIN_BUDGET_S = 1e-3
"""The least planning budget (s): a remaining-budget quantile at or below 0 (most requests arrive with their
budget spent on the network) plans for 1 ms, where nothing is feasible and planners take their fallbacks."""


def planning_budget_s(spec: PipelineSpec, last: IntervalMetrics | None) -> float:
    """The end-to-end latency budget planners and the guard plan for (DESIGN section 3): the SLA, or, where the
    spec has per-request SLOs (``request_slo``), the 5th percentile of the remaining budgets on arrival seen in the
    last interval (``last.budget_p5_s``), at most the SLA and at least `MIN_BUDGET_S`. Before the first interval,
    or after one with no arrivals (NaN), it is the SLA: no data is never acted on."""
    if not spec.per_request_slo or last is None or not math.isfinite(last.budget_p5_s):
        return spec.sla_s
    return min(spec.sla_s, max(MIN_BUDGET_S, float(last.budget_p5_s)))


def with_budget(spec: PipelineSpec, budget_s: float) -> PipelineSpec:
    """``spec`` with its SLA replaced by ``budget_s`` for planning (the same spec when they are equal): the
    planners and the safety layer read ``sla_s`` as their latency bound, the simulator keeps the real one."""
    if budget_s == spec.sla_s:
        return spec
    return replace(spec, sla_s=float(budget_s))


def objective_of(spec: PipelineSpec, accuracy: float, cost_cores: float, batch: float) -> float:
    """THE objective, ``alpha * A - beta * C - gamma * B`` (DESIGN section 3): accuracy A as the spec combines it,
    cost C in cores, B the total batch size. Solvers take A, C, B of a configuration (`objective_value`); the
    simulator and the cluster take an interval's measured accuracy and allocated cores."""
    o = spec.objective
    return o.alpha * accuracy - o.beta * cost_cores - o.gamma * batch


def stage_accuracy(stage: StageSpec, config: StageConfig, method: str) -> float:
    """A stage's accuracy as the spec's ``method`` counts it: the rank-normalised (``sum``) or raw (``product``)
    accuracy of its variant; with pools, the share-weighted mean over its pools (what a request meets on
    average, dispatched by share)."""
    if method == "sum":
        return math.fsum(p.share * stage.rank_accuracy(p.variant) for p in config.pools)
    return math.fsum(p.share * stage.variant(p.variant).accuracy for p in config.pools)


def expected_accuracy(spec: PipelineSpec, config: PipelineConfig) -> float:
    """The expected pipeline accuracy A of a configuration: the spec's combination (``sum`` of rank-normalised,
    ``product`` of raw accuracies) of the stages' `stage_accuracy`. Without pools, ``spec.accuracy(variants)``
    exactly; with pools, the mean accuracy of requests dispatched to each stage's pools by share independently
    of the other stages (the product of the stages' means for ``product``).
    """
    if len(config.stages) != len(spec.stages):
        raise RlscaleError(f"expected {len(spec.stages)} stages, got {len(config.stages)}")
    method = spec.objective.accuracy_method
    per_stage = [stage_accuracy(st, sc, method) for st, sc in zip(spec.stages, config.stages, strict=True)]
    return sum(per_stage) if method == "sum" else math.prod(per_stage)


def objective_value(spec: PipelineSpec, config: PipelineConfig) -> float:
    """`objective_of` a configuration: what every solver maximises (cores over every pool; the batch term is
    `rlscale.types.PipelineConfig.total_batch`, a pooled stage counting its share-weighted mean batch)."""
    return objective_of(spec, expected_accuracy(spec, config), config.total_cores, config.total_batch)


def score(spec: PipelineSpec, objective: float, violation_rate: float, *, min_penalty: float = 0.0) -> float:
    """THE score, per interval and per run: ``objective - sla_penalty * violation_rate`` (violation_rate =
    (late + dropped) / arrivals), in both SLA modes.

    With ``objective.sla_mode: priced`` (the default) policies are ranked by this score alone. With ``hard``
    violations dominate lexicographically: policies are ranked by violation rate first and by this score only
    among equal rates (`rank_key`), so no cost or accuracy gain ever pays for a violation.

    Args:
        min_penalty: a floor on the penalty per unit violation rate (the agent's reward in ``hard`` episodes
            charges at least ``HARD_PENALTY x beta``, `envs.pipeline_env`); 0: the spec's ``sla_penalty``.
    """
    return objective - max(spec.objective.sla_penalty, min_penalty) * violation_rate


def rank_key(sla_mode: str, violation_rate: float, score_value: float) -> tuple[float, ...]:
    """Sort key of a run (or interval) for ranking, best first: ``sorted(records, key=...)``.

    ``priced``: the score, highest first. ``hard``: the violation rate, lowest first, then the score. A NaN
    rate or score sorts last.

    Args:
        sla_mode: the spec's ``objective.sla_mode``.
        violation_rate: the run's ``sla_violation_rate``.
        score_value: the run's ``score``.
    """
    worst = math.inf
    rate = violation_rate if math.isfinite(violation_rate) else worst
    neg = -score_value if math.isfinite(score_value) else worst
    if sla_mode == "hard":
        return (rate, neg)
    return (neg,)


def rank_records(spec: PipelineSpec, records: list[dict]) -> list[dict]:
    """Summary records sorted best first by the spec's SLA mode (`rank_key` on ``sla_violation_rate`` and
    ``score``)."""
    mode = spec.objective.sla_mode
    return sorted(records, key=lambda r: rank_key(mode, float(r["sla_violation_rate"]), float(r["score"])))


def batch_fill_wait_s(batch: int, load_rps: float) -> float:
    """Time for ``batch`` requests to accumulate at ``load_rps`` (0 for batch 1; inf for b > 1 with no load, a
    negative load or an unknown (NaN) one; 0 at an infinite load)."""
    if batch <= 1:
        return 0.0
    if not load_rps > 0:  # also NaN
        return math.inf
    return (batch - 1) / load_rps


def stage_latency_s(
    stage: StageSpec,
    variant: str,
    batch: int,
    cores: int,
    load_rps: float,
    replicas: int | None = None,
    timeout_s: float = math.inf,
) -> float:
    """The planned stage latency. IPA's for a profile of p99s (every bundled one): the service time of a full batch
    plus the batch-fill wait. For a calibrated variant (its profile holds a mean, `is_calibrated`), a p99 with
    queueing, serving overhead and delay (`calibrated_latency_s`) on ``replicas`` replicas (None: the fewest that
    carry the load) whose batcher waits at most ``timeout_s``."""
    if is_calibrated(stage, variant):
        return calibrated_latency_s(stage, variant, batch, cores, load_rps, replicas, timeout_s)
    return stage.latency.latency_s(variant, batch, cores) + batch_fill_wait_s(batch, load_rps)


TAIL_Q = 0.99
"""The quantile `calibrated_latency_s` plans for."""
COMBINE_TAILS = True
"""`calibrated_latency_s` combines the jitter's tail with the core's (the root of summed squared excesses over the
means) rather than adding their p99s; False adds them (the earlier plan, higher)."""


def is_calibrated(stage: StageSpec, variant: str) -> bool:
    """Whether ``variant``'s profile holds more than p99s: a mean (``mean_s`` or run times) at some point."""
    return stage.latency.holds_mean(variant)


def calibrated_latency_s(
    stage: StageSpec,
    variant: str,
    batch: int,
    cores: int,
    load_rps: float,
    replicas: int | None = None,
    timeout_s: float = math.inf,
    quantile: float = TAIL_Q,
) -> float:
    """A stage's planned p99 on a calibrated profile (DESIGN.md section 3), meant to be at least the real one
    (``quantile``: another quantile of the same model; the batch's service time there from its runs):

    - each of the ``n`` replicas takes ``lambda = load / n`` (n: ``replicas``, else the fewest that carry the load
      at the profile's mean service time and overhead);
    - the batch a replica runs, ``k``: ``batch`` where its batcher waits for a full one (``timeout_s`` infinite,
      IPA's assumption, with its fill wait ``(b - 1) / lambda``); otherwise the smallest k <= b whose work a request,
      ``mean(k) / k + o`` (``o`` the serving overhead), keeps the core below 1 (a batcher with a short timeout
      takes what has queued), with a fill wait of at most ``timeout_s``;
    - the queueing before it: M/G/1's with the work a request above, its mean wait by Pollaczek-Khinchine with the
      squared coefficient of variation of the measured runs, and the tail of a wait that is exponential given that
      it is not 0 (Kingman's heavy-traffic form): ``W_q = (E[W] / rho) ln(rho / (1 - q))`` (0 when ``rho <= 1 - q``);
      infinite when ``rho >= 1``; with an overhead, stretched by ``1 / (1 - lambda o)``, as the requests that
      arrive meanwhile are decoded ahead of the batch (the simulator's decode-first server);
    - then its own batch: the p99 of ``k``'s service time, the decoding of the batch's ``k`` requests ``k o``,
      and the time outside the core: the delay and the p99 of its exponential jitter.

    The wait and the batch's p99s add (a sum of tail parts is above the tail of their sum: this errs high); the
    jitter, independent of the core, is combined with them as a root of summed squared excesses over the means
    (`COMBINE_TAILS`).
    """
    lat = stage.latency
    if not load_rps >= 0:
        return math.inf
    o = lat.overhead_s(variant, cores)
    d = lat.delay_s(variant, cores)

    def work(k: int) -> float:  # core seconds a request at batch k
        return lat.mean_s(variant, k, cores) / k + o

    if replicas is None:
        replicas = max(stage.min_replicas, math.ceil(load_rps * work(batch)) if load_rps > 0 else stage.min_replicas)
    rate = load_rps / max(replicas, 1)
    if math.isinf(timeout_s):
        k = batch
        fill = batch_fill_wait_s(batch, rate)
    else:
        k = next((j for j in range(1, batch + 1) if rate * work(j) < 1.0), batch)
        fill = min(timeout_s, batch_fill_wait_s(batch, rate)) if batch > 1 else 0.0
    rho = rate * work(k)
    if rho >= 1.0:
        return math.inf
    noise = lat.noise(variant, k, cores)
    cv2 = float(np.var(noise)) if noise is not None else 0.0
    mean_service = lat.mean_s(variant, k, cores)
    # the per-request work's squared coefficient of variation: the model's part varies, the overhead does not
    per_request = work(k)
    cv2 = cv2 * (mean_service / k / per_request) ** 2 if per_request > 0 else 0.0
    mean_wait = rho * per_request * (1.0 + cv2) / (2.0 * (1.0 - rho))
    if o > 0 and rate * o < 1.0:  # decoding comes first: requests arriving meanwhile are decoded ahead (busy period)
        mean_wait /= 1.0 - rate * o
    wait = mean_wait / rho * math.log(rho / (1.0 - quantile)) if rho > 1.0 - quantile else 0.0
    j = lat.jitter_s(variant, cores)
    jitter = j * math.log(1.0 / (1.0 - quantile))  # the exponential part's quantile
    service = lat.latency_s(variant, k, cores)
    if quantile != TAIL_Q and noise is not None:
        service = mean_service * float(np.quantile(noise, quantile))
    if not COMBINE_TAILS:
        return wait + service + k * o + d + jitter + fill
    # the time off the core is independent of the time on it: their means add, their excesses over the mean at the
    # quantile add as a root of squares (exact for normal parts, above it for exponential ones); on the core the wait
    # and the batch's service add whole (a long batch also makes the next ones wait)
    parts = ((mean_wait + mean_service, wait + service), (j, jitter))
    excess = math.sqrt(sum(max(q - m, 0.0) ** 2 for m, q in parts))
    return sum(m for m, _q in parts) + excess + k * o + d + fill


def pool_capacity_rps(stage: StageSpec, pool: VariantPool, rho_max: float) -> float:
    """Highest load one pool carries on its own: ``n * h(v, b, c) * rho_max`` (rps)."""
    return pool.replicas * stage.latency.throughput_rps(pool.variant, pool.batch, pool.cores) * rho_max


def stage_capacity_rps(stage: StageSpec, config: StageConfig, rho_max: float) -> float:
    """Highest load one stage carries: ``n * h(v, b, c) * rho_max`` (rps); with pools and their shares fixed,
    the least over the pools of ``capacity / share`` (the load at which the first pool is full)."""
    return min(pool_capacity_rps(stage, p, rho_max) / p.share for p in config.pools)


def pipeline_capacity_rps(spec: PipelineSpec, config: PipelineConfig) -> float:
    """Highest load a configuration carries, the capacity of its bottleneck stage (rps), counted as `violations`
    counts it: ``config`` is feasible on throughput at every load up to this one."""
    rho = spec.objective.rho_max
    return min(stage_capacity_rps(st, sc, rho) for st, sc in zip(spec.stages, config.stages, strict=True))


def replicas_needed(stage: StageSpec, variant: str, batch: int, cores: int, load_rps: float, rho_max: float) -> int:
    """Fewest replicas whose throughput covers ``load_rps / rho_max`` (at least the stage's min_replicas).

    Returns `UNBOUNDED_REPLICAS` (more than any ``max_replicas``) when no finite count does: ``load_rps`` is
    ``+inf``, or so large that its ratio to the throughput overflows.

    Raises:
        InvalidLoad: ``load_rps`` is NaN or negative.
    """
    if math.isnan(load_rps) or load_rps < 0:
        raise InvalidLoad(f"{stage.name}: load {load_rps!r} rps is not a finite number >= 0 (no data)")
    n = float(replicas_for(load_rps, stage.latency.throughput_rps(variant, batch, cores) * rho_max, stage.min_replicas))
    return int(n) if n < UNBOUNDED_REPLICAS else UNBOUNDED_REPLICAS


def replicas_for(load_rps, replica_rps, min_replicas: int):
    """THE replica formula: fewest replicas whose planned capacity ``n * replica_rps`` covers ``load_rps``.

    ``replica_rps`` is one replica's planned capacity, ``h(v, b, c) * rho_max``. Works elementwise on numpy arrays
    (every planner's option table) as on floats; at least ``min_replicas``; a load of 0 needs ``min_replicas``.
    The caller checks the load (`require_valid_load`) and ``max_replicas``; an infinite ratio stays infinite.
    """
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        # with half the tolerance `carries` allows to spare: n * replica_rps then carries the load however it rounds
        needed = np.ceil(np.asarray(load_rps, dtype=float) * (1.0 - CAPACITY_RTOL / 2) / replica_rps)
    return np.maximum(min_replicas, np.where(np.asarray(load_rps) > 0, needed, min_replicas))


@dataclass(frozen=True, eq=False)
class OptionTable:
    """Every (variant, batch, cores) of one stage as arrays, load-independent: the one option table every planner,
    the safety layer and the maximum-capacity search enumerate (rows: variants in spec order, then batch sizes,
    then cores).

    Attributes:
        rows: ``(variant, batch, cores)`` per row.
        variant_index: the row's variant's index in the stage's variants.
        batch, cores: per row (float arrays, for arithmetic).
        service_s: ``l(v, b, c)``, one full batch's service time.
        throughput_rps: one replica's throughput ``h = b / l``.
        acc_rank, acc_raw: the variant's rank-normalised and raw accuracy.
    """

    rows: tuple[tuple[str, int, int], ...]
    variant_index: np.ndarray
    batch: np.ndarray
    cores: np.ndarray
    service_s: np.ndarray
    throughput_rps: np.ndarray
    acc_rank: np.ndarray
    acc_raw: np.ndarray
    stage: StageSpec | None = field(default=None, repr=False)
    calibrated_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def wait_s(self, load_rps: float) -> np.ndarray:
        """`batch_fill_wait_s` of every row at ``load_rps``."""
        with np.errstate(divide="ignore", over="ignore"):  # a tiny load: the wait is infinite, as it should be
            return np.where(self.batch > 1, (self.batch - 1) / load_rps if load_rps > 0 else np.inf, 0.0)

    def planned_latency_s(self, load_rps: float, replicas: np.ndarray | None = None) -> np.ndarray:
        """`stage_latency_s` of every row at ``load_rps``: service plus batch-fill wait, and for the rows of a
        calibrated variant (`calibrated_rows`) `calibrated_latency_s` on ``replicas[row]`` replicas (None: the
        fewest that carry the load)."""
        latency = self.service_s + self.wait_s(load_rps)
        if self.calibrated_rows.size and self.stage is not None:
            for i in self.calibrated_rows:
                v, b, c = self.rows[i]
                n = None if replicas is None else int(replicas[i])
                latency[i] = calibrated_latency_s(self.stage, v, b, c, load_rps, n)
        return latency

    def latency_at(self, load_rps: float, rows: np.ndarray, replicas: np.ndarray, latency: np.ndarray) -> np.ndarray:
        """``latency`` (the planned latency of ``rows``, one entry each) with the calibrated rows' entries replanned
        at ``replicas`` (a p99 profile's does not depend on the replicas)."""
        if not self.calibrated_rows.size or self.stage is None:
            return latency
        out = np.array(latency, dtype=float)
        for k in np.flatnonzero(np.isin(rows, self.calibrated_rows)):
            v, b, c = self.rows[int(rows[k])]
            out[k] = calibrated_latency_s(self.stage, v, b, c, load_rps, int(replicas[k]))
        return out

    def replica_options(
        self, load_rps: float, n_min: np.ndarray, max_replicas: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every row at ``n_min`` replicas, and each calibrated row also at each further count that lowers its
        planned latency by at least `SCALE_OUT_GAIN` (queueing falls as replicas are added; a p99 profile's
        latency does not), at most `SCALE_OUT_OPTIONS` of them and ``max_replicas``: the replica counts a planner
        may trade cores against latency on. Returns rows, replicas and planned latencies (one entry per option)."""
        latency = self.planned_latency_s(load_rps, n_min)
        rows, counts, lats = [np.arange(len(self.rows))], [np.asarray(n_min, dtype=float)], [latency]
        if self.calibrated_rows.size and self.stage is not None:
            extra: list[tuple[int, int, float]] = []
            for i in self.calibrated_rows:
                v, b, c = self.rows[i]
                n, lat, added = n_min[i], float(latency[i]), 0
                while n < max_replicas and added < SCALE_OUT_OPTIONS:
                    more = calibrated_latency_s(self.stage, v, b, c, load_rps, int(n) + 1)
                    if not more < lat * (1.0 - SCALE_OUT_GAIN):
                        break
                    n, lat, added = n + 1, more, added + 1
                    extra.append((int(i), n, lat))
            if extra:
                rows.append(np.array([e[0] for e in extra], dtype=np.int64))
                counts.append(np.array([e[1] for e in extra], dtype=float))
                lats.append(np.array([e[2] for e in extra]))
        return np.concatenate(rows), np.concatenate(counts), np.concatenate(lats)


SCALE_OUT_GAIN = 0.01
"""`OptionTable.replica_options`: a calibrated row gets one more replica while that lowers its planned latency by
at least this share."""
SCALE_OUT_OPTIONS = 8
"""`OptionTable.replica_options`: at most this many replica counts above the fewest, per calibrated row."""


_TABLES: dict[int, tuple[StageSpec, OptionTable]] = {}


def option_table(stage: StageSpec) -> OptionTable:
    """The stage's `OptionTable`, built once per stage object (the spec is immutable)."""
    hit = _TABLES.get(id(stage))
    if hit is not None and hit[0] is stage:
        return hit[1]
    rows = tuple((v, b, c) for v in stage.variant_names for b in stage.batch_sizes for c in stage.cores)
    service = np.array([stage.latency.latency_s(v, b, c) for v, b, c in rows])
    batch = np.array([b for _v, b, _c in rows], dtype=float)
    table = OptionTable(
        rows=rows,
        variant_index=np.array([stage.variant_names.index(v) for v, _b, _c in rows]),
        batch=batch,
        cores=np.array([c for _v, _b, c in rows], dtype=float),
        service_s=service,
        throughput_rps=np.array([stage.latency.throughput_rps(v, b, c) for v, b, c in rows]),
        acc_rank=np.array([stage.rank_accuracy(v) for v, _b, _c in rows]),
        acc_raw=np.array([stage.variant(v).accuracy for v, _b, _c in rows]),
        stage=stage,
        calibrated_rows=np.array([i for i, (v, _b, _c) in enumerate(rows) if is_calibrated(stage, v)], dtype=np.int64),
    )
    if len(_TABLES) > 1024:  # bounded: specs are few, but tests build many
        _TABLES.clear()
    _TABLES[id(stage)] = (stage, table)  # the strong reference keeps id(stage) from being reused while cached
    return table


@dataclass(frozen=True)
class StageOption:
    """One way to run a stage at a given load, with its planned latency and cores."""

    config: StageConfig
    latency_s: float
    cores_total: int


def stage_options(
    stage: StageSpec, load_rps: float, rho_max: float, variants: list[str] | None = None
) -> list[StageOption]:
    """Every (variant, batch, cores) of a stage with the fewest replicas that carry ``load_rps`` (a calibrated one
    also at the further counts that lower its latency, `OptionTable.replica_options`).

    Options that need more than ``max_replicas`` are left out.
    """
    table = option_table(stage)
    n_min = replicas_for(load_rps, table.throughput_rps * rho_max, stage.min_replicas)
    rows, n, latency = table.replica_options(load_rps, n_min, stage.max_replicas)
    keep = n <= stage.max_replicas
    if variants is not None:
        keep &= np.isin(table.variant_index[rows], [stage.variant_names.index(v) for v in variants])
    out = []
    for k in np.flatnonzero(keep):
        v, b, c = table.rows[rows[k]]
        out.append(StageOption(StageConfig.one(v, b, int(n[k]), c), float(latency[k]), int(n[k]) * c))
    return out


def batch_fill_wait_array_s(batch: np.ndarray, load_rps: np.ndarray) -> np.ndarray:
    """`batch_fill_wait_s` elementwise, for loads > 0 (the pools of `two_pool_options`): ``(b - 1) / load`` for
    b > 1, else 0."""
    with np.errstate(divide="ignore", over="ignore"):
        return np.where(batch > 1, (batch - 1) / load_rps, 0.0)


@dataclass(frozen=True, eq=False)
class TwoPoolOptions:
    """The two-pool options of one stage at one load, as arrays (one entry per option; `two_pool_options`).

    Option k runs an accurate pool (option-table row ``first[k]``, ``replicas[k]`` replicas) at its full planned
    capacity and a less accurate pool (row ``second[k]``, ``second_replicas[k]`` replicas) carrying the rest.

    Attributes:
        first, second: the pools' rows in the stage's `option_table`.
        replicas, second_replicas: the pools' replicas.
        share: the first pool's share (the second's is ``1 - share``).
        latency_s: planned stage latency, the slower pool's ``l(v, b, c) + (b - 1) / (share * load)``.
        cores: total cores ``n1 * c1 + n2 * c2``.
        batch: the share-weighted batch size (`rlscale.types.StageConfig.total_batch`).
        acc_rank, acc_raw: share-weighted rank-normalised and raw accuracy (`stage_accuracy`).
    """

    first: np.ndarray
    second: np.ndarray
    replicas: np.ndarray
    second_replicas: np.ndarray
    share: np.ndarray
    latency_s: np.ndarray
    cores: np.ndarray
    batch: np.ndarray
    acc_rank: np.ndarray
    acc_raw: np.ndarray

    @property
    def size(self) -> int:
        return int(self.first.size)

    def take(self, idx: np.ndarray) -> TwoPoolOptions:
        """The options at ``idx`` (an index or boolean array)."""
        return TwoPoolOptions(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))

    def config(self, stage: StageSpec, k: int) -> StageConfig:
        """Option ``k`` as a stage configuration (the accurate pool first)."""
        rows = option_table(stage).rows
        v1, b1, c1 = rows[int(self.first[k])]
        v2, b2, c2 = rows[int(self.second[k])]
        share = float(self.share[k])
        return StageConfig(
            (
                VariantPool(v1, b1, int(self.replicas[k]), c1, share),
                VariantPool(v2, b2, int(self.second_replicas[k]), c2, 1.0 - share),
            )
        )


def two_pool_options(stage: StageSpec, load_rps: float, rho_max: float, sla_s: float = math.inf) -> TwoPoolOptions:
    """Every two-pool option of a stage at ``load_rps`` whose planned latency is within ``sla_s`` (none when the
    stage's ``max_pools`` is 1 or the load is not > 0): the planners' and the safety layer's pooled options.

    An accurate pool (v1, b1, c1) with n1 replicas runs at its full planned capacity ``q1 = n1 * h1 * rho_max <
    load`` (n1 from ``max(1, min_replicas)`` up to, not including, the count that carries the load alone, and at
    most ``max_replicas``); a pool of a variant strictly less accurate than v1, (v2, b2, c2), carries the rest
    ``load - q1`` with the fewest replicas that do (at most ``max_replicas``); shares ``q1 / load`` and ``1 - q1 /
    load``. This is the fractional-knapsack split (InfAdapter's: fill the most accurate pool first): for fixed pools
    and replicas it gives the accurate pool the largest share it can carry, so it maximises the stage's accuracy;
    the best two-pool mix is in this family whenever the batch-fill wait does not depend on the share (batch 1).
    With batch sizes above 1 a smaller first share could shorten the second pool's wait: those mixes are left out
    (a restriction). Mixes of three or more pools are not enumerated.

    Every option is feasible for the stage at ``load_rps`` as `violations` counts it (each pool carries its share,
    replicas in range, latency the slowest pool's), and its accuracy, cores and batch are those of
    `stage_accuracy`, `rlscale.types.StageConfig.total_cores` and ``total_batch``.
    """
    t = option_table(stage)
    empty = np.zeros(0)
    if stage.max_pools < 2 or not (math.isfinite(load_rps) and load_rps > 0):
        ei = np.zeros(0, dtype=np.int64)
        return TwoPoolOptions(ei, ei, ei, ei, empty, empty, empty, empty, empty, empty)
    load = float(load_rps)
    capacity = t.throughput_rps * rho_max
    alone = replicas_for(load, capacity, stage.min_replicas)
    lo = max(1, stage.min_replicas)
    hi = np.minimum(alone - 1, stage.max_replicas).astype(np.int64)
    rows = np.flatnonzero(hi >= lo)
    counts = hi[rows] - lo + 1
    r1 = np.repeat(rows, counts)
    n1 = lo + np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    # n * h * rho in the order `pool_capacity_rps` multiplies
    q1 = n1 * t.throughput_rps[r1] * rho_max
    share = q1 / load
    lat1 = t.service_s[r1] + batch_fill_wait_array_s(t.batch[r1], share * load)
    ok = (q1 < load) & (share < 1.0) & (lat1 <= sla_s)
    r1, n1, share, lat1 = r1[ok], n1[ok], share[ok], lat1[ok]
    # every less accurate row as the second pool
    first, r2 = np.nonzero(t.acc_raw[r1][:, None] > t.acc_raw[None, :])
    r1, n1, share, lat1 = r1[first], n1[first], share[first], lat1[first]
    share2 = 1.0 - share
    load2 = share2 * load
    n2 = replicas_for(load2, capacity[r2], stage.min_replicas)
    lat2 = t.service_s[r2] + batch_fill_wait_array_s(t.batch[r2], load2)
    latency = np.maximum(lat1, lat2)
    ok = (n2 <= stage.max_replicas) & (latency <= sla_s)
    r1, r2, n1, n2, share, share2, latency = (
        r1[ok],
        r2[ok],
        n1[ok],
        n2[ok].astype(np.int64),
        share[ok],
        share2[ok],
        latency[ok],
    )
    return TwoPoolOptions(
        first=r1,
        second=r2,
        replicas=n1,
        second_replicas=n2,
        share=share,
        latency_s=latency,
        cores=n1 * t.cores[r1] + n2 * t.cores[r2],
        batch=share * t.batch[r1] + share2 * t.batch[r2],
        acc_rank=share * t.acc_rank[r1] + share2 * t.acc_rank[r2],
        acc_raw=share * t.acc_raw[r1] + share2 * t.acc_raw[r2],
    )


def violations(spec: PipelineSpec, config: PipelineConfig, load_rps: float) -> list[str]:
    """Why ``config`` is not in F(load); an empty list means feasible."""
    problems = []
    if len(config.stages) != len(spec.stages):
        return [f"expected {len(spec.stages)} stages, got {len(config.stages)}"]
    if not is_valid_load(load_rps):  # no data: nothing is feasible (NaN compares false and would pass the rest)
        problems.append(f"load {load_rps!r} rps is not a finite number >= 0 (no data)")
    total_latency = 0.0
    for st, sc in zip(spec.stages, config.stages, strict=True):
        total_latency += _pool_violations(spec, st, sc, load_rps, problems)
    if total_latency > spec.sla_s + _EPS:
        problems.append(f"latency {total_latency:.3f} s > SLA {spec.sla_s:g} s")
    if config.total_cores > spec.core_budget:
        problems.append(f"{config.total_cores} cores > budget {spec.core_budget}")
    return problems


def _setting_violations(st: StageSpec, where: str, p: VariantPool, problems: list[str]) -> bool:
    """Append what of one pool's setting (``p``: a single-pool stage or one pool of a mix) is off the stage's grids
    or replica range to ``problems``, naming it ``where``; False when its variant is unknown (nothing else is
    checked then)."""
    if p.variant not in st.variant_names:
        problems.append(f"{st.name}: unknown variant {p.variant}")
        return False
    if p.batch not in st.batch_sizes:
        problems.append(f"{where}: batch {p.batch} not allowed")
    if p.cores not in st.cores:
        problems.append(f"{where}: {p.cores} cores not allowed")
    if not st.min_replicas <= p.replicas <= st.max_replicas:
        problems.append(f"{where}: {p.replicas} replicas outside [{st.min_replicas}, {st.max_replicas}]")
    return True


def _pool_violations(spec: PipelineSpec, st: StageSpec, sc: StageConfig, load_rps: float, problems: list[str]) -> float:
    """Append why a stage is not feasible at ``load_rps`` to ``problems``; return its planned latency, the
    slowest pool's (each pool at its share of the load). A problem names the stage, and the pool's variant when
    the stage runs several."""
    pools = sc.pools
    if len(pools) > st.max_pools:
        problems.append(f"{st.name}: {len(pools)} pools > max_pools {st.max_pools}")
    latency = 0.0
    for p in pools:
        where = st.name if len(pools) == 1 else f"{st.name}/{p.variant}"
        if not _setting_violations(st, where, p, problems):
            continue
        load = p.share * load_rps
        capacity = pool_capacity_rps(st, p, spec.objective.rho_max)
        if not carries(capacity, load):
            whose = "load" if len(pools) == 1 else "its share's load"
            problems.append(f"{where}: capacity {capacity:.2f} rps < {whose} {load:.2f} rps")
        latency = max(latency, stage_latency_s(st, p.variant, p.batch, p.cores, load, p.replicas))
    return latency


def is_feasible(spec: PipelineSpec, config: PipelineConfig, load_rps: float) -> bool:
    return not violations(spec, config, load_rps)


def resize_replicas(
    spec: PipelineSpec, config: PipelineConfig, load_rps: float | Sequence[float]
) -> PipelineConfig | None:
    """``config`` with every stage's variant, batch and cores kept and its replicas resized to the fewest that carry
    its load (one load, or one per stage), or None when that is not feasible (a stage would need more than
    ``max_replicas``, the planned latency misses the SLA, or the cores exceed the budget). A calibrated pool,
    whose latency falls as replicas are added (`calibrated_latency_s`), gets further replicas one at a time, each
    where it lowers the planned latency most, until the SLA holds. The "hold" move of
    hysteresis planners (``ipa-hold``) and of the agent's planner action.

    Raises:
        InvalidLoad: a load is NaN or negative.
    """
    loads = list(load_rps) if isinstance(load_rps, Sequence) else [load_rps] * len(spec.stages)
    if len(loads) != len(spec.stages) or len(config.stages) != len(spec.stages):
        return None
    pools: list[list[VariantPool]] = []
    for st, sc, load in zip(spec.stages, config.stages, loads, strict=True):
        pools.append([])
        for p in sc.pools:  # a pool carries its share of the stage's load
            if p.variant not in st.variant_names or p.batch not in st.batch_sizes or p.cores not in st.cores:
                return None
            n = replicas_needed(st, p.variant, p.batch, p.cores, p.share * load, spec.objective.rho_max)
            if n > st.max_replicas:
                return None
            pools[-1].append(p.with_(replicas=n))

    def pool_latency(s: int, p: VariantPool) -> float:
        st = spec.stages[s]
        return stage_latency_s(st, p.variant, p.batch, p.cores, p.share * loads[s], p.replicas)

    def total() -> float:
        return sum(max(pool_latency(s, p) for p in ps) for s, ps in enumerate(pools))

    latency = total()
    # a calibrated pool queues less with more replicas: while over the SLA, add the replica that lowers the
    # planned latency most (a p99 profile's latency does not move, so nothing is added to one)
    while latency > spec.sla_s + _EPS:
        best: tuple[float, int, int] | None = None
        for s, ps in enumerate(pools):
            st = spec.stages[s]
            for k, p in enumerate(ps):
                if p.replicas >= st.max_replicas or not is_calibrated(st, p.variant):
                    continue
                ps[k] = p.with_(replicas=p.replicas + 1)
                trial = total()
                ps[k] = p
                if trial < latency and (best is None or trial < best[0]):
                    best = (trial, s, k)
        if best is None:
            return None
        latency, s, k = best
        pools[s][k] = pools[s][k].with_(replicas=pools[s][k].replicas + 1)
    resized = PipelineConfig(tuple(StageConfig.of_pools(ps) for ps in pools))
    if resized.total_cores > spec.core_budget:
        return None
    return resized


def plan_fixed_variants(spec: PipelineSpec, variants: list[str], load_rps: float) -> PipelineConfig:
    """Cheapest (batch, cores, replicas) per stage for fixed variants at ``load_rps``: the fewest total cores
    whose planned latency fits the SLA (ties: lower latency), by the exact frontier search of `rlscale.pareto`.
    When nothing fits the SLA and the budget, each stage takes its fastest option (with a warning)."""
    per_stage: list[list[StageOption]] = []
    for stage, v in zip(spec.stages, variants, strict=True):
        opts = stage_options(stage, load_rps, spec.objective.rho_max, variants=[v])
        if not opts:  # even max_replicas is not enough: take the largest capacity the stage allows
            b, c = max(
                ((b, c) for b in stage.batch_sizes for c in stage.cores),
                key=lambda bc, stage=stage, v=v: stage.latency.throughput_rps(v, bc[0], bc[1]),
            )
            lat = stage.latency.latency_s(v, b, c)
            opts = [StageOption(StageConfig.one(v, b, stage.max_replicas, c), lat, stage.max_replicas * c)]
        per_stage.append(opts)
    arrays = [
        StageArrays(
            np.array([o.latency_s for o in opts]),
            np.array([o.cores_total for o in opts], dtype=float),
            np.zeros(len(opts)),
            np.array([o.cores_total + 1e-6 * o.latency_s for o in opts]),
        )
        for opts in per_stage
    ]
    chosen = frontier_dp(arrays, spec.sla_s, None)
    if chosen is not None:
        config = PipelineConfig(tuple(opts[i].config for opts, i in zip(per_stage, chosen, strict=True)))
        if config.total_cores <= spec.core_budget:
            return config
    fastest = PipelineConfig(tuple(min(opts, key=lambda o: (o.latency_s, o.cores_total)).config for opts in per_stage))
    if fastest.total_cores <= spec.core_budget:
        log.warning(
            "%s: no configuration of %s meets the SLA at %.1f rps; using the fastest",
            spec.name,
            "/".join(variants),
            load_rps,
        )
        return fastest
    log.warning(
        "%s: no configuration of %s meets the SLA within the budget of %d cores at %.1f rps; using the "
        "maximum-capacity configuration within the budget",
        spec.name,
        "/".join(variants),
        spec.core_budget,
        load_rps,
    )
    return max_capacity(spec).config(load_rps if is_valid_load(load_rps) else 0.0)


# ------------------------------------------------------------------------------ the core budget, a hard cap


@dataclass(frozen=True)
class _StageCapacity:
    """One stage's options for the maximum-capacity search, load-independent.

    Attributes:
        rows: the (variant, batch, cores) grid, the order of every per-row array.
        service_s: service time of a full batch, per row.
        batch: batch size, per row.
        accuracy: the row's variant accuracy as the objective counts it (rank-normalised for ``sum``, raw for
            ``product``).
        replicas: the fewest replicas reaching the maximum capacity, per row (0: the row cannot).
        cores: cores of that count (``replicas * cores per replica``), per row.
    """

    rows: list[tuple[str, int, int]]
    service_s: np.ndarray
    batch: np.ndarray
    accuracy: np.ndarray
    replicas: np.ndarray
    cores: np.ndarray


class MaxCapacity:
    """The maximum-capacity configuration within the core budget: the safety layer's answer when F is empty.

    Capacity is the pipeline's throughput as the feasibility check counts it (`pipeline_capacity_rps`): the
    bottleneck stage's ``n * h(v, b, c) * rho_max`` rps, with ``h = b / l(v, b, c)``. The configuration is chosen
    from the planners' option table (every variant x batch x cores of a stage, replicas from ``min_replicas`` to
    ``max_replicas``), with total cores within ``core_budget``, lexicographically:

    1. the largest capacity; this is what the fallback promises, so the SLA does not constrain it: with nothing
       feasible, the load already exceeds what meets the SLA, and throughput is what drains the queues;
    2. among the configurations of that capacity, one whose planned latency at the load (service plus the
       batch-fill wait ``(b - 1) / load``, `rlscale.model.stage_latency_s`) fits the SLA, if any does;
    3. then the fewest total cores;
    4. then the highest objective ``alpha * A - beta * cores - gamma * batch``.

    Exact. The capacity step is load-independent and solved once per spec: a target capacity T is reachable
    within the budget iff the stages' least cores for capacity >= T (each stage on its own) sum to at most the
    budget, that sum grows with T, and the optimum is one of the finitely many option capacities, so all of them
    are checked at once with numpy (sorted capacities, suffix minima of cores, one search per stage). At the
    optimum T* each (variant, batch, cores) takes its fewest replicas reaching T* (more replicas only add
    cores), and the latency, core and objective tie-breaks are the exact Pareto DP of `rlscale.pareto` on those
    candidates: fewest cores within the SLA, then the best objective within that many cores (or, with no
    candidate choice within the SLA, the fewest cores and best objective without it).

    Args:
        spec: the pipeline.
    """

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec
        product = spec.objective.accuracy_method == "product"
        grids = []
        for st in spec.stages:
            t = option_table(st)
            grids.append((st, t, t.throughput_rps, t.cores.astype(np.int64)))
        self.capacity_rps = self._best_capacity(grids)
        self.stages: list[_StageCapacity] = []
        for st, t, throughput, cores in grids:
            replicas = self._fewest_replicas(st, throughput)
            ok = replicas <= st.max_replicas
            self.stages.append(
                _StageCapacity(
                    rows=list(t.rows),
                    service_s=t.service_s,
                    batch=t.batch,
                    accuracy=t.acc_raw if product else t.acc_rank,
                    replicas=np.where(ok, replicas, 0),
                    cores=np.where(ok, replicas * cores, 0),
                )
            )

    def _best_capacity(self, grids) -> float:
        """The largest capacity T whose per-stage least cores sum to at most the budget.

        A stage's least cores for capacity >= T only depend, for each core count c, on the highest-throughput
        (variant, batch) at c (it needs the fewest replicas), so only those rows are enumerated, at every replica
        count: capacities sorted, the least cores of every capacity suffix, then one search per stage for all
        the candidate targets (every enumerated capacity) at once.
        """
        rho = self.spec.objective.rho_max
        sorted_caps, suffix_least = [], []
        for st, _rows, throughput, cores in grids:
            per_core = np.unique(cores)
            best_h = np.array([throughput[cores == c].max() for c in per_core])
            replicas = np.arange(st.min_replicas, st.max_replicas + 1)
            # n * h * rho in the order `pipeline_capacity_rps` multiplies, so capacities compare exactly
            capacity = (replicas[None, :] * best_h[:, None] * rho).ravel()
            total = (replicas[None, :] * per_core[:, None]).ravel()
            order = np.argsort(capacity, kind="stable")
            sorted_caps.append(capacity[order])
            suffix_least.append(np.minimum.accumulate(total[order][::-1])[::-1])  # least cores for >= caps[k]
        targets = np.unique(np.concatenate(sorted_caps))  # the optimum is one of these
        total = np.zeros(targets.size)
        for caps, least in zip(sorted_caps, suffix_least, strict=True):
            k = np.searchsorted(caps, targets, side="left")  # first capacity >= target
            total += np.where(k < caps.size, least[np.minimum(k, caps.size - 1)], np.inf)
        ok = np.flatnonzero(total <= self.spec.core_budget)
        if ok.size == 0:  # unreachable for a validated spec: it holds min_replicas x min cores of every stage
            raise RlscaleError(f"{self.spec.name}: the core budget cannot hold the smallest configuration")
        return float(targets[ok[-1]])

    def _fewest_replicas(self, st, throughput: np.ndarray) -> np.ndarray:
        """Per row, the fewest replicas in ``[min_replicas, max_replicas]`` whose capacity reaches the target, as
        ``n * h * rho >= T`` counts it (``max_replicas + 1``: none does)."""
        rho, target = self.spec.objective.rho_max, self.capacity_rps
        with np.errstate(over="ignore"):
            guess = np.ceil(target / (throughput * rho))
        n = np.clip(guess, st.min_replicas, st.max_replicas + 1).astype(np.int64)
        for _ in range(4):  # the division's rounding can be off by one count either way; settle it exactly
            down = (n > st.min_replicas) & ((n - 1) * throughput * rho >= target)
            up = (n <= st.max_replicas) & (n * throughput * rho < target)
            if not (down.any() or up.any()):
                break
            n = n - down + up
        return n

    def config(self, load_rps: float) -> PipelineConfig:
        """The maximum-capacity configuration, latency measured at ``load_rps`` (``+inf``: no batch-fill wait).

        Raises:
            InvalidLoad: ``load_rps`` is NaN or negative.
        """
        if math.isnan(load_rps) or load_rps < 0:
            raise InvalidLoad(f"maximum-capacity load {load_rps!r} rps is not a number >= 0")
        spec, o = self.spec, self.spec.objective
        product = o.accuracy_method == "product"
        idx = [np.flatnonzero(sc.replicas > 0) for sc in self.stages]
        lat, cores, gain, cost = [], [], [], []
        for sc, i in zip(self.stages, idx, strict=True):
            with np.errstate(divide="ignore", over="ignore"):
                wait = np.where(sc.batch[i] > 1, (sc.batch[i] - 1) / load_rps if load_rps > 0 else np.inf, 0.0)
            lat.append(sc.service_s[i] + wait)
            cores.append(sc.cores[i].astype(float))
            if product:
                gain.append(sc.accuracy[i])
                cost.append(o.beta * cores[-1] + o.gamma * sc.batch[i])
            else:
                gain.append(o.alpha * sc.accuracy[i] - o.beta * cores[-1] - o.gamma * sc.batch[i])
                cost.append(np.zeros(i.size))
        chosen = self._tie_break(lat, cores, gain, cost, spec.sla_s, product)
        if chosen is None:  # no choice at T* fits the SLA within the budget: the fewest cores, then the objective
            zero = [np.zeros(c.size) for c in cores]
            chosen = self._tie_break(zero, cores, gain, cost, 0.0, product)
        if chosen is None:  # unreachable: the capacity step found a choice within the budget
            chosen = [int(np.argmin(c)) for c in cores]
        return PipelineConfig(
            tuple(
                StageConfig.one(v, b, int(sc.replicas[i[k]]), c)
                for sc, i, k in zip(self.stages, idx, chosen, strict=True)
                for v, b, c in (sc.rows[int(i[k])],)
            )
        )

    def _tie_break(self, lat, cores, gain, cost, sla_s: float, product: bool) -> list[int] | None:
        """The fewest cores within ``sla_s`` and the budget, then the best objective within those cores."""
        budget = float(self.spec.core_budget)
        fewest = frontier_dp(
            [StageArrays(la, co, np.zeros(co.size), co) for la, co in zip(lat, cores, strict=True)], sla_s, budget
        )
        if fewest is None:
            return None
        least = sum(float(co[k]) for co, k in zip(cores, fewest, strict=True))
        best = frontier_dp(
            [StageArrays(*a) for a in zip(lat, cores, gain, cost, strict=True)],
            sla_s,
            least,
            product=product,
            scale=self.spec.objective.alpha if product else 1.0,
        )
        return best if best is not None else fewest


def max_capacity_config(spec: PipelineSpec, load_rps: float) -> PipelineConfig:
    """The maximum-capacity configuration within the core budget (see `MaxCapacity` for the exact definition).

    Args:
        spec: the pipeline.
        load_rps: the load the latency tie-break measures the batch-fill wait at (``+inf``: none).

    Raises:
        InvalidLoad: ``load_rps`` is NaN or negative.
    """
    return MaxCapacity(spec).config(load_rps)


_MAX_CAPACITY: dict[int, tuple[PipelineSpec, MaxCapacity]] = {}


def max_capacity(spec: PipelineSpec) -> MaxCapacity:
    """The spec's `MaxCapacity`, built once per spec object (its load-independent part is the costly one)."""
    hit = _MAX_CAPACITY.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    found = MaxCapacity(spec)
    if len(_MAX_CAPACITY) > 64:
        _MAX_CAPACITY.clear()
    _MAX_CAPACITY[id(spec)] = (spec, found)
    return found


def fit_budget(spec: PipelineSpec, config: PipelineConfig, load_rps: float) -> PipelineConfig:
    """``config`` if its total cores are within the core budget, else the maximum-capacity configuration within
    the budget (`MaxCapacity`, latency tie-break at ``load_rps``; a load that is no data counts as 0).

    The core budget is a hard cap for every policy: the control step passes every decision through this.
    """
    if config.total_cores <= spec.core_budget:
        return config
    return max_capacity(spec).config(load_rps if is_valid_load(load_rps) else 0.0)


def fastest_chain_s(spec: PipelineSpec) -> tuple[float, list[tuple[str, str, int, int]]]:
    """The lowest end-to-end latency any configuration can plan, and the (stage, variant, batch, cores) of it.

    Per stage the lowest service time ``l(v, b, c)`` over its option table (normally a request alone, batch 1,
    on the largest cores per replica), summed (seconds). The planned latency adds the batch-fill wait (>= 0),
    so this is its floor at every load: a spec whose SLA is below it can never meet the SLA.
    """
    total, chain = 0.0, []
    for st in spec.stages:
        t = option_table(st)
        i = int(np.argmin(t.service_s))
        total += float(t.service_s[i])
        chain.append((st.name, *t.rows[i]))
    return total, chain
