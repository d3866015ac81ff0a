"""An exact solver for chain pipelines: dynamic programming over stages on Pareto frontiers.

The latency constraint is a sum over stages, so the problem is a multi-choice knapsack. Instead of discretising
the latency budget (which is exact only up to the grid), the DP keeps, after each stage, the *Pareto frontier* of
partial configurations over the quantities the rest of the problem can see:

- latency used (less is better), cores used (less is better; only tracked when the budget can bind),
- accuracy so far (more is better: a sum of rank-normalised accuracies, or a product of accuracies),
- linear cost so far, ``beta * cores + gamma * batch`` (less is better).

A partial configuration that is no better than another in every one of these can be dropped: whatever the
remaining stages add, the other one ends at least as good (sums and products of positive factors preserve the
order). Partials are also dropped when they cannot fit the SLA or the budget even with the fastest / smallest
remaining options, or when an optimistic bound on their final objective is below the best complete
configuration found so far. Nothing else is dropped, so the result is the exact optimum of the same problem the
ILP solves (`ilp_baseline.ilp`); the tests check that they agree, and agree with brute force.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

from ilp_baseline.problem import InfeasibleLoad, Option, Plan, PlanningData, objective_value
from rlscale.types import PipelineConfig

_EPS = 1e-9


def _pareto_mask(lat: np.ndarray, cores: np.ndarray | None, acc: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows (lat, cores down; acc up; cost down), first of equal rows kept."""
    order = np.lexsort((cost, -acc, lat) if cores is None else (cost, -acc, cores, lat))
    keep: list[int] = []
    if cores is None:
        # sweep by latency; a staircase over (acc up, cost down) of what was kept so far
        stair_acc: list[float] = []  # ascending accuracy
        stair_cost: list[float] = []  # ascending cost along it (a staircase)
        for i in order.tolist():
            a, c = acc[i], cost[i]
            j = bisect_left(stair_acc, a - _EPS)
            if j < len(stair_acc) and stair_cost[j] <= c + _EPS:
                continue  # a kept point with >= accuracy costs no more
            keep.append(int(i))
            # drop staircase points the new one dominates: accuracy <= a and cost >= c (a block just left of j)
            lo = j
            while lo > 0 and stair_cost[lo - 1] >= c - _EPS:
                lo -= 1
            hi = j
            while hi < len(stair_acc) and stair_acc[hi] <= a + _EPS and stair_cost[hi] >= c - _EPS:
                hi += 1
            stair_acc[lo:hi] = [a]
            stair_cost[lo:hi] = [c]
        return np.asarray(keep, dtype=np.int64)
    kept_c: list[int] = []
    for i in order.tolist():
        dominated = False
        for k in kept_c:
            if cores[k] <= cores[i] and acc[k] >= acc[i] - _EPS and cost[k] <= cost[i] + _EPS:
                dominated = True
                break
        if not dominated:
            kept_c.append(int(i))
    return np.asarray(kept_c, dtype=np.int64)


def solve_dp(data: PlanningData) -> Plan:
    """Exact optimum of the planning problem by Pareto-frontier DP.

    The core budget is first relaxed (cores not tracked, which keeps the frontiers two-dimensional and fast); if
    the relaxed optimum fits the budget it is the optimum, otherwise the search runs again tracking cores.

    Raises:
        InfeasibleLoad: no configuration carries the load within the SLA and the budget.
    """
    t0 = time.perf_counter()
    spec = data.spec
    if any(not opts for opts in data.options):
        raise InfeasibleLoad(f"{spec.name}: some stage has no option that carries {data.load_rps:.2f} rps")
    chosen = _search(data, budget=False)
    if chosen is None or sum(o.cores_total for o in chosen) > spec.core_budget:
        chosen = _search(data, budget=True)
    if chosen is None:
        raise InfeasibleLoad(
            f"{spec.name}: no configuration meets the {spec.sla_s:g} s SLA within {spec.core_budget} cores "
            f"at {data.load_rps:.2f} rps (mode {data.mode})"
        )
    config = PipelineConfig(tuple(o.config() for o in chosen))
    return Plan(
        config=config,
        objective=objective_value(spec, config),
        solver="dp",
        solve_ms=(time.perf_counter() - t0) * 1e3,
    )


def _search(data: PlanningData, budget: bool) -> list[Option] | None:
    """The planning problem as stage arrays for `frontier_dp`; ``budget``: enforce (and track) the core budget."""
    spec = data.spec
    o_ = spec.objective
    alpha, beta, gamma = o_.alpha, o_.beta, o_.gamma
    product = data.product
    per: list[StageArrays] = []
    for opts in data.options:
        cores = np.array([o.cores_total for o in opts], dtype=float)
        acc = np.array([o.acc_raw if product else o.acc_rank for o in opts])
        cost = beta * cores + gamma * np.array([o.batch for o in opts], dtype=float)
        if not product:
            # an additive objective needs no separate accuracy and cost: one value, a 2-D frontier (lat, value)
            acc, cost = alpha * acc - cost, np.zeros_like(cost)
        per.append(StageArrays(np.array([o.latency_s for o in opts]), cores, acc, cost))
    chosen = frontier_dp(
        per, spec.sla_s, spec.core_budget if budget else None, product=product, scale=alpha if product else 1.0
    )
    if chosen is None:
        return None
    return [opts[i] for opts, i in zip(data.options, chosen, strict=True)]


@dataclass(frozen=True)
class StageArrays:
    """One stage's options as arrays: latency, cores, gain (accuracy term) and cost, all of equal length."""

    lat: np.ndarray
    cores: np.ndarray
    gain: np.ndarray
    cost: np.ndarray


def frontier_dp(
    stages: list[StageArrays], sla_s: float, budget: float | None, *, product: bool = False, scale: float = 1.0
) -> list[int] | None:
    """Pick one option per stage maximising ``scale * G - C`` subject to total latency <= ``sla_s`` and total
    cores <= ``budget`` (None: no budget), where G is the sum of the gains (``product=False``) or their product,
    and C the sum of the costs. Exact: partial choices are pruned only when dominated or provably worse than a
    known feasible choice. Returns the chosen option index of every stage, or None when nothing is feasible.

    Used by the planner (`solve_dp`) and by the safety layer's projection (gain = minus the distance).
    """
    track = budget is not None
    cap = float(budget) if track else np.inf
    per: list[tuple[np.ndarray, ...]] = []
    kept_idx: list[np.ndarray] = []
    for st in stages:
        # options another option of the same stage beats on every count can never be part of an optimum
        keep = _pareto_mask(st.lat, st.cores if track else None, st.gain, st.cost)
        kept_idx.append(keep)
        per.append((st.lat[keep], st.cores[keep], st.gain[keep], st.cost[keep]))
    n_st = len(per)
    # best case of the stages after s: fastest, fewest cores, best gain, cheapest (each on its own)
    rest_lat = np.zeros(n_st + 1)
    rest_cores = np.zeros(n_st + 1)
    rest_gain = np.ones(n_st + 1) if product else np.zeros(n_st + 1)
    rest_cost = np.zeros(n_st + 1)
    for s in range(n_st - 1, -1, -1):
        lat, cores, gain, cost = per[s]
        rest_lat[s] = rest_lat[s + 1] + lat.min()
        rest_cores[s] = rest_cores[s + 1] + cores.min()
        rest_gain[s] = rest_gain[s + 1] * gain.max() if product else rest_gain[s + 1] + gain.max()
        rest_cost[s] = rest_cost[s + 1] + cost.min()
    if rest_lat[0] > sla_s + _EPS or rest_cores[0] > cap:
        return None

    # incumbent: the cheapest option of every stage, when feasible, bounds the search from below
    incumbent = -np.inf
    cheap = [int(np.lexsort((p[0], -p[2], p[3]))[0]) for p in per]
    if (
        sum(per[s][0][i] for s, i in enumerate(cheap)) <= sla_s + _EPS
        and sum(per[s][1][i] for s, i in enumerate(cheap)) <= cap + _EPS
    ):
        picked = [per[s][2][i] for s, i in enumerate(cheap)]
        gain0 = float(np.prod(picked)) if product else float(np.sum(picked))
        incumbent = scale * gain0 - sum(per[s][3][i] for s, i in enumerate(cheap))

    f_lat = np.zeros(1)
    f_cores = np.zeros(1)
    f_gain = np.ones(1) if product else np.zeros(1)
    f_cost = np.zeros(1)
    parents: list[tuple[np.ndarray, np.ndarray]] = []  # per stage: (parent index, option index) of each partial
    for s in range(n_st):
        lat, cores, gain, cost = per[s]
        c_lat = (f_lat[:, None] + lat[None, :]).ravel()
        c_cores = (f_cores[:, None] + cores[None, :]).ravel()
        c_gain = (f_gain[:, None] * gain[None, :]).ravel() if product else (f_gain[:, None] + gain[None, :]).ravel()
        c_cost = (f_cost[:, None] + cost[None, :]).ravel()
        parent = np.repeat(np.arange(f_lat.size), lat.size)
        option = np.tile(np.arange(lat.size), f_lat.size)
        ok = (c_lat + rest_lat[s + 1] <= sla_s + _EPS) & (c_cores + rest_cores[s + 1] <= cap + _EPS)
        bound = c_gain * rest_gain[s + 1] if product else c_gain + rest_gain[s + 1]
        ok &= scale * bound - (c_cost + rest_cost[s + 1]) >= incumbent - 1e-9
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return None
        keep = idx[_pareto_mask(c_lat[idx], c_cores[idx] if track else None, c_gain[idx], c_cost[idx])]
        f_lat, f_cores, f_gain, f_cost = c_lat[keep], c_cores[keep], c_gain[keep], c_cost[keep]
        parents.append((parent[keep], option[keep]))
    best = int(np.argmax(scale * f_gain - f_cost))
    chosen = []
    for s in range(n_st - 1, -1, -1):
        par, opt = parents[s]
        chosen.append(int(kept_idx[s][int(opt[best])]))
        best = int(par[best])
    return list(reversed(chosen))
