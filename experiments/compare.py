"""``rlscale compare``: every pipeline x trace x policy x seed on the simulator, one table and the plots.

Each run goes through the same code path as ``rlscale simulate`` (`experiments.registry.make_policy` and
`rlscale.sim.runner.run_episode`). Writes to ``--out``:

- ``results.csv``: one row per run (every field of the summary record but the per-stage list);
- ``results.md``: one row per pipeline x trace x policy, means over seeds (with the spread of the score);
- ``accuracy_vs_cost.png`` (one panel per trace, one point per policy), ``violations.png`` (violation rate per
  policy and trace) and ``timeline-{trace}-{policy}.png`` for the first seed.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experiments.plots import plot_timeline
from experiments.registry import PolicyOptions, make_policy
from rlscale.errors import RlscaleError
from rlscale.sim.runner import RunResult, run_episode
from rlscale.spec import PipelineSpec, load_spec
from rlscale.workload import load_trace

log = logging.getLogger(__name__)


@dataclass
class Comparison:
    """All runs of one comparison and where its files went."""

    spec: PipelineSpec
    records: list[dict[str, Any]] = field(default_factory=list)
    results: dict[tuple[str, str, int], RunResult] = field(default_factory=dict, repr=False)
    files: list[Path] = field(default_factory=list)

    def mean(self, trace: str, policy: str, key: str) -> float:
        vals = [r[key] for r in self.records if r["trace"] == trace and r["policy"] == policy]
        return float(np.mean(vals)) if vals else math.nan

    def std(self, trace: str, policy: str, key: str) -> float:
        vals = [r[key] for r in self.records if r["trace"] == trace and r["policy"] == policy]
        return float(np.std(vals)) if len(vals) > 1 else 0.0


def run_comparison(
    pipeline: str,
    traces: Sequence[str],
    policies: Sequence[str],
    *,
    seeds: int = 1,
    options: PolicyOptions | None = None,
    arrivals: str | None = None,
    out: Path | None = None,
    timelines: bool = True,
    progress: bool = True,
    keep_results: bool = False,
) -> Comparison:
    """Run every combination and write the outputs.

    Args:
        pipeline: bundled name or spec path.
        traces: bundled trace names or CSV paths.
        policies: policy names (see ``rlscale simulate --help``).
        seeds: seeds 0..seeds-1. With one seed arrivals are spread evenly (IPA's generator, deterministic);
            with more, Poisson arrivals make the seeds differ (unless ``arrivals`` says otherwise).
        options: solver / predictor / headroom flags for the planner policies.
        arrivals: ``even`` or ``poisson``; None picks as described under ``seeds``.
        out: output folder (None writes nothing).
        timelines: draw a timeline per trace x policy (first seed).
        progress: show a progress bar.
        keep_results: keep every RunResult in memory (for analysis; costs memory).
    """
    if seeds < 1:
        raise RlscaleError(f"--seeds must be >= 1, got {seeds}")
    if not traces or not policies:
        raise RlscaleError("need at least one trace and one policy")
    spec = load_spec(pipeline)
    loaded = {t: load_trace(t) for t in traces}  # fail on a bad trace before any run
    for p in policies:  # and on a bad policy name
        make_policy(p, spec, next(iter(loaded.values())), options)
    mode = arrivals or ("even" if seeds == 1 else "poisson")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    comp = Comparison(spec=spec)
    runs = [(t, p, s) for t in traces for p in policies for s in range(seeds)]

    def execute(t: str, p: str, s: int) -> None:
        trace = loaded[t]
        result = run_episode(spec, trace, make_policy(p, spec, trace, options), seed=s, arrivals=mode)
        record = {k: v for k, v in result.record.items() if k != "stages"}
        record["trace"] = t
        record["arrivals"] = mode
        comp.records.append(record)
        if keep_results:
            comp.results[(t, p, s)] = result
        if out is not None and timelines and s == 0:
            name = Path(t).stem if t.endswith(".csv") else t
            comp.files.append(plot_timeline(spec, result, out / f"timeline-{name}-{p}.png"))

    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
        ) as bar:
            task = bar.add_task("comparing", total=len(runs))
            for t, p, s in runs:
                bar.update(task, description=f"{spec.name} / {t} / {p} / seed {s}")
                execute(t, p, s)
                bar.advance(task)
    else:
        for t, p, s in runs:
            execute(t, p, s)
    if out is not None:
        comp.files += write_outputs(comp, list(traces), list(policies), out)
    return comp


def write_outputs(comp: Comparison, traces: list[str], policies: list[str], out: Path) -> list[Path]:
    files = [out / "results.csv", out / "results.md"]
    keys = list(comp.records[0])
    with open(files[0], "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(comp.records)
    files[1].write_text(markdown_table(comp, traces, policies))
    files.append(plot_accuracy_vs_cost(comp, traces, policies, out / "accuracy_vs_cost.png"))
    files.append(plot_violations(comp, traces, policies, out / "violations.png"))
    return files


def markdown_table(comp: Comparison, traces: list[str], policies: list[str]) -> str:
    seeds = len({r["seed"] for r in comp.records})
    lines = [
        f"# {comp.spec.name}: {', '.join(policies)} ({seeds} seed(s), means)",
        "",
        "| pipeline | trace | policy | requests | violations (late+dropped) | violation rate | accuracy | "
        "cost (cores) | objective | score (± sd) | p99 (s) | reconfigurations | decision p99 (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in traces:
        for p in policies:
            m = lambda k, t=t, p=p: comp.mean(t, p, k)  # noqa: E731
            lines.append(
                f"| {comp.spec.name} | {t} | {p} | {m('requests'):.0f} | {m('late') + m('dropped'):.1f} | "
                f"{m('sla_violation_rate'):.2%} | {m('accuracy'):.4f} | {m('cost_cores'):.2f} | "
                f"{m('objective'):.3f} | {m('score'):.3f} ± {comp.std(t, p, 'score'):.3f} | "
                f"{m('p99_latency_s'):.2f} | {m('reconfigurations'):.1f} | {m('decision_ms_p99'):.2f} |"
            )
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_cost(comp: Comparison, traces: list[str], policies: list[str], path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(traces), figsize=(4.2 * len(traces), 3.8), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, t in zip(axes[0], traces, strict=True):
        for i, p in enumerate(policies):
            ax.scatter(comp.mean(t, p, "cost_cores"), comp.mean(t, p, "accuracy"), color=colours(i % 10), label=p)
            ax.annotate(p, (comp.mean(t, p, "cost_cores"), comp.mean(t, p, "accuracy")), fontsize=7)
        ax.set_title(Path(t).stem if t.endswith(".csv") else t, fontsize=9)
        ax.set_xlabel("cost (cores, time-averaged)")
        ax.set_ylabel(f"accuracy ({comp.spec.objective.accuracy_method})")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{comp.spec.name}: accuracy against cost (up and left is better)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_violations(comp: Comparison, traces: list[str], policies: list[str], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(policies) * len(traces) / 2), 4))
    width = 0.8 / len(traces)
    x = np.arange(len(policies))
    for j, t in enumerate(traces):
        vals = [100 * comp.mean(t, p, "sla_violation_rate") for p in policies]
        ax.bar(x + j * width, vals, width, label=Path(t).stem if t.endswith(".csv") else t)
    ax.set_xticks(x + width * (len(traces) - 1) / 2)
    ax.set_xticklabels(policies, rotation=20, fontsize=8)
    ax.set_ylabel("SLA violations (% of requests)")
    ax.set_title(f"{comp.spec.name}: late + dropped requests", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
