"""The safety layer's load floor, measured (issue 15, experiments/RESULTS.md section 11).

Two measurements:

- ``--policy P``: policy P behind the safety layer at each floor of ``--floors`` (``off``: no guard) on IPA's four
  windows, at every alpha of the agent grid (2, 10, 30, 100) and load scales 1 and 2; one JSON line per run
  (alpha, scale, trace, floor, score, violation rate, cost).
- ``--bundled A,B``: each bundled agent's validation margin over IPA (in cores) and the number of validation cells
  where its violation rate exceeds IPA's by more than half a point, behind the default floor or ``--floor``.

``python -m experiments.guard_floor --pipeline video --policy ipa-hold --floors off,backlog,drain``
``python -m experiments.guard_floor --bundled sum-qa,audio-qa --floor drain``
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from experiments.agent_grid import ALPHAS, LOAD_SCALES, VIOLATION_MARGIN, spec_with_alpha
from rlscale.errors import RlscaleError
from rlscale.evaluate.sweep import OneLineParser
from rlscale.workload import IPA_PATTERNS


def run_floor(cell: tuple[str, float, float, str, str, str, str | None]) -> dict:
    """One run: (pipeline, alpha, load scale, trace, floor, policy, agent); policies from the registry, as
    `experiments.agent_grid` reaches it (by name: experiments sit below the CLI)."""
    from experiments.agent_grid import FACTORY, OPTIONS
    from rlscale.evaluate.compare import resolve_factory
    from rlscale.sim.runner import run_episode
    from rlscale.spec import load_spec
    from rlscale.workload import load_trace, scale_trace

    pipeline, alpha, scale, trace_name, floor, policy, agent = cell
    spec = spec_with_alpha(load_spec(pipeline), alpha)
    trace = scale_trace(load_trace(trace_name), scale)
    guarded = floor != "off"
    opts = resolve_factory(OPTIONS)(guard=guarded, safety_load=floor if guarded else None, agent=agent)
    record = run_episode(spec, trace, resolve_factory(FACTORY)(policy, spec, trace, opts), seed=0).record
    return {
        "alpha": alpha,
        "load_scale": scale,
        "trace": trace_name,
        "floor": floor,
        "policy": policy,
        "score": record["score"],
        "sla_violation_rate": record["sla_violation_rate"],
        "cost_cores": record["cost_cores"],
    }


def bundled_validation(pipeline: str, floor: str | None) -> dict:
    """A bundled agent's validation margin over IPA and its violation excesses, behind ``floor``."""
    from agents.actor import load_actor
    from agents.inference import PPOPolicy, bundled_agent
    from agents.priors import validation_reference
    from agents.train_config import TrainConfig
    from agents.training import sources
    from agents.validation import gap_vs_ipa, run_cells
    from ilp_baseline.safety import DEFAULT_LOAD, SafetyLayer
    from rlscale.control import Controller
    from rlscale.spec import load_spec
    from rlscale.workload import source_validation_windows

    actor = load_actor(bundled_agent(pipeline))
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in actor.training.items() if k in names}
    cfg = TrainConfig(**settings)
    spec = load_spec(cfg.pipeline)
    windows = source_validation_windows(sources(cfg), cfg.validation_windows, cfg.window_s)
    cells, ipa = validation_reference(cfg, spec, windows, {})
    load = floor or DEFAULT_LOAD
    records = run_cells(cells, lambda s: Controller(PPOPolicy(s, actor), SafetyLayer(s, load=load)))
    excess = [a["sla_violation_rate"] - b["sla_violation_rate"] for a, b in zip(records, ipa, strict=True)]
    return {
        "pipeline": pipeline,
        "floor": load,
        "recorded_margin": actor.training.get("validation_score"),
        "margin": round(gap_vs_ipa(cells, records, ipa), 4),
        "cells": len(cells),
        "cells_over_violation_margin": int(sum(e > VIOLATION_MARGIN for e in excess)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m experiments.guard_floor", description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="video", help="bundled pipeline (default video)")
    parser.add_argument("--policy", default="ipa-hold", help="policy behind each floor (default ipa-hold)")
    parser.add_argument("--agent", help="for ppo: an actor file (default: the bundled agent)")
    parser.add_argument("--floors", default="off,backlog,drain", help="floors to compare (off: no guard)")
    parser.add_argument("--bundled", help="instead: bundled agents' validation behind --floor (comma-separated)")
    parser.add_argument("--floor", help="with --bundled: the floor (default: the safety layer's default)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)
    try:
        if args.bundled:
            for name in args.bundled.split(","):
                print(json.dumps(bundled_validation(name, args.floor)), flush=True)
            return 0
        floors = args.floors.split(",")
        cells = [
            (args.pipeline, a, x, t, f, args.policy, args.agent)
            for a in ALPHAS
            for x in LOAD_SCALES
            for t in IPA_PATTERNS
            for f in floors
        ]
        with ProcessPoolExecutor(max(1, args.workers)) as pool:
            for record in pool.map(run_floor, cells):
                print(json.dumps(record), flush=True)
    except RlscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
