"""Check that the exact DP and IPA's ILP choose equally good configurations on every decision of real runs.

Runs the planner policies (``ipa``, ``oracle``, ``fa2-low``, ``fa2-high``, ``rim``) with the DP on a pipeline and
traces, records every planning problem they solved (mode, planned load), re-solves each with CBC and HiGHS and
compares the objective values (and infeasibility verdicts).

Both stages are sweeps of independent runs on an executor of `rlscale.evaluate.sweep` (``--executor
serial|process|ray``, ``--workers N``): the episodes (one `Episode` per trace x policy, `run_episode_plans`),
then the re-solves (one `Problem` per distinct planning problem, `resolve`). The problems are numbered in the order
they first appear, trace-major and policy-minor, so the report is the same whatever the executor.

    python -m experiments.verify_solvers --pipeline video --traces bursty,steady_low,steady_high,fluctuating
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ilp_baseline.ilp import solve
from ilp_baseline.policy import ILPPolicy, ipa_headroom
from ilp_baseline.problem import InfeasibleLoad, planning_data
from rlscale.errors import RlscaleError
from rlscale.evaluate.sweep import OneLineParser, add_executor_flags, make_executor, run_sweep
from rlscale.lstm import LSTMPredictor
from rlscale.predictors import OraclePredictor
from rlscale.sim.runner import run_episode
from rlscale.spec import PipelineSpec, load_spec
from rlscale.workload import Trace, load_trace

PLANNER_POLICIES = ("ipa", "oracle", "fa2-low", "fa2-high", "rim")


def planner_policy(name: str, spec: PipelineSpec, trace: Trace) -> ILPPolicy:
    """The planner policy ``name`` as ``rlscale simulate`` runs it by default (the DP, no guard): IPA's LSTM and
    published margin, or the true load (``oracle``, no margin)."""
    if name not in PLANNER_POLICIES:
        raise ValueError(f"not a planner policy: {name!r} (known: {', '.join(PLANNER_POLICIES)})")
    if name == "oracle":
        return ILPPolicy(spec, OraclePredictor(trace), mode="ipa", solver="dp", headroom=1.0, name="oracle")
    return ILPPolicy(
        spec, LSTMPredictor(), mode=name, solver="dp", headroom=ipa_headroom(spec), peak_rps=trace.peak_rps, name=name
    )


ProblemKey = tuple[str, float, tuple[tuple[int, int], ...]]
"""A planning problem: (mode, planned load rounded to 1e-9 rps, RIM's fixed (replicas, cores) per stage or ())."""
SOLVERS = ("cbc", "highs")


@dataclass(frozen=True)
class Episode:
    """One episode of the first sweep: planner policy ``policy`` (the DP) on ``trace``; picklable (plain values)."""

    pipeline: str
    trace: str
    policy: str


@dataclass(frozen=True)
class Problem:
    """One re-solve of the second sweep: the planning problem ``(mode, load, rim)`` with every solver of
    ``solvers``; picklable (plain values)."""

    pipeline: str
    mode: str
    load: float
    rim: tuple[tuple[int, int], ...]
    solvers: tuple[str, ...]


_loaded: dict[tuple[str, str], Any] = {}
"""Specs and traces of the sweep in progress: filled by `verify` for its own process and emptied after it (a file
may change between two runs of it); a worker process fills it as it goes (and ends with its sweep)."""


def _load(kind: str, name: str) -> Any:
    if (kind, name) not in _loaded:
        _loaded[kind, name] = load_spec(name) if kind == "spec" else load_trace(name)
    return _loaded[kind, name]


def run_episode_plans(item: Episode) -> tuple[list[tuple[ProblemKey, float | None]], int]:
    """One episode: every planning problem its policy solved, in order, with the DP's objective (None:
    infeasible), and how many decisions it solved. Module-level, so a worker process can import and call it.

    Raises:
        RuntimeError: the policy solved more plans than it keeps (verifying a sample would hide disagreements).
    """
    spec = _load("spec", item.pipeline)
    trace = _load("trace", item.trace)
    policy = planner_policy(item.policy, spec, trace)
    run_episode(spec, trace, policy)
    if policy.solved_decisions > len(policy.plans):
        # ``plans`` keeps only the most recent solves; verifying a sample would hide disagreements
        raise RuntimeError(
            f"{item.policy} on {item.trace} solved {policy.solved_decisions} plans, more than the "
            f"{policy.plans.maxlen} kept"
        )
    rim = tuple((int(n), int(c)) for n, c in policy.rim_fixed or ())
    plans = [((policy.mode, round(load, 9), rim), objective) for load, objective in policy.plans]
    return plans, policy.solved_decisions


def resolve(item: Problem) -> dict[str, float | None]:
    """Each solver's objective for the problem (None: infeasible). Module-level, for a worker process."""
    spec = _load("spec", item.pipeline)
    data = planning_data(spec, item.load, item.mode, rim_fixed=list(item.rim) or None)
    objectives: dict[str, float | None] = {}
    for solver in item.solvers:
        try:
            objectives[solver] = solve(data, solver).objective
        except InfeasibleLoad:
            objectives[solver] = None
    return objectives


def verify(
    pipeline: str,
    traces: Sequence[str],
    policies: Sequence[str] = PLANNER_POLICIES,
    solvers: Sequence[str] = SOLVERS,
    max_decisions: int | None = None,
    tolerance: float = 1e-6,
    *,
    executor: str = "serial",
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = False,
) -> dict:
    """Re-solve every distinct planning problem of the runs; returns counts and any disagreements.

    ``executor``, ``workers``, ``ray_address``: where the episodes and the re-solves go (`rlscale.evaluate.sweep`); the
    report is the same whichever. ``progress``: a bar on stderr.

    Raises:
        RlscaleError: a bad pipeline, trace, policy, solver or executor setting (before any run).
    """
    if not traces or not policies or not solvers:
        raise RlscaleError("need at least one trace, one policy and one solver")
    for flag, names, known in (("--policies", policies, PLANNER_POLICIES), ("--solvers", solvers, SOLVERS)):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise RlscaleError(f"{flag}: unknown {', '.join(map(repr, unknown))} (known: {', '.join(known)})")
    sweeper = make_executor(executor, workers, ray_address)
    spec = load_spec(pipeline)
    loaded = {t: load_trace(t) for t in traces}  # a bad trace fails here, before any run
    episodes = [Episode(str(pipeline), t, p) for t in traces for p in policies]
    _loaded.clear()
    _loaded.update({("spec", str(pipeline)): spec, **{("trace", t): loaded[t] for t in traces}})
    try:
        runs = run_sweep(
            sweeper,
            run_episode_plans,
            episodes,
            progress=progress,
            what=f"{spec.name}: episodes",
            describe=lambda item: f"{item.trace} / {item.policy}",
        )
        problems: dict[ProblemKey, float | None] = {}
        decisions = 0
        for plans, solved in runs:  # trace-major, policy-minor: each problem numbered where it first appears
            decisions += solved
            for key, objective in plans:
                problems.setdefault(key, objective)
        items = list(problems.items())[:max_decisions]
        solved_by = run_sweep(
            sweeper,
            resolve,
            [Problem(str(pipeline), mode, load, rim, tuple(solvers)) for (mode, load, rim), _dp in items],
            progress=progress,
            what=f"{spec.name}: re-solves",
        )
    finally:
        _loaded.clear()
    mismatches = []
    for ((mode, load, _rim), dp_objective), objectives in zip(items, solved_by, strict=True):
        for solver in solvers:
            ilp_objective = objectives[solver]
            same = (ilp_objective is None and dp_objective is None) or (
                ilp_objective is not None
                and dp_objective is not None
                and abs(ilp_objective - dp_objective) <= tolerance * max(1.0, abs(dp_objective))
            )
            if not same:
                mismatches.append(
                    {"mode": mode, "load_rps": load, "solver": solver, "dp": dp_objective, "ilp": ilp_objective}
                )
    return {
        "pipeline": spec.name,
        "traces": list(traces),
        "policies": list(policies),
        "solved_decisions": decisions,
        "distinct_problems": len(items),
        "infeasible_problems": sum(1 for _k, v in items if v is None),
        "solvers": list(solvers),
        "mismatches": mismatches,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m experiments.verify_solvers", description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="video", help="bundled pipeline name or spec path (default video)")
    parser.add_argument(
        "--traces",
        default="bursty,steady_low,steady_high,fluctuating",
        help="comma-separated trace names or CSV paths (default bursty,steady_low,steady_high,fluctuating)",
    )
    add_executor_flags(parser)
    args = parser.parse_args(argv)
    traces = [t.strip() for t in args.traces.split(",") if t.strip()]
    try:
        if not traces:
            raise RlscaleError(f"--traces: no trace named in {args.traces!r}")
        report = verify(
            args.pipeline,
            traces,
            executor=args.executor,
            workers=args.workers,
            ray_address=args.ray_address,
            progress=sys.stderr.isatty(),
        )
    except RlscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(json.dumps(report, indent=2))
    return 0 if not report["mismatches"] else 1


if __name__ == "__main__":
    sys.exit(main())
