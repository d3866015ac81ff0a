"""Check that the exact DP and IPA's ILP choose equally good configurations on every decision of real runs.

Runs the planner policies (``ipa``, ``oracle``, ``fa2-low``, ``fa2-high``, ``rim``) with the DP on a pipeline and
traces, records every planning problem they solved (mode, planned load), re-solves each with CBC and HiGHS and
compares the objective values (and infeasibility verdicts).

    python -m experiments.verify_solvers --pipeline video --traces bursty,steady_low,steady_high,fluctuating
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ilp_baseline.ilp import solve
from ilp_baseline.policy import ILPPolicy, ipa_headroom
from ilp_baseline.problem import InfeasibleLoad, planning_data
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


def verify(
    pipeline: str,
    traces: Sequence[str],
    policies: Sequence[str] = PLANNER_POLICIES,
    solvers: Sequence[str] = ("cbc", "highs"),
    max_decisions: int | None = None,
    tolerance: float = 1e-6,
) -> dict:
    """Re-solve every distinct planning problem of the runs; returns counts and any disagreements."""
    spec = load_spec(pipeline)
    problems: dict[tuple, float | None] = {}
    decisions = 0
    for t in traces:
        trace = load_trace(t)
        for p in policies:
            policy = planner_policy(p, spec, trace)
            run_episode(spec, trace, policy)
            if policy.solved_decisions > len(policy.plans):
                # ``plans`` keeps only the most recent solves; verifying a sample would hide disagreements
                raise RuntimeError(
                    f"{p} on {t} solved {policy.solved_decisions} plans, more than the {policy.plans.maxlen} kept"
                )
            decisions += policy.solved_decisions
            for load, objective in policy.plans:
                key = (policy.mode, round(load, 9), tuple(policy.rim_fixed or ()))
                problems.setdefault(key, objective)
    items = list(problems.items())[:max_decisions]
    mismatches = []
    for (mode, load, rim), dp_objective in items:
        data = planning_data(spec, load, mode, rim_fixed=list(rim) or None)
        for solver in solvers:
            try:
                ilp_objective = solve(data, solver).objective
            except InfeasibleLoad:
                ilp_objective = None
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
    parser = argparse.ArgumentParser(prog="python -m experiments.verify_solvers", description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="video")
    parser.add_argument("--traces", default="bursty,steady_low,steady_high,fluctuating")
    args = parser.parse_args(argv)
    report = verify(args.pipeline, args.traces.split(","))
    print(json.dumps(report, indent=2))
    return 0 if not report["mismatches"] else 1


if __name__ == "__main__":
    sys.exit(main())
