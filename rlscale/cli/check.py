"""``rlscale check``: can a spec meet its SLA at all, how many cores it needs at a load, and the unit mistakes it
suspects. A spec that validates can still be unusable (an SLA below the fastest chain, latencies entered in
milliseconds, a core budget far too small); this says so before a simulation prints hundreds of warnings.

Rules (each a `Problem` with a ``rule`` name; ``error`` problems mean the SLA cannot be met, ``warning`` ones are
suspicions that do not change the exit code):

- ``sla-below-fastest-chain`` (error): the SLA is below the fastest chain, the sum over stages of the lowest
  service time of the stage's options (`rlscale.model.fastest_chain_s`): no configuration can meet it.
- ``latency-looks-like-ms`` (warning, one per stage): a stage's fastest option takes >= 10 x the SLA or >= 20 s:
  its profile's latencies look like milliseconds (the profiles are in seconds).
- ``sla-looks-like-ms`` (warning): the SLA is >= 100 s and >= 100 x the fastest chain: it looks like
  milliseconds.
- ``sla-tiny`` (warning): the SLA is <= 0.01 s, shorter than any model's inference: it looks like a unit slip.
- ``startup-looks-like-ms`` (warning, one per stage): a variant's ``startup_s`` is >= 300 s (a model load in
  milliseconds, e.g. 6440 for 6.44 s, reads as almost two hours).
- ``load-beyond-capacity`` (error, with a load): even without a core budget, no configuration carries the load
  within the SLA (every stage at ``max_replicas`` is too slow, or the batch-fill wait breaks the SLA).
- ``budget-too-small`` (error, with a load): the fewest cores that meet the SLA at the load (the project's DP
  planner minimising cores) exceed ``core_budget``.

Exit codes: 0 when the spec can meet its SLA (at the load, when one is given), 1 when an error problem says it
cannot, 2 on bad input (an unreadable spec or trace, a bad flag).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from typing import Any

from rlscale.cli.args import add_json, add_set, float_in, load_spec
from rlscale.cli.output import emit_json

LATENCY_SLA_FACTOR = 10.0  # a stage's fastest option at >= 10 x the SLA looks like milliseconds
LATENCY_MS_S = 20.0  # ... or at >= 20 s
SLA_MS_S = 100.0  # an SLA >= 100 s ...
SLA_MS_FACTOR = 100.0  # ... and >= 100 x the fastest chain looks like milliseconds
SLA_TINY_S = 0.01  # an SLA <= 10 ms looks like a unit slip
STARTUP_MS_S = 300.0  # a startup >= 5 minutes looks like milliseconds
MAX_RPS = 1e7

EXIT_OK = 0
EXIT_PROBLEMS = 1


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or suspect) with a spec.

    Attributes:
        rule: the rule's name (see the module docstring).
        severity: ``error`` (the SLA cannot be met) or ``warning`` (a suspected mistake).
        message: one line.
    """

    rule: str
    severity: str
    message: str


def spec_problems(spec) -> list[Problem]:
    """The problems a spec has at any load: the SLA against the fastest chain, and suspected unit mistakes."""
    from rlscale.model import fastest_chain_s, option_table

    out: list[Problem] = []
    chain_s, chain = fastest_chain_s(spec)
    if chain_s > spec.sla_s:
        path = ", ".join(f"{s} {v} b{b} c{c}" for s, v, b, c in chain)
        out.append(
            Problem(
                "sla-below-fastest-chain",
                "error",
                f"SLA {spec.sla_s:g} s is below the fastest chain {chain_s:.3g} s ({path}): no configuration meets it",
            )
        )
    for st in spec.stages:
        fastest = float(option_table(st).service_s.min())
        if fastest >= LATENCY_SLA_FACTOR * spec.sla_s or fastest >= LATENCY_MS_S:
            out.append(
                Problem(
                    "latency-looks-like-ms",
                    "warning",
                    f"stage {st.name}: its fastest option takes {fastest:.4g} s (SLA {spec.sla_s:g} s); are the "
                    f"profile's latencies ({st.profile_path.name}) in milliseconds? they must be seconds",
                )
            )
    if spec.sla_s >= SLA_MS_S and spec.sla_s >= SLA_MS_FACTOR * chain_s:
        out.append(
            Problem(
                "sla-looks-like-ms",
                "warning",
                f"SLA {spec.sla_s:g} s is {spec.sla_s / chain_s:.0f}x the fastest chain ({chain_s:.3g} s); is it in "
                "milliseconds? sla_s is seconds",
            )
        )
    if spec.sla_s <= SLA_TINY_S:
        out.append(
            Problem("sla-tiny", "warning", f"SLA {spec.sla_s:g} s is at most {SLA_TINY_S:g} s; sla_s is seconds")
        )
    for st in spec.stages:
        slow = [v for v in st.variants if v.startup_s >= STARTUP_MS_S]
        if slow:
            names = ", ".join(f"{v.name} {v.startup_s:g} s" for v in slow)
            out.append(
                Problem(
                    "startup-looks-like-ms",
                    "warning",
                    f"stage {st.name}: startup_s {names} (>= {STARTUP_MS_S:g} s); is it in milliseconds? startup_s "
                    "is seconds",
                )
            )
    return out


def min_cores(spec, load_rps: float):
    """The fewest cores that meet the SLA at ``load_rps`` with no core budget, by the project's planner (the DP
    with the objective set to minimise cores), and that configuration; (None, None) when nothing does."""
    from ilp_baseline.policy import plan
    from ilp_baseline.problem import InfeasibleLoad
    from rlscale.spec import MAX_CORE_BUDGET

    free = dataclasses.replace(
        spec,
        core_budget=MAX_CORE_BUDGET,
        objective=dataclasses.replace(spec.objective, alpha=0.0, beta=1.0, gamma=0.0, accuracy_method="sum"),
    )
    try:
        config = plan(free, load_rps, "ipa", "dp").config
    except InfeasibleLoad:
        return None, None
    return config.total_cores, config


def check(spec, load_rps: float | None = None, load_source: str | None = None) -> dict[str, Any]:
    """The check's report as one document (what ``--json`` prints); ``ok`` is False when an error problem says
    the SLA cannot be met."""
    from rlscale.model import fastest_chain_s, max_capacity

    problems = spec_problems(spec)
    chain_s, chain = fastest_chain_s(spec)
    report: dict[str, Any] = {
        "pipeline": spec.name,
        "spec": str(spec.source),
        "sla_s": spec.sla_s,
        "fastest_chain_s": chain_s,
        "fastest_chain": [
            {"stage": s, "variant": v, "batch": b, "cores": c, "latency_s": spec.stage(s).latency.latency_s(v, b, c)}
            for s, v, b, c in chain
        ],
        "meets_sla": chain_s <= spec.sla_s,
        "core_budget": spec.core_budget,
        "budget_capacity_rps": max_capacity(spec).capacity_rps,
        "load_rps": load_rps,
        "load_source": load_source,
        "min_cores": None,
        "min_cores_config": None,
        "fits_budget": None,
    }
    if load_rps is not None and report["meets_sla"]:
        cores, config = min_cores(spec, load_rps)
        if cores is None:
            problems.append(
                Problem(
                    "load-beyond-capacity",
                    "error",
                    f"no configuration carries {load_rps:g} rps within the SLA {spec.sla_s:g} s, whatever the "
                    "budget (raise max_replicas or add faster variants)",
                )
            )
            report["fits_budget"] = False
        else:
            report["min_cores"], report["min_cores_config"] = cores, str(config)
            report["fits_budget"] = cores <= spec.core_budget
            if cores > spec.core_budget:
                problems.append(
                    Problem(
                        "budget-too-small",
                        "error",
                        f"meeting the SLA at {load_rps:g} rps needs {cores} cores; core_budget is {spec.core_budget}"
                        f" (it carries at most {report['budget_capacity_rps']:.3g} rps)",
                    )
                )
    report["problems"] = [dataclasses.asdict(p) for p in problems]
    report["ok"] = not any(p.severity == "error" for p in problems)
    return report


def warn_problems(spec) -> None:
    """The spec's problems (`spec_problems`) as warnings on stderr, one line each (``rlscale pipelines``)."""
    for p in spec_problems(spec):
        print(f"rlscale: {p.severity}: {spec.name}: {p.message} [{p.rule}]", file=sys.stderr)


def register(sub) -> None:
    p = sub.add_parser(
        "check",
        help="can a spec meet its SLA at all, the cores it needs at a load, and suspected unit mistakes",
        description="Exit 0: the spec can meet its SLA (at the load, if given); 1: it cannot (the problems say "
        "why); 2: bad input.",
    )
    p.add_argument("--spec", required=True, metavar="NAME|FILE", help="bundled pipeline name or spec YAML")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--trace", metavar="NAME|CSV", help="check at this trace's peak load")
    load.add_argument("--rps", type=float_in(0.0, MAX_RPS), metavar="R", help="check at this load (requests/s)")
    add_set(p)
    add_json(p)
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args)
    load_rps, source = None, None
    if args.trace is not None:
        from rlscale.workload import load_trace

        trace = load_trace(args.trace)
        load_rps, source = float(trace.peak_rps), f"peak of trace {trace.name}"
    elif args.rps is not None:
        load_rps, source = float(args.rps), "--rps"
    report = check(spec, load_rps, source)
    if args.json:
        emit_json(report)
    else:
        print(render(report))
    return EXIT_OK if report["ok"] else EXIT_PROBLEMS


def render(report: dict[str, Any]) -> str:
    """The report as a few readable lines."""
    chain = " + ".join(
        f"{c['stage']} {c['variant']} b{c['batch']} c{c['cores']} {c['latency_s']:.3g}s"
        for c in report["fastest_chain"]
    )
    lines = [
        f"rlscale check: {report['pipeline']} ({report['spec']})",
        f"  SLA {report['sla_s']:g} s; fastest chain {report['fastest_chain_s']:.3g} s ({chain}): "
        + ("can meet the SLA" if report["meets_sla"] else "CANNOT meet the SLA"),
        f"  core budget {report['core_budget']}: carries at most {report['budget_capacity_rps']:.3g} rps",
    ]
    if report["load_rps"] is not None:
        if report["min_cores"] is not None:
            fits = "fits the budget" if report["fits_budget"] else "does NOT fit the budget"
            lines.append(
                f"  at {report['load_rps']:g} rps ({report['load_source']}): needs {report['min_cores']} cores, "
                f"{fits} ({report['min_cores_config']})"
            )
        elif report["meets_sla"]:
            lines.append(f"  at {report['load_rps']:g} rps ({report['load_source']}): no configuration carries it")
    for p in report["problems"]:
        lines.append(f"  {p['severity']}: {p['message']} [{p['rule']}]")
    lines.append("  OK: the spec can meet its SLA" if report["ok"] else "  PROBLEMS: the spec cannot meet its SLA")
    return "\n".join(lines)
