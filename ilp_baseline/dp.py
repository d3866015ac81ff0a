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

import numpy as np

from ilp_baseline.problem import InfeasibleLoad, Option, Plan, PlanningData, objective_value
from rlscale.pareto import StageArrays, frontier_dp
from rlscale.types import PipelineConfig


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
