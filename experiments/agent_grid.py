"""The agent's grid (issue 15): every weight setting x load scale x window x policy, and the trade-off figure.

For a pipeline, each ``alpha`` in ``--alphas`` (beta and sla_penalty as in the spec), each load scale in
``--load-scales`` (the window's per-second counts multiplied, `rlscale.workload.scale_trace`), each window of
``--traces`` (IPA's four by default) and each policy: one simulator run through the policy registry, exactly as
``rlscale compare --set objective.alpha=A --load-scale X`` runs it. One agent serves every setting (``ppo`` reads
the weights from the spec it is given; no retraining).

Writes to ``--out``:

- ``records.jsonl`` / ``grid.csv``: one row per run (alpha, load_scale, trace, policy, score, violation rate,
  accuracy, cost);
- ``grid.md``: per (alpha, load scale), ``ppo``'s score against each baseline window by window, and the counts the
  issue's criteria ask for (windows where ppo beats ``ipa``, violations within 0.5 point of ``ipa``'s, cells above
  ``ipa-tuned`` and ``ipa-hold``);
- ``tradeoff.png``: accuracy against cost, one point per weight setting and policy (mean over the windows at load
  scale 1), points of one policy joined in the order of alpha.

``python -m experiments.agent_grid --pipeline video --agent runs/R/actor.npz --out experiments/results/grid-video``
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlscale.errors import RlscaleError
from rlscale.evaluate.compare import resolve_factory
from rlscale.evaluate.sweep import OneLineParser, add_executor_flags, make_executor, run_sweep
from rlscale.paths import atomic_path, atomic_write_text, output_folder
from rlscale.sim.runner import run_episode
from rlscale.spec import PipelineSpec, load_spec
from rlscale.workload import IPA_PATTERNS, load_trace, scale_trace

log = logging.getLogger(__name__)

FACTORY = "rlscale.policies.registry:make_policy"
OPTIONS = "rlscale.policies.registry:PolicyOptions"
POLICIES = ("ppo", "ipa", "ipa-tuned", "ipa-hold", "oracle")
ALPHAS = (2.0, 10.0, 30.0, 100.0)
LOAD_SCALES = (1.0, 2.0)
VIOLATION_MARGIN = 0.005
"""``ppo`` counts as within the SLA criterion when its violation rate is at most ``ipa``'s plus this."""


@dataclass(frozen=True)
class Cell:
    """One run of the grid (picklable)."""

    pipeline: str
    alpha: float
    load_scale: float
    trace: str
    policy: str
    agent: str | None = None
    seed: int = 0


def spec_with_alpha(spec: PipelineSpec, alpha: float) -> PipelineSpec:
    """``spec`` with objective.alpha replaced (beta, gamma and sla_penalty kept)."""
    return dataclasses.replace(spec, objective=dataclasses.replace(spec.objective, alpha=float(alpha)))


def run_cell(cell: Cell) -> dict[str, Any]:
    """One run's record (module-level: a worker process imports it)."""
    spec = spec_with_alpha(load_spec(cell.pipeline), cell.alpha)
    trace = scale_trace(load_trace(cell.trace), cell.load_scale)
    options = resolve_factory(OPTIONS)(agent=cell.agent) if cell.policy.startswith("ppo") and cell.agent else None
    policy = resolve_factory(FACTORY)(cell.policy, spec, trace, options)
    record = run_episode(spec, trace, policy, seed=cell.seed).record
    keep = ("score", "sla_violation_rate", "accuracy", "cost_cores", "reconfigurations")
    return {
        "alpha": cell.alpha,
        "load_scale": cell.load_scale,
        "trace": cell.trace,
        "policy": cell.policy,
        **{k: record[k] for k in keep if k in record},
    }


def run_grid(
    pipeline: str,
    *,
    agent: str | None = None,
    alphas: Sequence[float] = ALPHAS,
    load_scales: Sequence[float] = LOAD_SCALES,
    traces: Sequence[str] = IPA_PATTERNS,
    policies: Sequence[str] = POLICIES,
    executor: str = "serial",
    workers: int | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Every cell's record, in grid order."""
    load_spec(pipeline)  # a bad pipeline fails before any run
    for name in traces:
        load_trace(name)
    cells = [Cell(pipeline, a, x, t, p, agent) for a in alphas for x in load_scales for t in traces for p in policies]
    return run_sweep(
        make_executor(executor, workers),
        run_cell,
        cells,
        progress=progress,
        what="grid runs",
        describe=lambda c: f"alpha={c.alpha:g} x{c.load_scale:g} {c.trace} {c.policy}",
    )


def _index(records: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    return {(r["alpha"], r["load_scale"], r["trace"], r["policy"]): r for r in records}


def criteria(records: list[dict[str, Any]], agent: str = "ppo") -> dict[str, Any]:
    """The issue's criteria per (alpha, load scale) and over all cells.

    Returns:
        ``settings``: per (alpha, scale): ``wins_vs_ipa`` (windows where the agent's score is above ``ipa``'s),
        ``violations_ok`` (windows where its violation rate is at most ipa's + 0.5 point), ``windows``;
        ``cells_above``: per other baseline, the fraction of all cells where the agent scores above it;
        ``passes``: at least 3 of 4 (or 3/4 of the) windows won at every setting with violations ok everywhere,
        and above ``ipa-tuned`` and ``ipa-hold`` on at least half the cells (where they ran).
    """
    by = _index(records)
    alphas = sorted({r["alpha"] for r in records})
    scales = sorted({r["load_scale"] for r in records})
    traces = list(dict.fromkeys(r["trace"] for r in records))
    policies = list(dict.fromkeys(r["policy"] for r in records))
    settings = []
    ok = True
    for a in alphas:
        for x in scales:
            wins = sum(by[a, x, t, agent]["score"] > by[a, x, t, "ipa"]["score"] for t in traces)
            viol = sum(
                by[a, x, t, agent]["sla_violation_rate"] <= by[a, x, t, "ipa"]["sla_violation_rate"] + VIOLATION_MARGIN
                for t in traces
            )
            settings.append(
                {"alpha": a, "load_scale": x, "wins_vs_ipa": wins, "violations_ok": viol, "windows": len(traces)}
            )
            ok &= wins * 4 >= 3 * len(traces) and viol == len(traces)
    above = {}
    for base in policies:
        if base == agent:
            continue
        n = [by[a, x, t, agent]["score"] > by[a, x, t, base]["score"] for a in alphas for x in scales for t in traces]
        above[base] = float(np.mean(n))
    for base in ("ipa-tuned", "ipa-hold"):
        if base in above:
            ok &= above[base] >= 0.5
    return {"settings": settings, "cells_above": above, "passes": bool(ok)}


def markdown(records: list[dict[str, Any]], agent: str = "ppo") -> str:
    """The grid as markdown: per (alpha, scale), each policy's score per window, then the criteria."""
    by = _index(records)
    alphas = sorted({r["alpha"] for r in records})
    scales = sorted({r["load_scale"] for r in records})
    traces = list(dict.fromkeys(r["trace"] for r in records))
    policies = list(dict.fromkeys(r["policy"] for r in records))
    out = io.StringIO()
    out.write("| alpha | load | policy | " + " | ".join(traces) + " | mean violations | mean accuracy | mean cores |\n")
    out.write("|---" * (6 + len(traces)) + "|\n")
    for a in alphas:
        for x in scales:
            for p in policies:
                rows = [by[a, x, t, p] for t in traces]
                cells = [f"{r['score']:.2f}" for r in rows]
                viol = 100 * np.mean([r["sla_violation_rate"] for r in rows])
                acc, cores = np.mean([r["accuracy"] for r in rows]), np.mean([r["cost_cores"] for r in rows])
                out.write(
                    f"| {a:g} | x{x:g} | {p} | " + " | ".join(cells) + f" | {viol:.2f}% | {acc:.4f} | {cores:.2f} |\n"
                )
    if agent not in policies or "ipa" not in policies:
        return out.getvalue()
    c = criteria(records, agent)
    out.write(f"\n{agent} against ipa, window by window (score above; violations at most ipa's + 0.5 point):\n\n")
    out.write("| alpha | load | windows won | violations ok |\n|---|---|---|---|\n")
    for s in c["settings"]:
        out.write(
            f"| {s['alpha']:g} | x{s['load_scale']:g} | {s['wins_vs_ipa']}/{s['windows']} "
            f"| {s['violations_ok']}/{s['windows']} |\n"
        )
    out.write("\nShare of all cells where " + agent + " scores above each baseline: ")
    out.write(", ".join(f"{b} {100 * v:.0f}%" for b, v in c["cells_above"].items()))
    out.write(f"\n\nAll of the issue's criteria met: {'yes' if c['passes'] else 'no'}\n")
    return out.getvalue()


def plot_tradeoff(records: list[dict[str, Any]], path: Path, pipeline: str, load_scale: float = 1.0) -> Path:
    """Accuracy against cost, one point per (policy, alpha) at ``load_scale`` (means over the windows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if r["load_scale"] == load_scale]
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    alphas = sorted({r["alpha"] for r in rows})
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for p in policies:
        xs, ys = [], []
        for a in alphas:
            sel = [r for r in rows if r["policy"] == p and r["alpha"] == a]
            xs.append(float(np.mean([r["cost_cores"] for r in sel])))
            ys.append(float(np.mean([r["accuracy"] for r in sel])))
        ax.plot(xs, ys, marker="o", label=p)
        for a, x, y in zip(alphas, xs, ys, strict=True):
            ax.annotate(f"{a:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xlabel("cost (cores, time-averaged)")
    ax.set_ylabel("accuracy of served requests")
    ax.set_title(f"{pipeline}: accuracy against cost per alpha (labels)\nmean over the windows, load x{load_scale:g}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def write_outputs(records: list[dict[str, Any]], out: Path, pipeline: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "records.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(out / "grid.csv", buf.getvalue())
    atomic_write_text(out / "grid.md", markdown(records))
    paths = [out / "records.jsonl", out / "grid.csv", out / "grid.md"]
    if 1.0 in {r["load_scale"] for r in records}:
        paths.append(plot_tradeoff(records, out / "tradeoff.png", pipeline))
    return paths


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or not all(np.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m experiments.agent_grid", description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", default="video", help="bundled name or spec path (default video)")
    p.add_argument("--agent", help="the agent for ppo (an actor .npz; default: the bundled one)")
    p.add_argument("--alphas", type=_floats, default=list(ALPHAS), help="alpha values (default 2,10,30,100)")
    p.add_argument("--load-scales", type=_floats, default=list(LOAD_SCALES), help="load scales (default 1,2)")
    p.add_argument("--traces", default=",".join(IPA_PATTERNS), help="windows (default IPA's four)")
    p.add_argument("--policies", default=",".join(POLICIES), help=f"policies (default {','.join(POLICIES)})")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    add_executor_flags(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        out = output_folder(args.out)
        records = run_grid(
            args.pipeline,
            agent=args.agent,
            alphas=args.alphas,
            load_scales=args.load_scales,
            traces=[t for t in args.traces.split(",") if t],
            policies=[x for x in args.policies.split(",") if x],
            executor=args.executor,
            workers=args.workers,
            progress=True,
        )
        paths = write_outputs(records, out, args.pipeline)
    except RlscaleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no grid written", file=sys.stderr)
        return 130
    print(markdown(records))
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
