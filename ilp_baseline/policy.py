"""IPA as a `Policy`: every interval, predict the load, plan for ``headroom x`` it, and apply the optimum.

The predictor is injected (reactive, EWMA, IPA's LSTM, or the oracle), so this module stays below ``agents``.
Plans are cached by planned load (the mode is fixed per policy): the optimum depends on nothing else, and the
reactive predictors repeat loads often.

With ``hold_delta`` set the policy is ``ipa-hold``, IPA's planner with hysteresis: every interval it compares the
*hold* (the configuration in force with every stage's variant, batch and cores kept and only its replicas resized
for the planned load, `rlscale.model.resize_replicas`) with the *re-plan* (the optimum at that load), and re-plans
only when the hold is infeasible or the re-plan's objective beats the hold's by more than ``hold_delta x beta``.
 The cache is a bounded LRU (`CACHE_ENTRIES`): on a live cluster the LSTM's
float predictions make nearly every key unique, and an unbounded cache would grow for as long as the sidecar runs.

Where the spec has per-request SLOs (``request_slo``), the latency budget planned for is not the fixed SLA but a low
quantile of the remaining budgets seen last interval (`rlscale.model.planning_budget_s`: the 5th percentile, the SLA
before the first interval or after one without arrivals); the cache is keyed by (load, budget). Without
``request_slo`` the budget is the SLA and every plan is the same as before.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Sequence

from ilp_baseline.dp import solve_dp
from ilp_baseline.ilp import SOLVERS, solve
from ilp_baseline.problem import (
    MODES,
    InfeasibleLoad,
    Plan,
    cheapest_variants,
    fa2_high_variants,
    planning_data,
    rim_sizing,
)
from rlscale.errors import RlscaleError
from rlscale.interfaces import Predictor
from rlscale.model import objective_value, plan_fixed_variants, planning_budget_s, resize_replicas, with_budget
from rlscale.spec import PipelineSpec
from rlscale.types import PipelineConfig, PipelineState, StageConfig

log = logging.getLogger(__name__)

ALL_SOLVERS = (*SOLVERS, "dp")

CACHE_ENTRIES = 4096
"""Plans an `ILPPolicy` keeps, least recently used dropped first: a day of 10 s intervals is 8640 decisions, so
repeated loads still hit while a live sidecar's memory stays bounded (a few hundred bytes per entry)."""
PLANS_KEPT = 4096
"""Solved plans an `ILPPolicy` remembers in ``plans`` (the most recent), for the solver check
(``experiments/verify_solvers.py``)."""

# IPA's published predictor margins (%), from its bursty IPA-run configs (configs/final/sample-*.yaml and the
# revised-paper rows of ipa/derived/ipa_experiment_configs_from_notebooks.csv): headroom = 1 + margin / 100.
IPA_MARGIN_PERCENT = {"video": 0, "audio-qa": 20, "audio-sent": 20, "sum-qa": 0, "nlp": 0}


def ipa_headroom(spec: PipelineSpec) -> float:
    """IPA's own headroom for a bundled pipeline (1.0 for pipelines it did not publish)."""
    return 1.0 + IPA_MARGIN_PERCENT.get(spec.name, 0) / 100.0


def plan(
    spec: PipelineSpec,
    load_rps: float | Sequence[float],
    mode: str = "ipa",
    solver: str = "dp",
    rim_fixed: list[tuple[int, int]] | None = None,
    time_limit_s: float | None = None,
) -> Plan:
    """The optimal configuration at ``load_rps`` (one load, or one per stage) by the named solver (all three return
    the same optimum)."""
    if solver not in ALL_SOLVERS:
        raise RlscaleError(f"unknown solver {solver!r} (known: {', '.join(ALL_SOLVERS)})")
    data = planning_data(spec, load_rps, mode, rim_fixed=rim_fixed)
    if solver == "dp":
        return solve_dp(data)
    return solve(data, solver, time_limit_s=time_limit_s)


class ILPPolicy:
    """IPA's planner, or one of its baselines (``mode``), driven by a load predictor.

    Args:
        spec: the pipeline.
        predictor: where the load estimate comes from.
        mode: ``ipa``, ``fa2-low``, ``fa2-high`` or ``rim``.
        solver: ``cbc``, ``highs`` or ``dp`` (identical optima; ``dp`` is the fastest).
        headroom: plan for ``headroom x`` the predicted load (IPA's ``1 + predictor_margin/100``).
        peak_rps: for ``rim`` only, the load its fixed replicas are sized for.
        name: the policy's name in records.
        hold_delta: None (plain IPA: apply the optimum every interval), or the hysteresis margin of ``ipa-hold``,
            >= 0, in core-equivalents: keep the variant, batch and cores in force and resize replicas only, unless
            the re-plan's objective exceeds the hold's by more than ``hold_delta x`` the spec's ``beta`` (the
            objective of one core), so one value means the same on every pipeline and weight setting. 0 re-plans
            whenever the optimum is strictly better; larger values re-plan (roll out) less often.
        cache_entries: plans kept for reuse, least recently used dropped first (at least 1).
        plans_kept: the most recent solved plans kept in ``plans`` (0: none).

    Attributes:
        plans: ``(planned load, objective or None when infeasible)`` of the most recent solved (not cached)
            decisions, at most ``plans_kept``.
        solved_decisions: decisions solved (not cached) since construction, including those ``plans`` dropped.
        held_decisions: with ``hold_delta``, decisions that kept the variants, batches and cores in force.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        predictor: Predictor,
        *,
        mode: str = "ipa",
        solver: str = "dp",
        headroom: float = 1.0,
        hold_delta: float | None = None,
        peak_rps: float | None = None,
        name: str | None = None,
        cache_entries: int = CACHE_ENTRIES,
        plans_kept: int = PLANS_KEPT,
    ) -> None:
        if mode not in MODES:
            raise RlscaleError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
        if solver not in ALL_SOLVERS:
            raise RlscaleError(f"unknown solver {solver!r} (known: {', '.join(ALL_SOLVERS)})")
        if not headroom > 0:
            raise RlscaleError(f"headroom must be > 0, got {headroom}")
        if hold_delta is not None and not (math.isfinite(hold_delta) and hold_delta >= 0):
            raise RlscaleError(f"hold_delta must be a finite number >= 0, got {hold_delta}")
        if hold_delta is not None and mode == "rim":
            raise RlscaleError("rim fixes the replicas; it cannot hold by resizing them (hold_delta)")
        if mode == "rim" and peak_rps is None:
            raise RlscaleError("rim needs peak_rps to size its fixed replicas")
        if cache_entries < 1 or plans_kept < 0:
            raise RlscaleError(f"cache_entries must be >= 1 and plans_kept >= 0, got {cache_entries}, {plans_kept}")
        self.spec = spec
        self.predictor = predictor
        self.mode = mode
        self.solver = solver
        self.headroom = float(headroom)
        self.hold_delta = None if hold_delta is None else float(hold_delta)
        self.rim_fixed = rim_sizing(spec, peak_rps) if mode == "rim" and peak_rps is not None else None
        self.name = name or mode
        self.cache_entries = int(cache_entries)
        self._cache: OrderedDict[tuple[float, float], tuple[PipelineConfig, bool]] = OrderedDict()  # (plan, feasible)
        self.last_load_rps = 0.0
        self.last_budget_s = spec.sla_s
        self.infeasible_decisions = 0
        self.solved_decisions = 0
        self.held_decisions = 0
        self.plans: deque[tuple[float, float | None]] = deque(maxlen=int(plans_kept))

    def _fallback(self, load_rps: float, spec: PipelineSpec | None = None) -> PipelineConfig:
        """When nothing is feasible: the mode's variants (cheapest for ipa/rim) at their largest capacity (within
        ``spec``'s latency budget where one exists; default: the policy's spec)."""
        spec = spec or self.spec
        variants = fa2_high_variants(spec) if self.mode == "fa2-high" else cheapest_variants(spec)
        if self.rim_fixed is not None:
            stages = []
            for st, v, (n, c) in zip(self.spec.stages, variants, self.rim_fixed, strict=True):
                b = max(st.batch_sizes, key=lambda b, v=v, c=c, st=st: st.latency.throughput_rps(v, b, c))
                stages.append(StageConfig.one(v, b, n, c))
            return PipelineConfig(tuple(stages))
        return plan_fixed_variants(spec, variants, load_rps)

    def decide(self, state: PipelineState) -> PipelineConfig:
        load = max(0.0, self.predictor.predict(state)) * self.headroom
        self.last_load_rps = load
        budget = planning_budget_s(self.spec, state.last)
        self.last_budget_s = budget
        spec = with_budget(self.spec, budget)
        config, feasible = self._replan(state, load, spec)
        if self.hold_delta is not None:
            config = self._hold_or_replan(state, load, config, feasible, spec)
        if config != state.config:
            log.debug("t=%.0fs %s plans for %.1f rps: %s", state.time_s, self.name, load, config)
        return config

    def _replan(
        self, state: PipelineState, load: float, spec: PipelineSpec | None = None
    ) -> tuple[PipelineConfig, bool]:
        """The optimum at ``load`` within ``spec``'s SLA (the planning budget; default the policy's spec), cached,
        and whether it is feasible (else the mode's fallback)."""
        spec = spec or self.spec
        key = (round(load, 6), round(spec.sla_s, 6))
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        self.solved_decisions += 1
        try:
            result = plan(spec, load, self.mode, self.solver, self.rim_fixed)
            planned = (result.config, True)
            self.plans.append((load, result.objective))
        except InfeasibleLoad as exc:
            self.infeasible_decisions += 1
            self.plans.append((load, None))
            planned = (self._fallback(load, spec), False)
            log.warning("t=%.0fs %s: %s; falling back to %s", state.time_s, self.name, exc, planned[0])
        self._cache[key] = planned
        if len(self._cache) > self.cache_entries:
            self._cache.popitem(last=False)
        return planned

    def _hold_or_replan(
        self,
        state: PipelineState,
        load: float,
        replan: PipelineConfig,
        feasible: bool,
        spec: PipelineSpec | None = None,
    ) -> PipelineConfig:
        """``ipa-hold``'s hysteresis: the hold (replicas resized) unless it is infeasible or the re-plan gains more
        than ``hold_delta`` core-equivalents of objective."""
        delta = self.hold_delta or 0.0
        spec = spec or self.spec
        hold = resize_replicas(spec, state.config, load)
        if hold is None:
            log.debug("t=%.0fs %s re-plans: holding is infeasible at %.1f rps", state.time_s, self.name, load)
            return replan
        if not feasible:
            self.held_decisions += 1
            log.debug("t=%.0fs %s holds: no re-plan is feasible at %.1f rps", state.time_s, self.name, load)
            return hold
        gain = objective_value(self.spec, replan) - objective_value(self.spec, hold)
        margin = delta * self.spec.objective.beta
        if gain > margin:
            log.debug("t=%.0fs %s re-plans: it gains %.4g > delta x beta = %.4g", state.time_s, self.name, gain, margin)
            return replan
        self.held_decisions += 1
        log.debug(
            "t=%.0fs %s holds: a re-plan gains %.4g <= delta x beta = %.4g", state.time_s, self.name, gain, margin
        )
        return hold
