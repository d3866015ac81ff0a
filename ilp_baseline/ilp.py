"""IPA's integer program in PuLP: `build_problem` (no solver needed) and `solve` (solver passed explicitly).

Variables, per stage s and option o = (variant, batch, cores) of `PlanningData.options`:

- ``x[s,o]`` binary: the stage runs option o; ``n[s,o]`` integer: its replicas (0 unless chosen).

Constraints, each named:

- ``one_config_{s}``: ``sum_o x[s,o] = 1``;
- ``replicas_max_{s}_{o}``: ``n <= max_replicas * x``;
- ``replicas_cut_{s}_{o}``: ``n >= ceil(lambda / (h rho_max)) * x`` — a valid cut (any feasible solution has at
  least that many replicas) that makes CBC's LP relaxation tight; without it CBC stalls on the big-M form at high
  load;
- ``throughput_{s}``: ``sum_o n h rho_max >= lambda``;
- ``latency``: ``sum_{s,o} x (l + (b - 1)/lambda) <= SLA``;
- ``core_budget``: ``sum_{s,o} n c <= core_budget``.

A two-pool option of a pooled stage (`ilp_baseline.problem.PooledOption`) is one more binary ``x[s,o]`` with its
replicas fixed: it adds its latency, its total cores and its share-weighted batch times x, and counts as carrying
the stage's load (``lambda * x`` in ``throughput_{s}``); it has no ``n`` and no replica constraints.

Objective: ``alpha * A - beta * sum n c - gamma * sum x b``. With ``sum`` accuracy, A is linear in x. With
``product`` accuracy, A = prod_s a(v_s) is linearised exactly: ``y[s,v] = sum_{o of v} x[s,o]`` is the variant
indicator, ``P_1 = sum_v a_v y[1,v]`` and for later stages ``P_s = sum_v a_v z[s,v]`` with ``z[s,v] = P_{s-1} *
y[s,v]`` written as the McCormick envelope of a bounded continuous times a binary: with ``lo <= P_{s-1} <= hi``,
``lo y <= z <= hi y`` and ``P_{s-1} - hi (1 - y) <= z <= P_{s-1} - lo (1 - y)``. Because y is binary the envelope
is exact (z equals the product), so the ILP optimum is the true optimum of the product objective.
"""

from __future__ import annotations

import functools
import math
import time
import warnings

import pulp

from ilp_baseline.problem import (
    InfeasibleLoad,
    Option,
    Plan,
    PlanningData,
    PlanningError,
    PooledOption,
    objective_value,
)
from rlscale.stdio import quiet_stdout
from rlscale.types import PipelineConfig

SOLVERS = ("cbc", "highs")


def make_solver(name: str, time_limit_s: float | None = None) -> pulp.LpSolver:
    """CBC (PuLP's bundled binary) or HiGHS (through highspy), quiet, with an optimality gap of ~0."""
    if name == "cbc":
        # PuLP 3.x warns that PuLP 4 drops the bundled CBC command; we pin pulp<4 for exactly that command
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit_s, gapRel=1e-9, gapAbs=1e-9)
    if name == "highs":
        _discard_highs_banner()
        return pulp.HiGHS(msg=False, timeLimit=time_limit_s, gapRel=1e-9, gapAbs=1e-9)
    raise PlanningError(f"unknown solver {name!r} (known: cbc, highs, dp)")


@functools.cache
def _discard_highs_banner() -> None:
    """HiGHS (1.16) prints a banner on fd 1 when the first solver of a process is built, before any option can turn
    output off; build that first one with stdout discarded, so no later solve prints anything (msg=False)."""
    import highspy

    with quiet_stdout():
        highspy.Highs()


def build_problem(data: PlanningData) -> tuple[pulp.LpProblem, dict]:
    """The ILP for ``data``; returns the problem and its variables ``{"x": {(s, o): var}, "n": {...}}``."""
    spec = data.spec
    o_ = spec.objective
    prob = pulp.LpProblem(f"ipa_{spec.name}".replace("-", "_"), pulp.LpMaximize)
    x: dict[tuple[int, int], pulp.LpVariable] = {}
    n: dict[tuple[int, int], pulp.LpVariable] = {}
    for s, opts in enumerate(data.options):
        st = spec.stages[s]
        for i, opt in enumerate(opts):
            x[s, i] = prob.add_variable(f"x_{s}_{i}", cat=pulp.LpBinary)
            if isinstance(opt, Option):
                n[s, i] = prob.add_variable(f"n_{s}_{i}", lowBound=0, upBound=st.max_replicas, cat=pulp.LpInteger)
    for s, opts in enumerate(data.options):
        st = spec.stages[s]
        prob += pulp.lpSum(x[s, i] for i in range(len(opts))) == 1, f"one_config_{s}"
        carried = []
        for i, opt in enumerate(opts):
            if isinstance(opt, PooledOption):  # carries the stage's load by construction, replicas fixed
                carried.append(x[s, i] * data.stage_load(s))
                continue
            prob += n[s, i] <= st.max_replicas * x[s, i], f"replicas_max_{s}_{i}"
            # valid cut: every feasible choice of this option has at least opt.replicas replicas
            prob += n[s, i] >= opt.replicas * x[s, i], f"replicas_cut_{s}_{i}"
            carried.append(n[s, i] * (opt.throughput_rps * o_.rho_max))
        prob += pulp.lpSum(carried) >= data.stage_load(s), f"throughput_{s}"
    prob += (
        pulp.lpSum(x[s, i] * opt.latency_s for s, opts in enumerate(data.options) for i, opt in enumerate(opts))
        <= spec.sla_s,
        "latency",
    )
    cores = pulp.lpSum(
        n[s, i] * opt.cores if isinstance(opt, Option) else x[s, i] * opt.cores_total
        for s, opts in enumerate(data.options)
        for i, opt in enumerate(opts)
    )
    prob += cores <= spec.core_budget, "core_budget"
    batch = pulp.lpSum(x[s, i] * opt.batch for s, opts in enumerate(data.options) for i, opt in enumerate(opts))

    if data.product:
        accuracy = _product_accuracy(prob, data, x)
    else:
        accuracy = pulp.lpSum(
            x[s, i] * opt.acc_rank for s, opts in enumerate(data.options) for i, opt in enumerate(opts)
        )
    prob += o_.alpha * accuracy - o_.beta * cores - o_.gamma * batch, "objective"
    return prob, {"x": x, "n": n}


def _product_accuracy(prob: pulp.LpProblem, data: PlanningData, x: dict) -> pulp.LpAffineExpression:
    """Exact linearisation of prod_s a(v_s) (see the module docstring); returns the expression for P_S.

    The envelope uses the tightest bounds of the partial product, ``lo_s = prod min a`` and
    ``hi_s = prod max a`` over the first s stages, instead of [0, 1]: still exact for binary y, and a much
    tighter LP relaxation (CBC otherwise branches for minutes on long chains).
    """
    previous = None
    lo_prev = hi_prev = 1.0
    for s, opts in enumerate(data.options):
        # options grouped by their accuracy: a single pool's variant, or a two-pool option on its own
        keys = [o.variant if isinstance(o, Option) else ("pools", i) for i, o in enumerate(opts)]
        acc = {k: o.acc_raw for k, o in zip(keys, opts, strict=True)}
        groups: dict = {}
        for i, k in enumerate(keys):
            groups.setdefault(k, []).append(i)
        lo = lo_prev * min(acc.values())
        hi = hi_prev * max(acc.values())
        terms = []
        ordered = sorted((k for k in groups if isinstance(k, str)), key=str) + [
            k for k in groups if not isinstance(k, str)
        ]
        for j, v in enumerate(ordered):
            y = pulp.lpSum(x[s, i] for i in groups[v])
            if previous is None:
                terms.append(acc[v] * y)
                continue
            z = prob.add_variable(f"z_{s}_{j}", lowBound=0, upBound=hi_prev)
            prob += z <= hi_prev * y, f"mccormick_hi_y_{s}_{j}"
            prob += z >= lo_prev * y, f"mccormick_lo_y_{s}_{j}"
            prob += z <= previous - lo_prev * (1 - y), f"mccormick_hi_p_{s}_{j}"
            prob += z >= previous - hi_prev * (1 - y), f"mccormick_lo_p_{s}_{j}"
            terms.append(acc[v] * z)
        p = prob.add_variable(f"P_{s}", lowBound=lo, upBound=hi)
        prob += p == pulp.lpSum(terms), f"accuracy_product_{s}"
        previous, lo_prev, hi_prev = p, lo, hi
    assert previous is not None
    return previous


def solve(data: PlanningData, solver: str = "cbc", time_limit_s: float | None = None) -> Plan:
    """Solve IPA's ILP.

    Raises:
        InfeasibleLoad: no configuration carries ``data.load_rps`` within the SLA and budget.
        PlanningError: the solver stopped without proving optimality (time limit, numerical trouble).
    """
    if any(not opts for opts in data.options):
        empty = [data.spec.stages[s].name for s, opts in enumerate(data.options) if not opts]
        raise InfeasibleLoad(
            f"{data.spec.name}: no option of stage(s) {', '.join(empty)} carries {data.load_rps:.2f} rps "
            f"in mode {data.mode}"
        )
    prob, var = build_problem(data)
    t = time.perf_counter()
    prob.solve(make_solver(solver, time_limit_s))
    ms = (time.perf_counter() - t) * 1e3
    status = pulp.LpStatus[prob.status]
    if status == "Infeasible":
        raise InfeasibleLoad(
            f"{data.spec.name}: no configuration meets the {data.spec.sla_s:g} s SLA within "
            f"{data.spec.core_budget} cores at {data.load_rps:.2f} rps (mode {data.mode})"
        )
    # PuLP reports a run stopped by the time limit with an incumbent as status "Optimal"; the solution status
    # tells whether optimality was proven
    proven = getattr(prob, "sol_status", pulp.LpSolutionOptimal) == pulp.LpSolutionOptimal
    if status != "Optimal" or not proven:
        detail = pulp.LpSolution.get(getattr(prob, "sol_status", None), "unknown")
        raise PlanningError(
            f"{data.spec.name}: {solver} did not prove optimality at {data.load_rps:.2f} rps "
            f"(status {status}, solution {detail}; time limit {time_limit_s} s)"
        )
    stages = []
    for s, opts in enumerate(data.options):
        chosen = [i for i in range(len(opts)) if (var["x"][s, i].value() or 0) > 0.5]
        if len(chosen) != 1:
            raise PlanningError(f"{data.spec.name}: {solver} chose {len(chosen)} options for stage {s}")
        i = chosen[0]
        opt = opts[i]
        if isinstance(opt, PooledOption):
            stages.append(opt.config())
            continue
        replicas = int(round(var["n"][s, i].value()))
        stages.append(opt.config().with_(replicas=replicas))
    config = PipelineConfig(tuple(stages))
    value = objective_value(data.spec, config)
    if not math.isfinite(value):
        raise PlanningError(f"{data.spec.name}: non-finite objective")
    return Plan(config=config, objective=value, solver=solver, solve_ms=ms)
