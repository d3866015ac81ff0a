"""The model every part of rlscale shares (DESIGN section 3): one option table, one replica formula, feasibility,
the objective and the score. The ILP and the DP (`ilp_baseline`), the safety layer, the env's action decoder, the
simulator's metrics and the cluster's interval score all call these; nothing re-derives them.

For a stage running variant v with batch b and c cores per replica at load lambda (rps):

- replica throughput ``h = b / l(v, b, c)``; the stage needs ``n >= ceil(lambda / (h * rho_max))`` replicas
  (`replicas_for`, elementwise over the stage's `option_table`);
- stage latency budget ``l(v, b, c) + (b - 1) / lambda`` (service plus the wait for the batch to fill, IPA's form);

and a pipeline configuration is feasible when every stage has enough replicas within its range, the stage
budgets sum to at most the SLA, and the total cores are within the core budget.

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
from dataclasses import dataclass

import numpy as np

from rlscale.errors import RlscaleError
from rlscale.pareto import StageArrays, frontier_dp
from rlscale.spec import PipelineSpec, StageSpec
from rlscale.types import PipelineConfig, StageConfig

_EPS = 1e-9
log = logging.getLogger(__name__)

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


def objective_of(spec: PipelineSpec, accuracy: float, cost_cores: float, batch: float) -> float:
    """THE objective, ``alpha * A - beta * C - gamma * B`` (DESIGN section 3): accuracy A as the spec combines it,
    cost C in cores, B the total batch size. Solvers take A, C, B of a configuration (`objective_value`); the
    simulator and the cluster take an interval's measured accuracy and allocated cores."""
    o = spec.objective
    return o.alpha * accuracy - o.beta * cost_cores - o.gamma * batch


def objective_value(spec: PipelineSpec, config: PipelineConfig) -> float:
    """`objective_of` a configuration: what every solver maximises."""
    return objective_of(spec, spec.accuracy(config.variants), config.total_cores, config.total_batch)


def score(spec: PipelineSpec, objective: float, violation_rate: float) -> float:
    """THE score policies are ranked by, per interval and per run: ``objective - sla_penalty * violation_rate``
    (violation_rate = (late + dropped) / arrivals)."""
    return objective - spec.objective.sla_penalty * violation_rate


def batch_fill_wait_s(batch: int, load_rps: float) -> float:
    """Time for ``batch`` requests to accumulate at ``load_rps`` (0 for batch 1; inf for b > 1 with no load, a
    negative load or an unknown (NaN) one; 0 at an infinite load)."""
    if batch <= 1:
        return 0.0
    if not load_rps > 0:  # also NaN
        return math.inf
    return (batch - 1) / load_rps


def stage_latency_s(stage: StageSpec, variant: str, batch: int, cores: int, load_rps: float) -> float:
    """IPA's planned stage latency: service time of a full batch plus the batch-fill wait."""
    return stage.latency.latency_s(variant, batch, cores) + batch_fill_wait_s(batch, load_rps)


def stage_capacity_rps(stage: StageSpec, config: StageConfig, rho_max: float) -> float:
    """Highest load one stage carries: ``n * h(v, b, c) * rho_max`` (rps)."""
    return config.replicas * stage.latency.throughput_rps(config.variant, config.batch, config.cores) * rho_max


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
        needed = np.ceil(np.asarray(load_rps, dtype=float) / replica_rps - _EPS)
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

    def wait_s(self, load_rps: float) -> np.ndarray:
        """`batch_fill_wait_s` of every row at ``load_rps``."""
        with np.errstate(divide="ignore", over="ignore"):  # a tiny load: the wait is infinite, as it should be
            return np.where(self.batch > 1, (self.batch - 1) / load_rps if load_rps > 0 else np.inf, 0.0)

    def planned_latency_s(self, load_rps: float) -> np.ndarray:
        """`stage_latency_s` of every row at ``load_rps``: service plus batch-fill wait."""
        return self.service_s + self.wait_s(load_rps)


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
        throughput_rps=batch / service,
        acc_rank=np.array([stage.rank_accuracy(v) for v, _b, _c in rows]),
        acc_raw=np.array([stage.variant(v).accuracy for v, _b, _c in rows]),
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
    """Every (variant, batch, cores) of a stage with the fewest replicas that carry ``load_rps``.

    Options that need more than ``max_replicas`` are left out.
    """
    table = option_table(stage)
    n = replicas_for(load_rps, table.throughput_rps * rho_max, stage.min_replicas)
    latency = table.planned_latency_s(load_rps)
    keep = n <= stage.max_replicas
    if variants is not None:
        keep &= np.isin(table.variant_index, [stage.variant_names.index(v) for v in variants])
    out = []
    for i in np.flatnonzero(keep):
        v, b, c = table.rows[i]
        out.append(StageOption(StageConfig(v, b, int(n[i]), c), float(latency[i]), int(n[i]) * c))
    return out


def violations(spec: PipelineSpec, config: PipelineConfig, load_rps: float) -> list[str]:
    """Why ``config`` is not in F(load); an empty list means feasible."""
    problems = []
    if len(config.stages) != len(spec.stages):
        return [f"expected {len(spec.stages)} stages, got {len(config.stages)}"]
    if not is_valid_load(load_rps):  # no data: nothing is feasible (NaN compares false and would pass the rest)
        problems.append(f"load {load_rps!r} rps is not a finite number >= 0 (no data)")
    total_latency = 0.0
    for st, sc in zip(spec.stages, config.stages, strict=True):
        if sc.variant not in st.variant_names:
            problems.append(f"{st.name}: unknown variant {sc.variant}")
            continue
        if sc.batch not in st.batch_sizes:
            problems.append(f"{st.name}: batch {sc.batch} not allowed")
        if sc.cores not in st.cores:
            problems.append(f"{st.name}: {sc.cores} cores not allowed")
        if not st.min_replicas <= sc.replicas <= st.max_replicas:
            problems.append(f"{st.name}: {sc.replicas} replicas outside [{st.min_replicas}, {st.max_replicas}]")
        capacity = stage_capacity_rps(st, sc, spec.objective.rho_max)
        if capacity + _EPS < load_rps:
            problems.append(f"{st.name}: capacity {capacity:.2f} rps < load {load_rps:.2f} rps")
        total_latency += stage_latency_s(st, sc.variant, sc.batch, sc.cores, load_rps)
    if total_latency > spec.sla_s + _EPS:
        problems.append(f"latency {total_latency:.3f} s > SLA {spec.sla_s:g} s")
    if config.total_cores > spec.core_budget:
        problems.append(f"{config.total_cores} cores > budget {spec.core_budget}")
    return problems


def is_feasible(spec: PipelineSpec, config: PipelineConfig, load_rps: float) -> bool:
    return not violations(spec, config, load_rps)


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
            opts = [StageOption(StageConfig(v, b, stage.max_replicas, c), lat, stage.max_replicas * c)]
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
    log.warning(
        "%s: no configuration of %s meets the SLA within the budget at %.1f rps; using the fastest",
        spec.name,
        "/".join(variants),
        load_rps,
    )
    return PipelineConfig(tuple(min(opts, key=lambda o: (o.latency_s, o.cores_total)).config for opts in per_stage))
