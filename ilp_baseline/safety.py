"""The safety layer (DESIGN.md section 6): project a proposed configuration onto the SLA-feasible set.

``project(proposed, state) -> (config, report)`` returns the configuration in F(load) nearest to the proposal,
where F(load) is the set of `rlscale.model` (enough replicas per stage for the load, planned latency
within the SLA, total cores within the budget, every setting on its grid) and the distance is a weighted count
of changes, summed over stages:

    w_variant * [v != v'] + w_batch * |log2 b - log2 b'| + w_cores * |log2 c - log2 c'| + w_replicas * |n - n'|

The load is a floor, so the agent stays free to provision ahead of a rise or to hold through a dip. ``observed`` is
the highest per-second load of the last interval; ``backlog`` adds the longest stage queue divided by the interval
(capacity to drain a backlog within one interval: the observed peak alone can leave a queue that built up during a
reaction delay in place for minutes; the default); ``drain`` is the last interval's *mean* load plus that backlog
term: capacity that, at the load just seen, empties the queue within one interval, without forcing capacity for the
noisiest second of every interval. ``predicted`` uses a predictor instead. ``drain`` lets a held configuration ride
through per-second noise (IPA-hold's actions cost up to 0.9 core less on calm windows) but admits more violations
on bursty ones (experiments/RESULTS.md section 11), so it is an option, not the default.

Invariants (property-tested): the result is in F whenever F is non-empty; a feasible proposal comes back
unchanged (under ``objective.sla_mode: hard``, unless it lowers capacity to save cores while violations are
observed: then the configuration in force is projected instead); the result is a nearest feasible configuration;
when F is empty the result is the maximum-capacity
configuration within the budget (`max_capacity_config`, exact) and the report says ``infeasible``; the result
never exceeds the core budget. Two exact implementations agree: the Pareto DP of `rlscale.pareto.frontier_dp`
(default, fast; the rare budget-binding case runs it again tracking cores, over every replica count up to the
nearest one) and an integer program in PuLP (``solver="pulp"``).

A load that is not a finite number >= 0 (a NaN sample in the last interval, a NaN or negative prediction, an
infinite backlog rate) is *no data*, not a load: `SafetyLayer.project` raises `rlscale.model.InvalidLoad`
(a `ValueError`) and approves nothing, neither the proposal nor a move. Its callers hold the configuration that
is running: the sidecar turns any failed decision into "holding the current config" (so a metrics glitch can
neither scale the pipeline down under load nor trigger a rollout of every stage), and the simulator and the
training environment stop, since their loads come from traces and a NaN there is a bug.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rlscale.control import Projection
from rlscale.errors import RlscaleError
from rlscale.interfaces import Predictor
from rlscale.model import (  # noqa: F401 - MaxCapacity and max_capacity_config are re-exported (moved to the model)
    InvalidLoad,
    MaxCapacity,
    batch_fill_wait_s,
    is_feasible,
    max_capacity_config,
    option_table,
    pipeline_capacity_rps,
    replicas_for,
    replicas_needed,
    require_valid_load,
)
from rlscale.pareto import StageArrays, frontier_dp
from rlscale.predictors import last_interval_mean_rps, last_interval_peak_rps
from rlscale.spec import PipelineSpec
from rlscale.types import PipelineConfig, PipelineState, StageConfig

LOAD_MODES = ("observed", "backlog", "drain", "predicted")
DEFAULT_LOAD = "backlog"
"""The safety layer's default floor: the last interval's peak plus its backlog. It beat ``observed`` on the agents'
validation cells (issue 15; experiments/RESULTS.md section 10), so agents train and deploy with it; ``drain`` is
cheaper on calm windows and lets more violations through on bursty ones (section 11)."""
SOLVERS = ("dp", "pulp")


@dataclass(frozen=True)
class DistanceWeights:
    """Weights of the projection distance.

    Attributes:
        variant: cost of switching a stage's variant.
        batch: cost per doubling or halving of the batch size.
        cores: cost per doubling or halving of the cores per replica.
        replicas: cost per replica added or removed.
    """

    variant: float = 4.0
    batch: float = 1.0
    cores: float = 1.0
    replicas: float = 0.5


# the load floor: the highest per-second load of the last interval
observed_load_rps = last_interval_peak_rps


def stage_distance(w: DistanceWeights, proposed: StageConfig, candidate: StageConfig) -> float:
    return (
        w.variant * (proposed.variant != candidate.variant)
        + w.batch * abs(math.log2(proposed.batch) - math.log2(candidate.batch))
        + w.cores * abs(math.log2(proposed.cores) - math.log2(candidate.cores))
        + w.replicas * abs(proposed.replicas - candidate.replicas)
    )


def config_distance(w: DistanceWeights, a: PipelineConfig, b: PipelineConfig) -> float:
    return sum(stage_distance(w, x, y) for x, y in zip(a.stages, b.stages, strict=True))


class SafetyLayer:
    """Projects proposals onto F(load) (a `rlscale.control.Guard`).

    Args:
        spec: the pipeline.
        weights: distance weights.
        solver: ``dp`` (exact Pareto DP, default) or ``pulp`` (exact integer program, CBC).
        load: ``observed`` (the last interval's peak, a floor), ``backlog`` (that plus the longest queue / interval)
            or ``predicted`` (needs ``predictor``).
        predictor: the load predictor for ``load="predicted"``.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        weights: DistanceWeights | None = None,
        *,
        solver: str = "dp",
        load: str = DEFAULT_LOAD,
        predictor: Predictor | None = None,
    ) -> None:
        if solver not in SOLVERS:
            raise RlscaleError(f"unknown safety solver {solver!r} (known: {', '.join(SOLVERS)})")
        if load not in LOAD_MODES:
            raise RlscaleError(f"unknown safety load {load!r} (known: {', '.join(LOAD_MODES)})")
        if load == "predicted" and predictor is None:
            raise RlscaleError("safety load 'predicted' needs a predictor")
        self.spec = spec
        self.weights = weights or DistanceWeights()
        self.solver = solver
        self.load_mode = load
        self.predictor = predictor
        self._max_capacity: MaxCapacity | None = None  # built on the first overload, load-independent

    def load_rps(self, state: PipelineState) -> float:
        """The load F is taken at, as the mode computes it; not checked here (`project` rejects what is not a
        finite number >= 0, so a NaN or negative prediction is no longer read as 0 rps)."""
        if self.load_mode == "predicted" and self.predictor is not None:
            return float(self.predictor.predict(state))
        observed = last_interval_mean_rps(state) if self.load_mode == "drain" else observed_load_rps(state)
        if self.load_mode in ("backlog", "drain") and state.last is not None:
            # capacity to carry the observed peak (backlog) or mean (drain) *and* drain the longest queue within one
            # interval
            backlog = max((m.queue_len for m in state.last.stages), default=0)
            if state.interval_s <= 0:
                return observed + (math.inf if backlog else 0.0)
            return observed + backlog / state.interval_s
        return observed

    def max_capacity(self, load_rps: float) -> PipelineConfig:
        """`max_capacity_config` of the spec, with the load-independent part computed once."""
        if self._max_capacity is None:
            self._max_capacity = MaxCapacity(self.spec)
        return self._max_capacity.config(load_rps)

    def project(self, proposed: PipelineConfig, state: PipelineState) -> tuple[PipelineConfig, Projection]:
        """The nearest configuration in F(load) and what the projection did (a `rlscale.control.Projection`).

        Raises:
            InvalidLoad: the load is not a finite number >= 0 (no data): nothing is approved, the caller holds.
        """
        t0 = time.perf_counter()
        load = require_valid_load(self.load_rps(state), f"safety layer: the {self.load_mode} load")
        target = self._hard_target(proposed, state)
        if target is proposed and is_feasible(self.spec, proposed, load):
            return proposed, Projection(load, feasible_input=True, ms=(time.perf_counter() - t0) * 1e3)
        result = target if is_feasible(self.spec, target, load) else self.nearest(target, load)
        infeasible = result is None
        if result is None:
            result = self.max_capacity(load)
        return result, Projection(
            load,
            feasible_input=False,
            infeasible=infeasible,
            distance=config_distance(self.weights, proposed, result),
            changed_stages=tuple(
                st.name for st, a, b in zip(self.spec.stages, proposed.stages, result.stages, strict=True) if a != b
            ),
            capacity_rps=pipeline_capacity_rps(self.spec, result) if infeasible else math.nan,
            ms=(time.perf_counter() - t0) * 1e3,
        )

    def _hard_target(self, proposed: PipelineConfig, state: PipelineState) -> PipelineConfig:
        """What the projection starts from: the proposal, except under ``objective.sla_mode: hard`` while the last
        interval had violations, when a proposal that saves cores by lowering the pipeline's capacity below the
        configuration in force (a higher predicted violation risk, to save cost) is replaced by the configuration
        in force. Under ``priced`` (the default), always the proposal."""
        if self.spec.objective.sla_mode != "hard" or state.last is None or not state.last.sla_violation_rate > 0:
            return proposed
        current = state.config
        if len(current.stages) != len(proposed.stages) or current.total_cores > self.spec.core_budget:
            return proposed
        if proposed.total_cores < current.total_cores and pipeline_capacity_rps(
            self.spec, proposed
        ) < pipeline_capacity_rps(self.spec, current):
            return current
        return proposed

    def nearest(self, proposed: PipelineConfig, load_rps: float) -> PipelineConfig | None:
        """A nearest configuration in F(load), or None when F(load) is empty.

        Raises:
            InvalidLoad: ``load_rps`` is not a finite number >= 0.
        """
        load_rps = require_valid_load(load_rps, "safety layer: load")
        if self.solver == "pulp":
            return self._nearest_pulp(proposed, load_rps)
        return self._nearest_dp(proposed, load_rps)

    def _candidates(
        self, s: int, proposed: StageConfig, load: float
    ) -> tuple[Callable[[int], StageConfig], StageArrays]:
        """Every (variant, batch, cores) of stage s that carries the load within the SLA on its own, at its
        nearest replica count ``min(max_replicas, max(n_min, n'))``, as frontier arrays (gain = -distance)."""
        st, t, w = self.spec.stages[s], option_table(self.spec.stages[s]), self.weights
        lat = t.planned_latency_s(load)
        n_min = replicas_for(load, t.throughput_rps * self.spec.objective.rho_max, st.min_replicas)
        ok = (n_min <= st.max_replicas) & (lat <= self.spec.sla_s)
        n = np.minimum(st.max_replicas, np.maximum(n_min, proposed.replicas))
        distance = (
            w.variant * (t.variant_index != st.variant_names.index(proposed.variant))
            + w.batch * np.abs(np.log2(t.batch) - np.log2(proposed.batch))
            + w.cores * np.abs(np.log2(t.cores) - np.log2(proposed.cores))
            + w.replicas * np.abs(n - proposed.replicas)
        )
        idx = np.flatnonzero(ok)
        arrays = StageArrays(lat[idx], (n * t.cores)[idx], -distance[idx], np.zeros(idx.size))

        def config(k: int) -> StageConfig:  # built only for the chosen candidate
            v, b, c = t.rows[int(idx[k])]
            return StageConfig(v, b, int(n[idx[k]]), c)

        return config, arrays

    def _nearest_dp(self, proposed: PipelineConfig, load: float) -> PipelineConfig | None:
        """The DP on the budget-relaxed problem; exact whenever its answer fits the budget.

        Without the budget the nearest replica count of every (variant, batch, cores) is known in advance, so each
        stage has one candidate per grid point and the search is a 2-D frontier (latency, distance): a few
        milliseconds even at 10 stages. When the relaxed optimum exceeds the budget (the load forces more
        replicas than the budget holds, or the proposal itself is over budget), the budget couples the stages'
        replica counts and `_nearest_budget_dp` decides instead (the same DP tracking cores, milliseconds).
        """
        cands = [self._candidates(s, p, load) for s, p in enumerate(proposed.stages)]
        if any(arr.lat.size == 0 for _c, arr in cands):
            return None
        chosen = frontier_dp([arr for _c, arr in cands], self.spec.sla_s, None)
        if chosen is None:
            return None  # the latency constraint alone is unsatisfiable: F is empty
        config = PipelineConfig(tuple(make(i) for (make, _a), i in zip(cands, chosen, strict=True)))
        if config.total_cores <= self.spec.core_budget:
            return config
        return self._nearest_budget_dp(proposed, load)

    def _nearest_budget_dp(self, proposed: PipelineConfig, load: float) -> PipelineConfig | None:
        """The exact projection when the core budget binds: the Pareto DP tracking cores, over every (variant,
        batch, cores) of a stage that carries the load within the SLA on its own, at every replica count from the
        fewest that carry the load up to its nearest count ``min(max_replicas, max(n_min, n'))`` (more replicas
        only add distance and cores). It minimises the distance plus ``1e-6`` x the total cores, the integer
        program's objective (`_nearest_pulp`), and resolves that tie-break exactly where CBC's tolerances may not.
        """
        spec, w = self.spec, self.weights
        arrays: list[StageArrays] = []
        picks: list[tuple[tuple[tuple[str, int, int], ...], np.ndarray, np.ndarray]] = []
        for st, p in zip(spec.stages, proposed.stages, strict=True):
            t = option_table(st)
            lat = t.planned_latency_s(load)
            n_min = replicas_for(load, t.throughput_rps * spec.objective.rho_max, st.min_replicas)
            idx = np.flatnonzero((n_min <= st.max_replicas) & (lat <= spec.sla_s))
            if idx.size == 0:
                return None
            lo = n_min[idx].astype(np.int64)
            counts = np.minimum(st.max_replicas, np.maximum(lo, p.replicas)) - lo + 1
            row = np.repeat(idx, counts)
            n = np.repeat(lo, counts) + np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
            distance = (
                w.variant * (t.variant_index[row] != st.variant_names.index(p.variant))
                + w.batch * np.abs(np.log2(t.batch[row]) - np.log2(p.batch))
                + w.cores * np.abs(np.log2(t.cores[row]) - np.log2(p.cores))
                + w.replicas * np.abs(n - p.replicas)
            )
            cores = n * t.cores[row]
            arrays.append(StageArrays(lat[row], cores, -(distance + 1e-6 * cores), np.zeros(row.size)))
            picks.append((t.rows, row, n))
        chosen = frontier_dp(arrays, spec.sla_s, float(spec.core_budget))
        if chosen is None:
            return None
        stages = []
        for (rows, row, n), k in zip(picks, chosen, strict=True):
            v, b, c = rows[int(row[k])]
            stages.append(StageConfig(v, b, int(n[k]), c))
        return PipelineConfig(tuple(stages))

    def _nearest_pulp(self, proposed: PipelineConfig, load: float) -> PipelineConfig | None:
        import pulp

        spec = self.spec
        rho = spec.objective.rho_max
        w = self.weights
        prob = pulp.LpProblem("safety_projection", pulp.LpMinimize)
        x, n, opts = {}, {}, {}
        distance_terms, latency_terms, core_terms = [], [], []
        for s, (st, p) in enumerate(zip(spec.stages, proposed.stages, strict=True)):
            stage_opts = []
            for v in st.variant_names:
                for b in st.batch_sizes:
                    wait = batch_fill_wait_s(b, load)
                    if math.isinf(wait):
                        continue
                    for c in st.cores:
                        n_min = replicas_needed(st, v, b, c, load, rho)
                        lat = st.latency.latency_s(v, b, c) + wait
                        if n_min <= st.max_replicas and lat <= spec.sla_s:
                            stage_opts.append((v, b, c, n_min, lat))
            if not stage_opts:
                return None
            opts[s] = stage_opts
            for i, (v, b, c, n_min, lat) in enumerate(stage_opts):
                x[s, i] = prob.add_variable(f"x_{s}_{i}", cat=pulp.LpBinary)
                n[s, i] = prob.add_variable(f"n_{s}_{i}", lowBound=0, upBound=st.max_replicas, cat=pulp.LpInteger)
                prob += n[s, i] >= n_min * x[s, i], f"replicas_cut_{s}_{i}"
                prob += n[s, i] <= st.max_replicas * x[s, i], f"replicas_max_{s}_{i}"
                fixed = stage_distance(w, p, StageConfig(v, b, p.replicas, c))  # all but the replica term
                distance_terms.append(fixed * x[s, i])
                latency_terms.append(lat * x[s, i])
                core_terms.append(c * n[s, i])
            prob += pulp.lpSum(x[s, i] for i in range(len(stage_opts))) == 1, f"one_config_{s}"
            dev = prob.add_variable(f"replica_change_{s}", lowBound=0)
            total_n = pulp.lpSum(n[s, i] for i in range(len(stage_opts)))
            prob += dev >= total_n - p.replicas, f"replica_change_up_{s}"
            prob += dev >= p.replicas - total_n, f"replica_change_down_{s}"
            distance_terms.append(w.replicas * dev)
        prob += pulp.lpSum(latency_terms) <= spec.sla_s, "latency"
        prob += pulp.lpSum(core_terms) <= spec.core_budget, "core_budget"
        prob += pulp.lpSum(distance_terms) + 1e-6 * pulp.lpSum(core_terms), "distance"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            solver = pulp.PULP_CBC_CMD(msg=False, gapRel=1e-9, gapAbs=1e-9)
        prob.solve(solver)
        status = pulp.LpStatus[prob.status]
        if status == "Infeasible":
            return None
        if status != "Optimal":
            raise RlscaleError(f"safety projection: CBC returned {status}")
        stages = []
        for s, stage_opts in opts.items():
            i = next(i for i in range(len(stage_opts)) if (x[s, i].value() or 0) > 0.5)
            v, b, c, _n_min, _lat = stage_opts[i]
            stages.append(StageConfig(v, b, int(round(n[s, i].value())), c))
        return PipelineConfig(tuple(stages))
