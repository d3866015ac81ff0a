"""The SLA / throughput model shared by planners (ILP, DP, safety layer, static policies).

For a stage running variant v with batch b and c cores per replica at load lambda (rps):

- replica throughput ``h = b / l(v, b, c)``; the stage needs ``n >= ceil(lambda / (h * rho_max))`` replicas;
- stage latency budget ``l(v, b, c) + (b - 1) / lambda`` (service plus the wait for the batch to fill, IPA's form);

and a pipeline configuration is feasible when every stage has enough replicas within its range, the stage
budgets sum to at most the SLA, and the total cores are within the core budget.

A configuration's capacity is that of its bottleneck stage, ``min_s n_s * h(v_s, b_s, c_s) * rho_max`` (rps): the
highest load it is feasible for on throughput (`pipeline_capacity_rps`).

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


def objective_value(spec: PipelineSpec, config: PipelineConfig) -> float:
    """``alpha * A - beta * cores - gamma * batch`` of a configuration: what every solver maximises, and what a
    live cluster's interval is scored by."""
    o = spec.objective
    return o.alpha * spec.accuracy(config.variants) - o.beta * config.total_cores - o.gamma * config.total_batch


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
    if load_rps == 0:
        return stage.min_replicas
    ratio = load_rps / (stage.latency.throughput_rps(variant, batch, cores) * rho_max)
    if not math.isfinite(ratio):
        return UNBOUNDED_REPLICAS
    return max(stage.min_replicas, min(math.ceil(ratio - _EPS), UNBOUNDED_REPLICAS))


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
    out = []
    for v in variants if variants is not None else stage.variant_names:
        for b in stage.batch_sizes:
            for c in stage.cores:
                n = replicas_needed(stage, v, b, c, load_rps, rho_max)
                if n > stage.max_replicas:
                    continue
                out.append(StageOption(StageConfig(v, b, n, c), stage_latency_s(stage, v, b, c, load_rps), n * c))
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
