"""The safety layer (DESIGN.md section 6): project a proposed configuration onto the SLA-feasible set.

``project(proposed, state) -> (config, report)`` returns the configuration in F(load) nearest to the proposal,
where F(load) is the set of `rlscale.feasibility` (enough replicas per stage for the load, planned latency
within the SLA, total cores within the budget, every setting on its grid) and the distance is a weighted count
of changes, summed over stages:

    w_variant * [v != v'] + w_batch * |log2 b - log2 b'| + w_cores * |log2 c - log2 c'| + w_replicas * |n - n'|

The load is a floor by default: the highest per-second load observed in the last interval, so the agent stays
free to provision ahead of a rise or to hold through a dip; ``load="predicted"`` uses a predictor instead, and
``load="backlog"`` adds the longest stage queue divided by the interval (capacity to drain a backlog within one
interval: the observed peak alone can leave a queue that built up during a reaction delay in place for minutes).

Invariants (property-tested): the result is in F whenever F is non-empty; a feasible proposal comes back
unchanged; the result is a nearest feasible configuration; when F is empty the result is the maximum-capacity
configuration within the budget and the report says ``infeasible``. Two exact implementations agree: the
Pareto DP of `ilp_baseline.dp.frontier_dp` (default, fast; it hands the rare budget-binding case to the
integer program) and an integer program in PuLP (``solver="pulp"``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rlscale.errors import RlscaleError
from rlscale.feasibility import batch_fill_wait_s, is_feasible, replicas_needed
from rlscale.interfaces import Predictor
from rlscale.pareto import StageArrays, frontier_dp
from rlscale.predictors import last_interval_peak_rps
from rlscale.spec import PipelineSpec
from rlscale.types import PipelineConfig, PipelineState, StageConfig

LOAD_MODES = ("observed", "backlog", "predicted")
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


def max_capacity_config(spec: PipelineSpec, load_rps: float) -> PipelineConfig:
    """The configuration with the most capacity relative to the load that fits the core budget.

    Every stage runs its option with the highest throughput per core (fastest batch first on ties), at its
    minimum replicas; the remaining cores go, one replica at a time, to the stage with the lowest capacity
    relative to the load, while replicas and budget allow.
    """
    chosen = []
    for st in spec.stages:
        v, b, c = max(
            ((v, b, c) for v in st.variant_names for b in st.batch_sizes for c in st.cores),
            key=lambda vbc, st=st: (st.latency.throughput_rps(*vbc) / vbc[2], -st.latency.latency_s(*vbc)),
        )
        chosen.append([v, b, st.min_replicas, c, st.latency.throughput_rps(v, b, c)])
    used = sum(n * c for _v, _b, n, c, _h in chosen)
    while True:
        growable = [
            i
            for i, (_v, _b, n, c, _h) in enumerate(chosen)
            if n < spec.stages[i].max_replicas and used + c <= spec.core_budget
        ]
        if not growable:
            break
        i = min(growable, key=lambda i: chosen[i][2] * chosen[i][4] / max(load_rps, 1e-9))
        chosen[i][2] += 1
        used += chosen[i][3]
    return PipelineConfig(tuple(StageConfig(v, b, n, c) for v, b, n, c, _h in chosen))


class SafetyLayer:
    """Projects proposals onto F(load) (an `ActionFilter`).

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
        load: str = "observed",
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
        self._grids: dict[int, dict[str, np.ndarray]] = {}

    def load_rps(self, state: PipelineState) -> float:
        if self.load_mode == "predicted" and self.predictor is not None:
            return max(0.0, self.predictor.predict(state))
        observed = observed_load_rps(state)
        if self.load_mode == "backlog" and state.last is not None:
            # capacity to carry the observed peak *and* drain the longest queue within one interval
            backlog = max((m.queue_len for m in state.last.stages), default=0)
            return observed + backlog / state.interval_s
        return observed

    def project(self, proposed: PipelineConfig, state: PipelineState) -> tuple[PipelineConfig, dict]:
        """The nearest configuration in F(load) and a report of what happened."""
        t0 = time.perf_counter()
        load = self.load_rps(state)
        report = {
            "load_rps": load,
            "feasible_input": False,
            "infeasible": False,
            "distance": 0.0,
            "solver": self.solver,
        }
        if is_feasible(self.spec, proposed, load):
            report["feasible_input"] = True
            report["ms"] = (time.perf_counter() - t0) * 1e3
            return proposed, report
        result = self.nearest(proposed, load)
        if result is None:
            result = max_capacity_config(self.spec, load)
            report["infeasible"] = True
        report["distance"] = config_distance(self.weights, proposed, result)
        report["changed_stages"] = [
            st.name for st, a, b in zip(self.spec.stages, proposed.stages, result.stages, strict=True) if a != b
        ]
        report["ms"] = (time.perf_counter() - t0) * 1e3
        return result, report

    def nearest(self, proposed: PipelineConfig, load_rps: float) -> PipelineConfig | None:
        """A nearest configuration in F(load), or None when F(load) is empty."""
        if self.solver == "pulp":
            return self._nearest_pulp(proposed, load_rps)
        return self._nearest_dp(proposed, load_rps)

    def _grid(self, s: int) -> dict[str, np.ndarray]:
        """Stage s's (variant, batch, cores) grid as arrays; load-independent, so computed once."""
        if s not in self._grids:
            st = self.spec.stages[s]
            rows = [(v, b, c) for v in st.variant_names for b in st.batch_sizes for c in st.cores]
            self._grids[s] = {
                "rows": rows,
                "variant": np.array([st.variant_names.index(v) for v, _b, _c in rows]),
                "log_batch": np.log2([b for _v, b, _c in rows]),
                "log_cores": np.log2([c for _v, _b, c in rows]),
                "batch": np.array([b for _v, b, _c in rows], dtype=float),
                "cores": np.array([c for _v, _b, c in rows], dtype=float),
                "service_s": np.array([st.latency.latency_s(*r) for r in rows]),
                "throughput_rps": np.array([st.latency.throughput_rps(*r) for r in rows]),
            }
        return self._grids[s]

    def _candidates(
        self, s: int, proposed: StageConfig, load: float
    ) -> tuple[Callable[[int], StageConfig], StageArrays]:
        """Every (variant, batch, cores) of stage s that carries the load within the SLA on its own, at its
        nearest replica count ``min(max_replicas, max(n_min, n'))``, as frontier arrays (gain = -distance)."""
        st, g, w = self.spec.stages[s], self._grid(s), self.weights
        with np.errstate(divide="ignore", over="ignore"):
            wait = np.where(g["batch"] > 1, (g["batch"] - 1) / load if load > 0 else np.inf, 0.0)
        lat = g["service_s"] + wait
        h = g["throughput_rps"] * self.spec.objective.rho_max
        n_min = np.maximum(st.min_replicas, np.ceil(load / h - 1e-9)) if load > 0 else np.full(h.size, st.min_replicas)
        ok = (n_min <= st.max_replicas) & (lat <= self.spec.sla_s)
        n = np.minimum(st.max_replicas, np.maximum(n_min, proposed.replicas))
        distance = (
            w.variant * (g["variant"] != st.variant_names.index(proposed.variant))
            + w.batch * np.abs(g["log_batch"] - np.log2(proposed.batch))
            + w.cores * np.abs(g["log_cores"] - np.log2(proposed.cores))
            + w.replicas * np.abs(n - proposed.replicas)
        )
        idx = np.flatnonzero(ok)
        arrays = StageArrays(lat[idx], (n * g["cores"])[idx], -distance[idx], np.zeros(idx.size))

        def config(k: int) -> StageConfig:  # built only for the chosen candidate
            v, b, c = g["rows"][int(idx[k])]
            return StageConfig(v, b, int(n[idx[k]]), c)

        return config, arrays

    def _nearest_dp(self, proposed: PipelineConfig, load: float) -> PipelineConfig | None:
        """The DP on the budget-relaxed problem; exact whenever its answer fits the budget.

        Without the budget the nearest replica count of every (variant, batch, cores) is known in advance, so each
        stage has one candidate per grid point and the search is a 2-D frontier (latency, distance): a few
        milliseconds even at 10 stages. When the relaxed optimum exceeds the budget (the load forces more
        replicas than the budget holds, or the proposal itself is over budget), the budget couples the stages'
        replica counts and the exact integer program decides instead (tens of milliseconds).
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
        return self._nearest_pulp(proposed, load)

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


class SafePolicy:
    """Any policy behind the safety layer; keeps the last report for logs and rewards."""

    def __init__(self, policy, safety: SafetyLayer, name: str | None = None) -> None:
        self.policy = policy
        self.safety = safety
        self.name = name or f"{policy.name}+safety"
        self.last_report: dict = {}

    def decide(self, state: PipelineState) -> PipelineConfig:
        config, self.last_report = self.safety.project(self.policy.decide(state), state)
        return config
