"""The safety layer (DESIGN.md section 6): project a proposed configuration onto the SLA-feasible set.

``project(proposed, state) -> (config, report)`` returns the configuration in F(load) nearest to the proposal,
where F(load) is the set of `rlscale.model` (enough replicas per stage for the load, planned latency
within the SLA, or with per-request SLOs within the planning budget of `rlscale.model.planning_budget_s`, total
cores within the budget, every setting on its grid) and the distance is a weighted count
of changes, summed over stages:

    w_variant * [v != v'] + w_batch * |log2 b - log2 b'| + w_cores * |log2 c - log2 c'| + w_replicas * |n - n'|

With variant pools (a stage whose proposal or candidate runs two or more), the stage's distance is a sum over the
union of the two sides' variants (`stage_distance`): a pool on both sides costs its batch, cores and replica
changes plus ``w_share * |share - share'|``; a pool on one side only costs ``w_variant + w_replicas * n`` (as if it
were started from, or shut down to, nothing). Between single pools it is exactly the formula above.

F(load) of a stage that may run pools (``max_pools >= 2``) is searched over a finite candidate set: every
single-pool configuration, the two-pool options of the planners at the load (`rlscale.model.two_pool_options`,
replicas fixed) and the proposal's own pools kept with their shares and resized to carry them (the fewest replicas,
as `rlscale.model.resize_replicas`, and the nearest: at least the proposed ones). "Nearest" below is nearest over
that set; other mixes (other shares, three or more pools) are reached only by a proposal that is feasible as it is.

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
nearest one) and an integer program in PuLP (``solver="pulp"``; a stage that may run pools, or whose proposal does,
is one binary per enumerated candidate there, the DP's own candidate arrays). When F is empty the answer,
`MaxCapacity`, stays single-pool.

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
    planning_budget_s,
    replicas_for,
    replicas_needed,
    require_valid_load,
    stage_latency_s,
    two_pool_options,
    with_budget,
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
        share: cost of moving all of a stage's requests from one pool to another (per share of 1, i.e. 100%),
            for a pool on both sides of a pooled change.
    """

    variant: float = 4.0
    batch: float = 1.0
    cores: float = 1.0
    replicas: float = 0.5
    share: float = 1.0


# the load floor: the highest per-second load of the last interval
observed_load_rps = last_interval_peak_rps


def stage_distance(w: DistanceWeights, proposed: StageConfig, candidate: StageConfig) -> float:
    """The projection distance of one stage (module docstring).

    Single pool to single pool: ``w_variant [v != v'] + w_batch |log2 b - log2 b'| + w_cores |log2 c - log2 c'| +
    w_replicas |n - n'|``. When either side runs pools: over the union of their variants, a pool on both sides
    costs ``w_batch |log2 b - log2 b'| + w_cores |log2 c - log2 c'| + w_replicas |n - n'| + w_share |s - s'|``, a
    pool on one side only ``w_variant + w_replicas n``. Non-negative, symmetric and 0 exactly between equal
    stages; the triangle inequality holds within each of the two formulas (not across them: a variant switch costs
    ``w_variant`` single to single, more through a mix).
    """
    if len(proposed.pools) == len(candidate.pools) == 1:
        return (
            w.variant * (proposed.variant != candidate.variant)
            + w.batch * abs(math.log2(proposed.batch) - math.log2(candidate.batch))
            + w.cores * abs(math.log2(proposed.cores) - math.log2(candidate.cores))
            + w.replicas * abs(proposed.replicas - candidate.replicas)
        )
    a = {p.variant: p for p in proposed.pools}
    b = {p.variant: p for p in candidate.pools}
    total = 0.0
    for v in sorted(a.keys() | b.keys()):
        x, y = a.get(v), b.get(v)
        if x is None or y is None:
            total += w.variant + w.replicas * (x or y).replicas
            continue
        total += (
            w.batch * abs(math.log2(x.batch) - math.log2(y.batch))
            + w.cores * abs(math.log2(x.cores) - math.log2(y.cores))
            + w.replicas * abs(x.replicas - y.replicas)
            + w.share * abs(x.share - y.share)
        )
    return total


@dataclass(frozen=True)
class _Proposed:
    """A proposed stage's pools by variant index, as arrays over the stage's variants (for vectorised distances).

    Attributes:
        has: whether the proposal runs a pool of the variant.
        log_batch, log_cores, replicas, share: that pool's (0 where ``has`` is false).
        alone: the distance of dropping every proposed pool, ``sum (w_variant + w_replicas n)``.
        cost: per variant, what its pool contributes to ``alone``.
        pooled: the proposal runs two or more pools.
    """

    has: np.ndarray
    log_batch: np.ndarray
    log_cores: np.ndarray
    replicas: np.ndarray
    share: np.ndarray
    alone: float
    cost: np.ndarray
    pooled: bool


def _proposed(w: DistanceWeights, names: tuple[str, ...] | list[str], proposed: StageConfig) -> _Proposed:
    k = len(names)
    has, lb, lc, n, sh = np.zeros(k, bool), np.zeros(k), np.zeros(k), np.zeros(k), np.zeros(k)
    for p in proposed.pools:
        if p.variant not in names:
            continue  # an unknown variant: on the proposal's side only (counted in ``alone``)
        i = names.index(p.variant)
        has[i], lb[i], lc[i], n[i], sh[i] = True, math.log2(p.batch), math.log2(p.cores), p.replicas, p.share
    cost = np.where(has, w.variant + w.replicas * n, 0.0)
    alone = math.fsum(w.variant + w.replicas * p.replicas for p in proposed.pools)
    return _Proposed(has, lb, lc, n, sh, alone, cost, len(proposed.pools) > 1)


def _pool_terms(w: DistanceWeights, pr: _Proposed, vi, log_b, log_c, n, share) -> np.ndarray:
    """Per candidate pool (arrays): the change of the pooled distance from ``pr.alone`` that this pool brings
    (matched: its changes minus the proposed pool's drop cost; unmatched: starting it)."""
    matched = pr.has[vi]
    changes = (
        w.batch * np.abs(log_b - pr.log_batch[vi])
        + w.cores * np.abs(log_c - pr.log_cores[vi])
        + w.replicas * np.abs(n - pr.replicas[vi])
        + w.share * np.abs(share - pr.share[vi])
    )
    return np.where(matched, changes - pr.cost[vi], w.variant + w.replicas * n)


def config_distance(w: DistanceWeights, a: PipelineConfig, b: PipelineConfig) -> float:
    return sum(stage_distance(w, x, y) for x, y in zip(a.stages, b.stages, strict=True))


class _Candidates:
    """One stage's projection candidates as arrays (latency, cores, distance): single-pool rows first, then the
    two-pool options, then the proposal's own pools resized; ``config(k)`` builds candidate k."""

    def __init__(self, stage, rows, row, n, lat, cores, distance) -> None:
        self.stage, self.rows, self.row, self.n = stage, rows, row, n
        self.singles = int(row.size)
        self.lat, self.cores, self.distance = lat, np.asarray(cores, dtype=float), distance
        self.mixes = None
        self.own: list[StageConfig] = []

    def extend(self, lat: np.ndarray, cores: np.ndarray, distance: np.ndarray) -> None:
        self.lat = np.concatenate([self.lat, lat])
        self.cores = np.concatenate([self.cores, np.asarray(cores, dtype=float)])
        self.distance = np.concatenate([self.distance, distance])

    def config(self, k: int) -> StageConfig:
        k = int(k)
        if k < self.singles:
            v, b, c = self.rows[int(self.row[k])]
            return StageConfig.one(v, b, int(self.n[k]), c)
        k -= self.singles
        if self.mixes is not None:
            if k < self.mixes.size:
                return self.mixes.config(self.stage, k)
            k -= self.mixes.size
        return self.own[k]


class SafetyLayer:
    """Projects proposals onto F(load) (a `rlscale.control.Guard`).

    Args:
        spec: the pipeline.
        weights: distance weights.
        solver: ``dp`` (exact Pareto DP, default) or ``pulp`` (exact integer program, CBC).
        load: ``observed`` (the last interval's peak, a floor), ``backlog`` (that plus the longest queue / interval)
            or ``predicted`` (needs ``predictor``).
        predictor: the load predictor for ``load="predicted"``.

    Attributes:
        base_spec: the pipeline as given.
        spec: the pipeline the last projection ran on: ``base_spec`` with its SLA replaced by the planning budget
            (`rlscale.model.planning_budget_s`: with per-request SLOs, the 5th percentile of the remaining budgets
            seen last interval; else the SLA, and then ``spec is base_spec``).
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
        self.base_spec = spec
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
            self._max_capacity = MaxCapacity(self.base_spec)
        return self._max_capacity.config(load_rps)

    def project(self, proposed: PipelineConfig, state: PipelineState) -> tuple[PipelineConfig, Projection]:
        """The nearest configuration in F(load) and what the projection did (a `rlscale.control.Projection`).

        Raises:
            InvalidLoad: the load is not a finite number >= 0 (no data): nothing is approved, the caller holds.
        """
        t0 = time.perf_counter()
        self.spec = with_budget(self.base_spec, planning_budget_s(self.base_spec, state.last))
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
        nearest replica count ``min(max_replicas, max(n_min, n'))``, and for a stage that may run pools its other
        candidates (`_stage_candidates`), as frontier arrays (gain = -distance)."""
        c = self._stage_candidates(s, proposed, load, every_count=False)
        return c.config, StageArrays(c.lat, c.cores, -c.distance, np.zeros(c.lat.size))

    def _stage_candidates(self, s: int, proposed: StageConfig, load: float, *, every_count: bool) -> _Candidates:
        """Stage s's candidates in F(load) with their distance from ``proposed``.

        Single pools: every (variant, batch, cores) that carries the load within the SLA on its own, at its nearest
        replica count ``min(max_replicas, max(n_min, n'))`` (n': the proposal's replicas of that variant, 0 when it
        runs none), or with ``every_count`` at every count from ``n_min`` up to that one (more replicas only add
        distance and cores). A stage with ``max_pools >= 2`` adds the two-pool options at the load, and a pooled
        proposal (within ``max_pools``) its own pools resized to carry their shares, at the fewest replicas and
        at the nearest (at least the proposed ones).
        """
        spec, w = self.spec, self.weights
        st, t = spec.stages[s], option_table(spec.stages[s])
        rho = spec.objective.rho_max
        n_min = replicas_for(load, t.throughput_rps * rho, st.min_replicas)
        lat = t.planned_latency_s(load, n_min)
        scale_out = None
        if t.calibrated_rows.size:  # a calibrated row's latency falls with replicas: start at its first count in F
            scale_out = t.replica_options(load, n_min, st.max_replicas)
            r_all, n_all, l_all = scale_out
            n_min, lat = n_min.copy(), lat.copy()
            for i in t.calibrated_rows:
                fits = np.flatnonzero((r_all == i) & (l_all <= spec.sla_s) & (n_all <= st.max_replicas))
                if fits.size:
                    n_min[i], lat[i] = n_all[fits[0]], l_all[fits[0]]
        ok = (n_min <= st.max_replicas) & (lat <= spec.sla_s)
        pr = _proposed(w, st.variant_names, proposed)
        target = pr.replicas[t.variant_index] if len(proposed.pools) > 1 else proposed.replicas
        nearest = np.minimum(st.max_replicas, np.maximum(n_min, target))
        idx = np.flatnonzero(ok)
        if every_count:
            lo = n_min[idx].astype(np.int64)
            counts = nearest[idx].astype(np.int64) - lo + 1
            row = np.repeat(idx, counts)
            n = np.repeat(lo, counts) + np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        else:
            row, n = idx, nearest[idx]
        lat_row = lat[row]
        if scale_out is not None:
            # replanned at their own counts, and the counts above the nearest that lower the latency further (more
            # distance, but a sum of stages that the nearest counts leave over the SLA may need them)
            lat_row = t.latency_at(load, row, n, lat_row)
            r_all, n_all, l_all = scale_out
            more = np.flatnonzero(ok[r_all] & (l_all <= spec.sla_s) & (n_all > nearest[r_all]))
            row = np.concatenate([row, r_all[more]])
            n = np.concatenate([n, n_all[more]])
            lat_row = np.concatenate([lat_row, l_all[more]])
        if len(proposed.pools) == 1:
            distance = (
                w.variant * (t.variant_index[row] != st.variant_names.index(proposed.variant))
                + w.batch * np.abs(np.log2(t.batch[row]) - np.log2(proposed.batch))
                + w.cores * np.abs(np.log2(t.cores[row]) - np.log2(proposed.cores))
                + w.replicas * np.abs(n - proposed.replicas)
            )
        else:
            vi = t.variant_index[row]
            distance = pr.alone + _pool_terms(w, pr, vi, np.log2(t.batch[row]), np.log2(t.cores[row]), n, 1.0)
        out = _Candidates(st, t.rows, row, n.astype(np.int64), lat_row, n * t.cores[row], distance)
        if st.max_pools >= 2:
            mixes = two_pool_options(st, load, rho, spec.sla_s)
            if mixes.size:
                r1, r2 = mixes.first, mixes.second
                d = (
                    pr.alone
                    + _pool_terms(
                        w,
                        pr,
                        t.variant_index[r1],
                        np.log2(t.batch[r1]),
                        np.log2(t.cores[r1]),
                        mixes.replicas,
                        mixes.share,
                    )
                    + _pool_terms(
                        w,
                        pr,
                        t.variant_index[r2],
                        np.log2(t.batch[r2]),
                        np.log2(t.cores[r2]),
                        mixes.second_replicas,
                        1.0 - mixes.share,
                    )
                )
                out.mixes = mixes
                out.extend(mixes.latency_s, mixes.cores, d)
        if 1 < len(proposed.pools) <= st.max_pools:
            for own in self._own_pools(st, proposed, load):
                latency = max(stage_latency_s(st, p.variant, p.batch, p.cores, p.share * load) for p in own.pools)
                out.own.append(own)
                out.extend(
                    np.array([latency]),
                    np.array([float(own.total_cores)]),
                    np.array([stage_distance(w, proposed, own)]),
                )
        return out

    def _own_pools(self, st, proposed: StageConfig, load: float) -> list[StageConfig]:
        """The proposal's pools with their shares, each resized to carry its share of ``load`` within the SLA: at
        the fewest replicas and at the nearest (``max(fewest, proposed)``, at most ``max_replicas``); none when a
        pool is off the grid, cannot carry its share, or the stage latency exceeds the SLA."""
        rho, fewest, near = self.spec.objective.rho_max, [], []
        for p in proposed.pools:
            if p.variant not in st.variant_names or p.batch not in st.batch_sizes or p.cores not in st.cores:
                return []
            n = replicas_needed(st, p.variant, p.batch, p.cores, p.share * load, rho)
            if (
                n > st.max_replicas
                or stage_latency_s(st, p.variant, p.batch, p.cores, p.share * load) > self.spec.sla_s
            ):
                return []
            fewest.append(p.with_(replicas=n))
            near.append(p.with_(replicas=min(st.max_replicas, max(n, p.replicas))))
        a, b = StageConfig.of_pools(fewest), StageConfig.of_pools(near)
        return [a] if a == b else [a, b]

    def _nearest_dp(self, proposed: PipelineConfig, load: float) -> PipelineConfig | None:
        """The DP on the budget-relaxed problem; exact whenever its answer fits the budget.

        Without the budget the nearest replica count of every (variant, batch, cores) is known in advance, so each
        stage has one candidate per grid point (and its pooled candidates) and the search is a 2-D frontier
        (latency, distance): a few milliseconds even at 10 stages. When the relaxed optimum exceeds the budget (the
        load forces more replicas than the budget holds, or the proposal itself is over budget), the budget couples
        the stages' replica counts and `_nearest_budget_dp` decides instead (the same DP tracking cores,
        milliseconds).
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
        """The exact projection when the core budget binds: the Pareto DP tracking cores, over every candidate of
        `_stage_candidates` with every single-pool replica count from the fewest that carry the load up to its
        nearest count ``min(max_replicas, max(n_min, n'))`` (more replicas only add distance and cores). It
        minimises the distance plus ``1e-6`` x the total cores, the integer program's objective (`_nearest_pulp`),
        and resolves that tie-break exactly where CBC's tolerances may not.
        """
        spec = self.spec
        cands = [self._stage_candidates(s, p, load, every_count=True) for s, p in enumerate(proposed.stages)]
        if any(c.lat.size == 0 for c in cands):
            return None
        arrays = [StageArrays(c.lat, c.cores, -(c.distance + 1e-6 * c.cores), np.zeros(c.lat.size)) for c in cands]
        chosen = frontier_dp(arrays, spec.sla_s, float(spec.core_budget))
        if chosen is None:
            return None
        return PipelineConfig(tuple(c.config(k) for c, k in zip(cands, chosen, strict=True)))

    def _nearest_pulp(self, proposed: PipelineConfig, load: float) -> PipelineConfig | None:
        import pulp

        spec = self.spec
        rho = spec.objective.rho_max
        w = self.weights
        prob = pulp.LpProblem("safety_projection", pulp.LpMinimize)
        x, n, opts = {}, {}, {}
        distance_terms, latency_terms, core_terms = [], [], []
        enumerated: dict[int, _Candidates] = {}
        for s, (st, p) in enumerate(zip(spec.stages, proposed.stages, strict=True)):
            if st.max_pools >= 2 or len(p.pools) > 1 or option_table(st).calibrated_rows.size:
                # pooled candidates have fixed replicas, and a calibrated row's latency depends on its replicas: one
                # binary per enumerated candidate, as the DP sees them
                c = self._stage_candidates(s, p, load, every_count=True)
                if c.lat.size == 0:
                    return None
                enumerated[s] = c
                for k in range(c.lat.size):
                    x[s, k] = prob.add_variable(f"y_{s}_{k}", cat=pulp.LpBinary)
                    distance_terms.append(float(c.distance[k]) * x[s, k])
                    latency_terms.append(float(c.lat[k]) * x[s, k])
                    core_terms.append(float(c.cores[k]) * x[s, k])
                prob += pulp.lpSum(x[s, k] for k in range(c.lat.size)) == 1, f"one_config_{s}"
                continue
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
                fixed = stage_distance(w, p, StageConfig.one(v, b, p.replicas, c))  # all but the replica term
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
        for s in range(len(spec.stages)):
            if s in enumerated:
                c = enumerated[s]
                stages.append(c.config(next(k for k in range(c.lat.size) if (x[s, k].value() or 0) > 0.5)))
                continue
            stage_opts = opts[s]
            i = next(i for i in range(len(stage_opts)) if (x[s, i].value() or 0) > 0.5)
            v, b, c, _n_min, _lat = stage_opts[i]
            stages.append(StageConfig.one(v, b, int(round(n[s, i].value())), c))
        return PipelineConfig(tuple(stages))
