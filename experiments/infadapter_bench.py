"""InfAdapter's benchmark in rlscale (issue 16): every policy on InfAdapter's 21-minute window, beside its headline.

The pipeline is the bundled ``infadapter`` (InfAdapter's ResNets as a mix of one-replica pools, SLO 750 ms,
20 cores); the trace its evaluation window (undamped, 27-274 rps). Policies: ``infadapter``, ``ms-plus``, ``ipa``,
``ipa-hold``, ``ppo`` (the bundled agent, or ``--agent``) and InfAdapter's VPA baseline once per ResNet (``vpa``
with ``--vpa-updater infadapter --vpa-variant resnetNN --vpa-cores 20``: the recommender in "Off" mode applied by
InfAdapter's adapter, as its ``vpa-NN`` runs do), each over ``--seeds`` seeds (Poisson arrivals when more than one,
as ``rlscale compare`` does).

Writes to ``--out``: ``records.jsonl`` (one run per line), ``results.md`` (means per policy; InfAdapter's
reductions of violations and cost against each VPA run, measured in the same run, beside the paper's "up to 65% fewer
SLO violations and 33% lower cost than VPA").

``python -m experiments.infadapter_bench --out experiments/results/infadapter --seeds 3``
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from experiments.agent_grid import FACTORY, OPTIONS
from rlscale.errors import RlscaleError
from rlscale.evaluate.compare import resolve_factory
from rlscale.evaluate.sweep import OneLineParser
from rlscale.paths import atomic_write_text, output_folder

PIPELINE = "infadapter"
TRACE = "infadapter"
POLICIES = ("infadapter", "ms-plus", "ipa", "ipa-hold", "ppo")
VPA_VARIANTS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
HEADLINE = {"violations": 0.65, "cost": 0.33}
"""InfAdapter's abstract: up to 65% fewer SLO violations and 33% lower cost than the Kubernetes VPA."""
KEYS = ("score", "sla_violation_rate", "accuracy", "cost_cores", "reconfigurations", "mixed_share")


def label(policy: str, variant: str | None) -> str:
    return f"vpa-{variant.removeprefix('resnet')}" if variant else policy


def run_one(cell: tuple[str, str | None, int, str | None]) -> dict[str, Any]:
    """One run: (policy, VPA variant or None, seed, agent)."""
    from rlscale.sim.runner import run_episode
    from rlscale.spec import load_spec
    from rlscale.workload import load_trace

    policy, variant, seed, agent = cell
    spec, trace = load_spec(PIPELINE), load_trace(TRACE)
    options: dict[str, Any] = {}
    if variant:
        options = {"vpa_updater": "infadapter", "vpa_variant": (variant,), "vpa_cores": (20,)}
    if policy.startswith("ppo") and agent:
        options["agent"] = agent
    controller = resolve_factory(FACTORY)(policy, spec, trace, resolve_factory(OPTIONS)(**options))
    arrivals = "poisson" if seed > 0 else "even"
    record = run_episode(spec, trace, controller, seed=seed, arrivals=arrivals).record
    return {"policy": label(policy, variant), "seed": seed, **{k: record.get(k) for k in KEYS}}


def summary(records: list[dict[str, Any]]) -> str:
    """The means per policy and InfAdapter's reductions against each VPA run, as markdown."""
    names = list(dict.fromkeys(r["policy"] for r in records))
    mean = {
        n: {k: float(np.mean([r[k] for r in records if r["policy"] == n and r[k] is not None])) for k in KEYS}
        for n in names
    }
    seeds = len({r["seed"] for r in records})
    out = [f"# InfAdapter's benchmark ({PIPELINE} pipeline, {TRACE} window, {seeds} seed(s), means)", ""]
    out.append("| policy | score | violation rate | accuracy | cost (cores) | reconfigurations | mixed share |")
    out.append("|---|---|---|---|---|---|---|")
    for n in names:
        m = mean[n]
        out.append(
            f"| {n} | {m['score']:.4f} | {100 * m['sla_violation_rate']:.2f}% | {m['accuracy']:.4f} | "
            f"{m['cost_cores']:.2f} | {m['reconfigurations']:.1f} | {m['mixed_share']:.2f} |"
        )
    if "infadapter" in mean:
        inf = mean["infadapter"]
        out += ["", "InfAdapter against each VPA run, measured in this run (paper: up to 65% and 33%):", ""]
        out.append("| VPA run | fewer violations | lower cost |")
        out.append("|---|---|---|")
        for n in names:
            if n.startswith("vpa-"):
                v = mean[n]
                fewer = 1 - inf["sla_violation_rate"] / v["sla_violation_rate"] if v["sla_violation_rate"] else 0.0
                cheaper = 1 - inf["cost_cores"] / v["cost_cores"]
                out.append(f"| {n} | {100 * fewer:.0f}% | {100 * cheaper:.0f}% |")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m experiments.infadapter_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/infadapter-bench", help="output folder (default out/infadapter-bench)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per policy (default 3)")
    parser.add_argument("--agent", help="ppo's agent (default: the bundled one)")
    parser.add_argument("--policies", default=",".join(POLICIES), help="policies besides the VPA runs")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)
    try:
        if not 1 <= args.seeds <= 100:
            raise RlscaleError(f"--seeds must be 1..100, got {args.seeds}")
        out = output_folder(Path(args.out))
        policies = [p for p in args.policies.split(",") if p]
        cells = [(p, None, s, args.agent) for p in policies for s in range(args.seeds)]
        cells += [("vpa", v, s, None) for v in VPA_VARIANTS for s in range(args.seeds)]
        records = []
        with ProcessPoolExecutor(max(1, args.workers)) as pool, open(out / "records.jsonl", "w") as fh:
            for record in pool.map(run_one, cells):
                records.append(record)
                fh.write(json.dumps(record) + "\n")
                fh.flush()
        atomic_write_text(out / "results.md", summary(records))
        print(summary(records))
    except RlscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
