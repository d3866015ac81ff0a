"""Exact multi-choice optimisation over a chain of stages on Pareto frontiers (numpy only).

Pick one option per stage, maximising ``scale * G - C`` subject to a total latency bound and an optional total
core budget, where G is the sum or the product of the options' gains and C the sum of their costs. Used by the
planner's exact DP (`ilp_baseline.dp`), the safety layer's projection (`ilp_baseline.safety`) and the cheapest-plan
helper of `rlscale.model`.

After each stage only the Pareto frontier of partial choices is kept, over what the rest of the problem can
see: latency used (less is better), cores used (less is better; tracked only under a budget), gain so far (more
is better) and cost so far (less is better). A partial choice no better than another in every one of these can
be dropped: whatever the remaining stages add, the other ends at least as good (sums and products of positive
factors keep the order). Partials are also dropped when even the best remaining options cannot make them
feasible, or when an optimistic bound on their final value is below a known feasible choice. Nothing else is
dropped, so the answer is exact.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

import numpy as np

_EPS = 1e-9


def _pareto_mask(lat: np.ndarray, cores: np.ndarray | None, acc: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows (lat, cores down; acc up; cost down), first of equal rows kept."""
    if cores is None and (cost.size == 0 or np.ptp(cost) == 0):
        # two dimensions (latency, gain): sorted by latency, a point survives when it beats every faster one
        order = np.lexsort((-acc, lat))
        g = acc[order]
        best_before = np.concatenate([[-np.inf], np.maximum.accumulate(g)[:-1]])
        return np.sort(order[g > best_before + _EPS])
    if cores is None:
        return np.asarray(_staircase(np.lexsort((cost, -acc, lat)), acc, cost), dtype=np.int64)
    order = np.lexsort((cost, -acc, cores, lat))
    if cost.size == 0 or np.ptp(cost) == 0:
        # three dimensions (latency, cores, gain): the staircase with cores in the place of the cost (cores are
        # whole numbers, so its tolerance changes nothing), then the kept rows in the order of the full sweep below
        kept = np.asarray(_staircase(np.lexsort((cores, -acc, lat)), acc, cores), dtype=np.int64)
        rank = np.empty(order.size, dtype=np.int64)
        rank[order] = np.arange(order.size)
        return kept[np.argsort(rank[kept], kind="stable")]
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


def _staircase(order: np.ndarray, acc: np.ndarray, cost: np.ndarray) -> list[int]:
    """Rows of ``order`` (sorted by latency, then accuracy down, then cost) that no earlier kept row beats on
    accuracy (up) and cost (down): a sweep over a staircase of what was kept so far."""
    keep: list[int] = []
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
    return keep


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

    # incumbent: the best feasible of three greedy choices (cheapest, best gain, fastest option of every
    # stage) bounds the search from below; the better it is, the more partials the bound prunes
    incumbent = -np.inf
    greedy = [
        [int(np.lexsort((p[0], -p[2], p[3]))[0]) for p in per],
        [int(np.lexsort((p[0], p[3], -p[2]))[0]) for p in per],
        [int(np.lexsort((p[3], -p[2], p[0]))[0]) for p in per],
    ]
    for pick in greedy:
        if (
            sum(per[s][0][i] for s, i in enumerate(pick)) <= sla_s + _EPS
            and sum(per[s][1][i] for s, i in enumerate(pick)) <= cap + _EPS
        ):
            gains = [per[s][2][i] for s, i in enumerate(pick)]
            total = float(np.prod(gains)) if product else float(np.sum(gains))
            incumbent = max(incumbent, scale * total - sum(per[s][3][i] for s, i in enumerate(pick)))

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
